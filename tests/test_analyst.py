"""`retail-lake sql` is read-only unless --allow-writes is given; an allowed write is a
recorded run whose commit carries its run id (issue 17)."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from retail_lake import cli
from retail_lake.analyst import Statement, WriteRefusedError, classify, run_sql, tables_named
from retail_lake.lake import Lake
from retail_lake.registry import run_job
from retail_lake.runner import JobResult, Output, job_runs

from .test_runner import GOOD, stores

READS = {
    "SELECT 1": "Project",
    "WITH s AS (SELECT * FROM silver.stores) SELECT count(*) FROM s": "UnresolvedWith",
    "SHOW TABLES IN silver": "ShowTables",
    "DESCRIBE TABLE silver.stores": "DescribeRelation",
    "DESCRIBE HISTORY silver.stores": "DescribeDeltaHistory",
    "DESCRIBE DETAIL silver.stores": "DescribeDeltaDetailCommand",
    "EXPLAIN DELETE FROM silver.stores WHERE store = 1": "ExplainCommand",
}
WRITES = {
    "DELETE FROM silver.stores WHERE store = 1": "DeleteFromTable",
    "UPDATE silver.stores SET assortment = 'x'": "UpdateTable",
    "INSERT INTO silver.stores SELECT * FROM silver.stores": "InsertIntoStatement",
    "MERGE INTO silver.stores t USING silver.stores s ON t.store = s.store "
    "WHEN MATCHED THEN DELETE": "MergeIntoTable",
    "DROP TABLE silver.stores": "DropTable",
    "CREATE TABLE x USING delta AS SELECT 1 AS a": "CreateTableAsSelect",
    "ALTER TABLE silver.stores ADD COLUMNS (x int)": "AddColumns",
    "TRUNCATE TABLE silver.stores": "TruncateTable",
    "VACUUM silver.stores": "VacuumTableCommand",
    "OPTIMIZE silver.stores": "OptimizeTableCommand",
    "SET spark.sql.shuffle.partitions = 1": "SetCommand",
    # Writes under a wrapper that is not a command itself: the whole plan is looked at.
    "WITH s AS (SELECT 1 AS store) DELETE FROM silver.stores WHERE store IN (SELECT store "
    "FROM s)": "DeleteFromTable",
    "WITH s AS (SELECT * FROM silver.stores) INSERT INTO silver.stores SELECT * FROM s": (
        "InsertIntoStatement"
    ),
    "FROM silver.stores INSERT INTO silver.stores SELECT * INSERT INTO ops.x SELECT *": (
        "InsertIntoStatement"
    ),
}


NAMED = {
    "SELECT 1": set(),
    "SELECT * FROM silver.stores s JOIN gold.store_features f USING (store)": {
        "silver.stores",
        "gold.store_features",
    },
    "WITH s AS (SELECT * FROM silver.stores) SELECT count(*) FROM s": {"silver.stores"},
    "SELECT * FROM silver.transactions WHERE customer_token IN "
    "(SELECT customer_token FROM gold.customer_index)": {
        "silver.transactions",
        "gold.customer_index",
    },
    "SELECT (SELECT max(version) FROM ops.job_runs) AS v": {"ops.job_runs"},
    "SHOW TABLES IN ops": {"ops"},
    "DESCRIBE TABLE silver.stores": {"silver.stores"},
    "DESCRIBE HISTORY silver.stores": {"silver.stores"},
    "DESCRIBE DETAIL `silver`.`stores`": {"silver.stores"},
    "SELECT * FROM spark_catalog.gold.recommendations": {"gold.recommendations"},
    "DELETE FROM silver.stores WHERE store IN (SELECT store FROM bronze.rossmann_stores_raw)": {
        "silver.stores",
        "bronze.rossmann_stores_raw",
    },
    # Not the lake's: a path, another database.
    "SELECT * FROM delta.`/tmp/elsewhere`": set(),
    "SELECT * FROM default.t": set(),
}


@pytest.mark.parametrize("query", list(NAMED))
def test_the_tables_a_statement_names_are_read_from_its_plan(spark, query):
    assert tables_named(spark, query) == NAMED[query]


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_sql_registers_only_the_tables_its_statement_names(spark, cfg, run_cli, tmp_path):
    from retail_lake.session import LAYERS

    def load(ctx):
        return JobResult(outputs=[Output("silver.stores", stores(spark, GOOD))])

    run_job(spark, cfg, "load_stores", load)
    lake = Lake(spark, cfg.root)
    # The catalog forgets this lake's tables (external: the data stays), as a new session.
    mine = [t for t in _registered(spark, LAYERS) if _points_into(spark, t, cfg.root)]
    assert {"silver.stores", "ops.job_runs"} <= set(mine)
    for table in mine:
        spark.sql(f"DROP TABLE {table}")
    assert lake.read("silver.stores").count() == 2

    common = ("--profile", "test", "--root", cfg.root)
    code, out, err = run_cli("sql", "SELECT count(*) AS n FROM silver.stores", *common)
    assert code == 0, err[-2000:]
    assert out.splitlines()[2].strip() == "2"
    now = [t for t in _registered(spark, LAYERS) if _points_into(spark, t, cfg.root)]
    assert now == ["silver.stores"]
    # A whole layer when the statement lists it; every layer's database either way.
    code, out, err = run_cli("sql", "SHOW TABLES IN ops", *common)
    assert code == 0, err[-2000:]
    assert {"job_runs", "quality_results"} <= {line.split()[1] for line in out.splitlines()[2:]}
    assert {r[0] for r in spark.sql("SHOW DATABASES").collect()} >= {"silver", "ops"}
    # A table the lake does not have is named as not found, even where the session's catalog
    # still has that name for another lake's table.
    other = str(tmp_path / "other_lake" / "gold" / "recommendations")
    spark.range(3).write.format("delta").save(other)
    spark.sql("CREATE DATABASE IF NOT EXISTS gold")
    spark.sql(f"CREATE TABLE gold.recommendations USING DELTA LOCATION '{other}'")
    code, out, err = run_cli("sql", "SELECT * FROM gold.recommendations", *common)
    assert code == 1 and "`gold`.`recommendations` cannot be found" in err
    assert not spark.catalog.tableExists("gold.recommendations")


def _registered(spark, layers) -> list[str]:
    names = []
    for layer in layers:
        if spark.catalog.databaseExists(layer):
            tables = spark.sql(f"SHOW TABLES IN {layer}").collect()
            names += [f"{layer}.{t['tableName']}" for t in tables if not t["isTemporary"]]
    return sorted(names)


def _points_into(spark, table: str, root: str) -> bool:
    from retail_lake.session import _catalog_location

    layer, name = table.split(".")
    location = _catalog_location(spark, layer, name) or ""
    return location.removeprefix("file:").startswith(str(root))


@pytest.mark.parametrize("query", list(READS))
def test_queries_and_read_only_commands_are_reads(spark, query):
    assert classify(spark, query) == Statement(READS[query], writes=False)


@pytest.mark.parametrize("query", list(WRITES))
def test_statements_that_change_the_lake_are_writes(spark, query):
    assert classify(spark, query) == Statement(WRITES[query], writes=True)


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_a_write_is_refused_without_allow_writes_and_recorded_with_it(spark, cfg, capsys):
    def load(ctx):
        return JobResult(outputs=[Output("silver.stores", stores(spark, GOOD))])

    run_job(spark, cfg, "load_stores", load)
    lake = Lake(spark, cfg.root)
    version = lake.version("silver.stores")
    delete = "DELETE FROM silver.stores WHERE store = 1"

    with pytest.raises(WriteRefusedError, match="DeleteFromTable.*--allow-writes"):
        run_sql(spark, cfg, delete)
    assert lake.version("silver.stores") == version
    assert lake.read("silver.stores").count() == 2
    # The command says so in one line and exits 1, writing nothing.
    common = ["--profile", "test", "--root", cfg.root]
    capsys.readouterr()
    assert cli.main(["sql", delete, *common]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: refused: the statement is a DeleteFromTable") and "\n" not in (
        err.strip()
    )
    assert lake.version("silver.stores") == version
    # A query runs as before.
    assert run_sql(spark, cfg, "SELECT count(*) AS n FROM silver.stores").first()["n"] == 2

    result = run_sql(spark, cfg, delete, allow_writes=True)
    assert result.first()["num_affected_rows"] == 1
    assert [r["store"] for r in lake.read("silver.stores").collect()] == [2]
    runs = job_runs(spark, cfg).where(F.col("job") == "sql").collect()
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    assert runs[0]["parameters"] == {"statement": delete, "kind": "DeleteFromTable"}
    commit = lake.history("silver.stores", 1).first()
    assert commit["version"] == version + 1
    assert (commit["operation"], commit["userMetadata"]) == ("DELETE", runs[0]["run_id"])

    # A statement is recorded without the secret it carries.
    conf = "spark.hadoop.fs.s3a.secret.key"
    try:
        run_sql(spark, cfg, f"SET {conf}=wJalrXUtnFEMI", allow_writes=True)
    finally:
        spark.conf.unset(conf)
    recorded = job_runs(spark, cfg).where(F.col("job") == "sql").orderBy("started_at").collect()
    assert recorded[-1]["parameters"] == {
        "statement": f"SET {conf}=<redacted>",
        "kind": "SetCommand",
    }
