"""`retail-lake vacuum`: the files no version needs are deleted, the current rows stay.
`retail-lake maintain`: compaction and Z-order, a VACUUM that keeps what published models
read (refused, or a snapshot first), and an OPTIMIZE overtaken by a writer made again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake import registry
from retail_lake.lake import Lake, local_frame
from retail_lake.maintenance import optimize_table
from retail_lake.ops import MODEL_METRICS
from retail_lake.registry import CONTRACTS
from retail_lake.runner import JobContext, job_runs
from retail_lake.training.tracking import metric_rows

CLI = str(Path(sys.executable).parent / "retail-lake")

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


# --------------------------------------------------------------------------- maintain
SALES = "silver.store_daily_sales"  # Z-ordered by (store, date)


def _sales(spark, day: int, sales_per_store: int = 100, stores: range = range(1, 7)):
    """One day of silver.store_daily_sales rows for `stores` (lineage columns included)."""
    contract = CONTRACTS[SALES]
    fields = contract.spark_schema().fields
    schema = ", ".join(
        f"`{f.name}` {f.dataType.simpleString()}"
        for f in fields
        if f.name not in ("_run_id", "_content_hash")
    )
    on = date(2015, 1, 1) + timedelta(days=day)
    rows = [
        (s, on, on.isoweekday(), sales_per_store * s, 10 * s, True, False, "0", False, "t.csv", s)
        for s in stores
    ]
    return spark.createDataFrame(rows, schema)


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.drop("_run_id").collect())


def _maintain_run(spark, cfg) -> dict:
    row = job_runs(spark, cfg).where(F.col("job") == "maintain").orderBy("started_at").collect()[-1]
    return row.asDict()


def _publish(lake, model: str, version: str, inputs: dict[str, int]) -> None:
    """The ops.model_metrics rows a training job writes when it registers `version`."""
    rows = metric_rows(f"train-{model}-{version}", model, version, None, {"test": {"rmse": 1.0}},
                       inputs)  # fmt: skip
    df = local_frame(lake.spark, rows, CONTRACTS[MODEL_METRICS].spark_schema())
    lake.write(df, CONTRACTS[MODEL_METRICS], f"train-{model}-{version}", mode="append")


@pytest.mark.slow  # five writes and two CLI runs: the full suite only
def test_maintain_compacts_zorders_and_vacuums_and_records_it(spark, cfg, run_cli):
    lake = Lake(spark, cfg.root)
    contract = CONTRACTS[SALES]
    for day in range(4):
        lake.write(_sales(spark, day), contract, f"day-{day}")
    lake.write(_sales(spark, 0, 200), contract, "fix-day-0")  # replaces a file
    table = Path(cfg.root) / "silver" / "store_daily_sales"
    rows = _rows(lake.read(SALES))
    active = len(lake.read(SALES).inputFiles())
    on_disk = {p: (table / p).stat().st_size for p in _files_on_disk(table)}
    assert active >= 5 and len(on_disk) > active

    common = ("--profile", "test", "--root", cfg.root, "--table", SALES)
    code, out, err = run_cli("maintain", *common, "--retain-hours", "0")
    assert code == 0, err[-2000:]

    assert _rows(lake.read(SALES)) == rows
    referenced = lake.read(SALES).inputFiles()
    assert len(referenced) == 1
    kept = _files_on_disk(table)
    assert kept == {str(Path(f.removeprefix("file:")).relative_to(table)) for f in referenced}
    history = lake.history(SALES, 5).collect()
    optimized = next(h for h in history if h["operation"] == "OPTIMIZE")
    assert json.loads(optimized["operationParameters"]["zOrderBy"]) == ["store", "date"]

    run = _maintain_run(spark, cfg)
    assert run["status"] == "succeeded"
    done = json.loads(run["details"])["tables"][SALES]
    deleted = set(on_disk) - kept
    assert done["optimize"]["files_removed"] == active and done["optimize"]["files_added"] == 1
    assert done["optimize"]["version"] == optimized["version"]
    assert done["vacuum"]["files_deleted"] == len(deleted)
    assert done["vacuum"]["bytes_deleted"] == sum(on_disk[p] for p in deleted)
    assert done["vacuum"]["version"] == lake.version(SALES)
    line = next(x for x in out.splitlines() if x.startswith(SALES))
    assert f"{active} -> 1" in line

    # Nothing written since: no OPTIMIZE, nothing to delete, no commit.
    version = lake.version(SALES)
    code, out, err = run_cli("maintain", *common, "--retain-hours", "0")
    assert code == 0, err[-2000:]
    done = json.loads(_maintain_run(spark, cfg)["details"])["tables"][SALES]
    assert "skipped" in done["optimize"] and done["vacuum"]["files_deleted"] == 0
    assert lake.version(SALES) == version


@pytest.mark.slow  # five CLI runs: the full suite only
def test_maintain_keeps_the_versions_a_published_model_reads(spark, cfg, run_cli):
    lake = Lake(spark, cfg.root)
    contract = CONTRACTS["silver.stores"]
    lake.write(_stores(spark, "a"), contract, "run-1")
    trained_on = lake.version("silver.stores")
    then = _rows(lake.read("silver.stores", trained_on))
    lake.write(_stores(spark, "b"), contract, "run-2")  # store 1 changed: a file replaced
    now = _rows(lake.read("silver.stores"))
    assert then != now
    # An older version of the model read version 0 (an empty table): only the latest counts.
    _publish(lake, "demand_model", "2", {"silver.stores": 0})
    _publish(lake, "demand_model", "3", {"silver.stores": trained_on})
    _publish(lake, "other_model", "1", {"silver.stores": lake.version("silver.stores")})
    table = Path(cfg.root) / "silver" / "stores"
    on_disk = _files_on_disk(table)
    common = ("--profile", "test", "--root", cfg.root, "--table", "silver.stores")
    common += ("--retain-hours", "0", "--no-optimize")

    # refuse (the default): nothing deleted, the job fails naming the model and version.
    code, _, err = run_cli("maintain", *common)
    assert code == 1
    assert f"silver.stores version {trained_on} (model demand_model version 3)" in err
    assert _files_on_disk(table) == on_disk
    assert _rows(lake.read("silver.stores", trained_on)) == then  # its rows, not a count
    run = _maintain_run(spark, cfg)
    assert run["status"] == "failed"
    refused = json.loads(run["details"])["tables"]["silver.stores"]["vacuum"]["refused"]
    assert refused == [f"version {trained_on}: model demand_model version 3"]

    # A pinned version is kept the same way.
    pin = f"maintain.keep_versions={{silver.stores: [{trained_on}]}}"
    code, _, err = run_cli("maintain", *common, "--set", pin)
    assert code == 1 and f"version {trained_on} (maintain.keep_versions)" in err

    # snapshot: the version's rows are copied first, then the table is vacuumed.
    code, out, err = run_cli("maintain", *common, "--on-needed-version", "snapshot")
    assert code == 0, err[-2000:]
    copy = f"{cfg.root}/snapshots/silver/stores/version={trained_on}"
    assert _rows(spark.read.format("delta").load(copy)) == then
    assert _files_on_disk(table) < on_disk  # the old files are gone...
    with pytest.raises(Exception, match="(?i)not found|does not exist|FileNotFound"):
        lake.read("silver.stores", trained_on).collect()  # ...so time travel to it fails
    assert _rows(lake.read("silver.stores")) == now
    done = json.loads(_maintain_run(spark, cfg)["details"])["tables"]["silver.stores"]
    assert done["snapshots"] == [
        {"version": trained_on, "needed_by": "model demand_model version 3", "location": copy,
         "rows": len(then)}
    ]  # fmt: skip
    assert "snapshot of version" in out

    # The copy covers that need from now on, and a model retrained on a newer version
    # releases the one it read before: the default (refuse) passes and deletes its files.
    before = _files_on_disk(table)
    lake.write(_stores(spark, "c"), contract, "run-3")
    _publish(lake, "other_model", "2", {"silver.stores": lake.version("silver.stores")})
    code, _, err = run_cli("maintain", *common)
    assert code == 0, err[-2000:]
    assert not before <= _files_on_disk(table)


@pytest.mark.slow  # a second JVM (the concurrent writer)
def test_an_optimize_that_a_merge_overtakes_is_made_again(spark, cfg, tmp_path):
    """A writer (another process's MERGE) commits while maintain's OPTIMIZE of the same
    table is under way: Delta refuses the OPTIMIZE's commit, which is made again on the new
    version; both succeed and the table holds the writer's rows."""
    lake = Lake(spark, cfg.root)
    contract = CONTRACTS[SALES]
    for day in range(3):
        lake.write(_sales(spark, day), contract, f"day-{day}")
    location = lake.location(SALES)
    assert len(lake.read(SALES).inputFiles()) >= 3  # the snapshot is cached: no job for it
    sc = spark.sparkContext
    release = tmp_path / "release"

    def hold(_):  # both cores of local[2] busy until released: later jobs wait
        for _ in range(2400):
            if os.path.exists(release):
                return
            time.sleep(0.05)

    blocker = threading.Thread(target=lambda: sc.parallelize(range(2), 2).foreach(hold))
    blocker.start()
    outcome: dict = {}
    ctx = JobContext(spark, cfg, lake, "maintain", "maintain-test", None,
                     components=registry.components(cfg))  # fmt: skip

    def optimize() -> None:
        try:
            outcome["done"] = optimize_table(ctx, SALES)
        except Exception as exc:  # the assertion below shows it
            outcome["error"] = exc

    optimizer = threading.Thread(target=optimize)
    try:
        while not sc.statusTracker().getActiveJobsIds():
            time.sleep(0.05)
        optimizer.start()
        # The OPTIMIZE's transaction is open once one of its jobs waits for a core.
        deadline = time.monotonic() + 120
        while not _optimize_waits_for_a_job(sc):
            assert time.monotonic() < deadline, "the OPTIMIZE never ran a job"
            time.sleep(0.1)
        merge = (
            f"MERGE INTO delta.`{location}` t USING (SELECT 1 AS store, DATE'2015-01-02' AS date,"
            " 777 AS sales) s ON t.store = s.store AND t.date = s.date "
            "WHEN MATCHED THEN UPDATE SET t.sales = s.sales"
        )
        writer = subprocess.run(
            [CLI, "sql", "--profile", "test", "--set", f"paths.root={cfg.root}",
             "--allow-writes", merge],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert writer.returncode == 0, writer.stderr[-2000:]
    finally:
        release.touch()
        blocker.join()
        if optimizer.is_alive() or optimizer.ident:
            optimizer.join()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["done"]["attempts"] == 2
    ops = [(h["version"], h["operation"]) for h in lake.history(SALES, 3).collect()]
    assert [op for _, op in ops[:2]] == ["OPTIMIZE", "MERGE"]
    assert len(lake.read(SALES).inputFiles()) == 1
    sales = {(r["store"], str(r["date"])): r["sales"] for r in lake.read(SALES).collect()}
    assert sales[(1, "2015-01-02")] == 777 and sales[(2, "2015-01-02")] == 200
    assert len(sales) == 18


def _optimize_waits_for_a_job(sc) -> bool:
    """Whether a driver thread is inside Delta's OptimizeExecutor (its transaction started
    before) waiting for a Spark job: read from the JVM's thread stacks."""
    for trace in sc._jvm.java.lang.Thread.getAllStackTraces().values():
        frames = [str(f) for f in trace]
        if any("OptimizeExecutor.optimize" in f for f in frames) and any(
            "runJob" in f for f in frames
        ):
            return True
    return False
