"""Gold tables read by other engines: delta-rs (`deltalake`, what pandas and DuckDB users
go through) and polars get the rows Spark gets, and delta-rs reads gold's change feed.

Gold is created without column mapping (polars refuses it; delta-rs reads no change feed of
it), deletion vectors or v2 checkpoints (`contracts.LAYER_PROPERTIES`).
"""

from __future__ import annotations

import polars as pl
import pytest
from deltalake import DeltaTable, QueryBuilder
from pyspark.sql import functions as F

from retail_lake.lake import Lake
from retail_lake.registry import CONTRACTS

GOLD = [c.name for c in CONTRACTS if c.layer == "gold"]


def _frame(table) -> pl.DataFrame:
    """A table (Arrow, or anything polars takes) as a polars frame comparable across
    readers: columns in name order, timestamps in UTC microseconds, rows sorted."""
    df = pl.DataFrame(table)
    df = df.select(sorted(df.columns))
    times = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Datetime):
            column = pl.col(name).dt.cast_time_unit("us")
            utc = (
                column.dt.convert_time_zone("UTC")
                if dtype.time_zone
                else column.dt.replace_time_zone("UTC")
            )
            times.append(utc.alias(name))
    df = df.with_columns(times)
    nested = (pl.List, pl.Struct, pl.Array)
    return df.sort([n for n, t in df.schema.items() if not isinstance(t, nested)])


def _same(got: pl.DataFrame, expected: pl.DataFrame) -> bool:
    return got.schema == expected.schema and got.equals(expected)


@pytest.mark.pipeline
def test_every_gold_table_reads_the_same_in_delta_rs_and_polars_as_in_spark(spark, demo_lake):
    lake = Lake(spark, demo_lake.root)
    present = [t for t in GOLD if lake.exists(t)]
    # The demo pipeline writes every gold table but the A/B evaluation's (it needs
    # purchases after the published snapshot).
    assert set(GOLD) - set(present) == {"gold.recommendation_ab_results"}
    for table in present:
        path = lake.location(table)
        expected = _frame(lake.read(table).toArrow())
        assert expected.height, table
        rs = DeltaTable(path)
        protocol = rs.protocol()
        assert protocol.min_reader_version == 1, (table, protocol)
        assert "delta.columnMapping.mode" not in rs.metadata().configuration, table
        # delta-rs's own SQL engine (DataFusion), every table
        query = QueryBuilder().register("t", rs).execute("SELECT * FROM t").read_all()
        assert _same(_frame(query), expected), table
        # its pyarrow reader (`to_pandas`): with pyarrow 14, unpartitioned tables only
        if not rs.metadata().partition_columns:
            assert _same(_frame(rs.to_pyarrow_table()), expected), table
        assert _same(_frame(pl.read_delta(path)), expected), table


@pytest.mark.pipeline
def test_delta_rs_reads_a_gold_change_feed_as_spark_does(spark, demo_lake):
    lake = Lake(spark, demo_lake.root)
    table = "gold.interactions"
    spark_changes = (
        lake.changes(table, 0)
        .groupBy("_change_type", "_commit_version")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    expected = sorted((r["_change_type"], r["_commit_version"], r["n"]) for r in spark_changes)
    assert expected
    feed = DeltaTable(lake.location(table)).load_cdf(starting_version=0).read_all()
    got = sorted(pl.DataFrame(feed).group_by("_change_type", "_commit_version").len().rows())
    assert got == expected


@pytest.mark.slow  # Delta rewrites the table's files (15 s): outside the inner loop
def test_a_gold_table_an_older_release_made_is_opened_to_polars_by_one_statement(
    spark, root, run_cli
):
    # Before this release gold was column-mapped; the README's one statement upgrades it.
    path = root / "gold" / "legacy"
    spark.sql(
        f"CREATE TABLE delta.`{path}` (store INT NOT NULL, sales DOUBLE) USING DELTA "
        "TBLPROPERTIES ('delta.columnMapping.mode' = 'name', 'delta.minReaderVersion' = '2', "
        "'delta.minWriterVersion' = '5', 'delta.enableChangeDataFeed' = 'true')"
    )
    spark.sql(f"INSERT INTO delta.`{path}` VALUES (1, 10.5), (2, 20.0)")
    with pytest.raises(Exception, match="(?i)column ?mapping"):
        pl.read_delta(str(path))
    code, _, err = run_cli(
        "sql",
        "--allow-writes",
        "ALTER TABLE gold.legacy DROP FEATURE columnMapping",
        "--root",
        str(root),
        "--profile",
        "test",
    )
    assert code == 0, err
    got = pl.read_delta(str(path)).sort("store")
    assert got.rows() == [(1, 10.5), (2, 20.0)]
    assert DeltaTable(str(path)).protocol().min_reader_version == 1
