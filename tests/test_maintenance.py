"""`retail-lake vacuum`: the files no version needs are deleted, the current rows stay."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake.lake import Lake
from retail_lake.registry import CONTRACTS
from retail_lake.runner import job_runs

STORES_SCHEMA = (
    "store int, store_type string, assortment string, competition_distance_m double, "
    "competition_open_since date, promo2 boolean, promo2_since date, "
    "promo2_months array<int>, _source_file string, _line_number bigint"
)
CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


def _stores(spark, store_type: str):
    rows = [(i, store_type if i == 1 else "a", "a", 100.0, None, False, None, [], "s.csv", i)
            for i in range(1, 4)]  # fmt: skip
    return spark.createDataFrame(rows, STORES_SCHEMA)


def _files_on_disk(table: Path) -> set[str]:
    return {
        str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts
    }


@pytest.mark.slow  # four CLI runs: the full suite only (inner loop under 5 min)
def test_vacuum_deletes_what_no_version_needs_and_keeps_the_rows(spark, cfg, run_cli):
    lake = Lake(spark, cfg.root)
    contract = CONTRACTS["silver.stores"]
    lake.write(_stores(spark, "a"), contract, "run-1")
    lake.write(_stores(spark, "b"), contract, "run-2")  # store 1 changed: a file replaced
    table = Path(cfg.root) / "silver" / "stores"
    before = _files_on_disk(table)
    assert any(f.startswith("_change_data") for f in before)  # the feed's images
    current = sorted(tuple(r) for r in lake.read("silver.stores").drop("_run_id").collect())
    common = ("--profile", "test", "--root", cfg.root, "--table", "silver.stores")

    # Each table's own retention (30 days): nothing is old enough.
    code, out, err = run_cli("vacuum", *common)
    assert code == 0, err[-2000:]
    assert out.splitlines()[2].split() == ["silver.stores", "0"]
    # A dry run counts and deletes nothing.
    code, out, err = run_cli("vacuum", *common, "--retain-hours", "0", "--dry-run")
    assert code == 0, err[-2000:]
    unreferenced = int(out.splitlines()[2].split()[1])
    assert unreferenced > 0 and _files_on_disk(table) == before

    code, out, err = run_cli("vacuum", *common, "--retain-hours", "0")
    assert code == 0, err[-2000:]
    assert out.splitlines()[2].split() == ["silver.stores", str(unreferenced)]
    kept = _files_on_disk(table)
    referenced = {
        str(Path(f.removeprefix("file:")).relative_to(table))
        for f in spark.read.format("delta").load(str(table)).inputFiles()
    }
    assert kept == referenced  # old data files and change-feed files gone
    assert len(before) - len(kept) == unreferenced
    assert sorted(tuple(r) for r in lake.read("silver.stores").drop("_run_id").collect()) == (
        current
    )
    assert spark.conf.get(CHECK, "true") == "true"  # Delta's safety check is back on
    runs = job_runs(spark, cfg).where(F.col("job") == "vacuum").collect()
    assert [r["status"] for r in runs] == ["succeeded"] * 3

    code, _, err = run_cli("vacuum", "--profile", "test", "--root", cfg.root, "--table", "x.y")
    assert code == 1 and "vacuum: no such table" in err and "x.y" in err
