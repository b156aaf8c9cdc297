"""The runner on real tables: ops.job_runs through a run's life, and write-audit-publish."""

from __future__ import annotations

import json
import threading
from datetime import date

import pytest
from pyspark.sql import functions as F

from retail_lake.lake import Lake
from retail_lake.quality import QualityGateError
from retail_lake.registry import run_job
from retail_lake.runner import Conservation, ConservationError, JobResult, Output, job_runs

STORES_SCHEMA = (
    "store int, store_type string, assortment string, competition_distance_m "
    "double, competition_open_since date, promo2 boolean, promo2_since date, "
    "promo2_months array<int>, _source_file string, _line_number bigint"
)


def stores(spark, rows):
    return spark.createDataFrame(rows, STORES_SCHEMA)


GOOD = [
    (1, "a", "a", 100.0, None, False, None, [], "f", 2),
    (2, "b", "c", None, None, True, None, [1, 4], "f", 3),
]
BAD = [
    (1, "a", "a", 100.0, None, False, None, [], "f", 2),
    (2, "z", "c", -5.0, None, True, None, [1, 4], "f", 3),
]


def test_successful_run_is_recorded_with_versions_and_rows(spark, cfg):
    def job(ctx):
        return JobResult(
            outputs=[Output("silver.stores", stores(spark, GOOD))], rows_read={"inline": 2}
        )

    ctx, writes = run_job(spark, cfg, "load_stores", job, params={"k": "v"})
    run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).collect()
    assert len(run) == 1
    row = run[0]
    assert row["status"] == "succeeded" and row["job"] == "load_stores"
    assert row["ended_at"] >= row["started_at"] and row["duration_s"] > 0
    assert row["parameters"] == {"k": "v"}
    assert row["rows_read"] == {"inline": 2}
    assert row["rows_written"] == {"silver.stores": 2}
    assert row["versions_written"] == {"silver.stores": writes["silver.stores"].version}
    assert row["error"] is None
    results = Lake(spark, cfg.root).read("ops.quality_results").where(F.col("run_id") == ctx.run_id)
    # contract key rules (not null, unique) + the 3 configured ones, all evaluated and passed
    assert results.count() == 5
    assert results.where(~F.col("success")).count() == 0


def _commits(folder) -> list[dict]:
    """The commitInfo of every commit in a table's log, oldest first."""
    infos = []
    for path in sorted((folder / "_delta_log").glob("*.json")):
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                infos.append(action["commitInfo"])
    return infos


@pytest.mark.parametrize("journal", ["new", "column_mapped"])
def test_the_run_journal_is_committed_by_the_driver_or_by_spark(spark, cfg, root, journal):
    """A new lake's ops tables are plain Delta tables whose rows the driver commits with
    delta-rs; a journal an older release created with column mapping is written by Spark.
    Either way each commit carries the run id and the rows are the same."""
    from retail_lake.registry import CONTRACTS
    from retail_lake.session import register_table

    if journal == "column_mapped":
        contract = CONTRACTS["ops.job_runs"]
        location = f"{root}/ops/job_runs"
        spark.sql(
            f"CREATE TABLE delta.`{location}` ({contract.ddl_columns()}) USING DELTA "
            "TBLPROPERTIES ('delta.columnMapping.mode' = 'name', "
            "'delta.minReaderVersion' = '2', 'delta.minWriterVersion' = '5')"
        )
        register_table(spark, "ops.job_runs", location)

    def job(ctx):
        return JobResult(outputs=[Output("silver.stores", stores(spark, GOOD))])

    first, _ = run_job(spark, cfg, "load_stores", job)
    with pytest.raises(RuntimeError):
        run_job(spark, cfg, "load_stores", lambda ctx: (_ for _ in ()).throw(RuntimeError("x")))
    runs = job_runs(spark, cfg).collect()
    assert [(r["job"], r["status"]) for r in runs] == [
        ("load_stores", "succeeded"),
        ("load_stores", "failed"),
    ]
    assert runs[0]["run_id"] == first.run_id and runs[1]["error"] == "RuntimeError: x"
    # 'running' then the outcome, per run: four commits after the table's creation.
    commits = _commits(root / "ops" / "job_runs")[1:]
    assert [c.get("userMetadata") for c in commits] == [
        runs[0]["run_id"],
        runs[0]["run_id"],
        runs[1]["run_id"],
        runs[1]["run_id"],
    ]
    engines = {
        c.get("engineInfo", c.get("clientVersion", "")).split("/")[0].split(":")[0] for c in commits
    }
    assert engines == ({"Apache-Spark"} if journal == "column_mapped" else {"delta-rs"})
    # Spark reads the journal in the same session right after each commit, with the
    # contract's columns, nullability and comments whoever created it.
    lake = Lake(spark, cfg.root)
    assert len(lake.history("ops.job_runs").collect()) == 5
    assert lake.read("ops.job_runs").schema == CONTRACTS["ops.job_runs"].spark_schema()
    # A journal table this release creates is created by the driver too.
    created = _commits(root / "ops" / "quality_results")[0]
    assert created["operation"] == "CREATE TABLE"
    assert created.get("clientVersion", "").startswith("delta-rs")


def test_failing_critical_expectation_writes_nothing_and_fails_the_run(spark, cfg):
    lake = Lake(spark, cfg.root)
    run_job(
        spark,
        cfg,
        "load_stores",
        lambda ctx: JobResult(outputs=[Output("silver.stores", stores(spark, GOOD))]),
    )
    version = lake.version("silver.stores")

    def bad(ctx):
        return JobResult(outputs=[Output("silver.stores", stores(spark, BAD))])

    with pytest.raises(QualityGateError) as err:
        run_job(spark, cfg, "load_stores", bad)
    message = str(err.value)
    assert "nothing was written" in message
    assert "expect_column_values_to_be_in_set" in message and "1 of 2 rows unexpected" in message
    assert "competition_distance_m" in message
    assert lake.version("silver.stores") == version  # no commit
    assert sorted(r["store_type"] for r in lake.read("silver.stores").collect()) == ["a", "b"]
    failed = job_runs(spark, cfg).where(F.col("status") == "failed").collect()
    assert len(failed) == 1 and failed[0]["error"].startswith("QualityGateError")
    assert failed[0]["versions_written"] is None
    results = (
        lake.read("ops.quality_results")
        .where(F.col("run_id") == failed[0]["run_id"])
        .where(~F.col("success"))
    )
    assert sorted(r["expectation"] for r in results.collect()) == [
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
    ]


def test_broken_conservation_fails_before_any_write(spark, cfg):
    def leaky(ctx):
        return JobResult(
            outputs=[Output("silver.stores", stores(spark, GOOD))],
            conservation=[Conservation("stage", {"in": 3}, {"out": 2})],
        )

    with pytest.raises(ConservationError, match=r"inputs \{'in': 3\} != outputs \{'out': 2\}"):
        run_job(spark, cfg, "leaky", leaky)
    assert not Lake(spark, cfg.root).exists("silver.stores")
    row = job_runs(spark, cfg).first()
    assert row["status"] == "failed"
    assert json.loads(row["conservation"])[0]["holds"] is False


def test_job_runs_shows_running_while_the_job_works(spark, cfg):
    started, release = threading.Event(), threading.Event()

    def slow(ctx):
        started.set()
        assert release.wait(120)
        return JobResult()

    thread = threading.Thread(target=run_job, args=(spark, cfg, "slow", slow))
    thread.start()
    try:
        assert started.wait(120)
        during = job_runs(spark, cfg).collect()
        assert [(r["job"], r["status"], r["ended_at"]) for r in during] == [
            ("slow", "running", None)
        ]
    finally:
        release.set()
        thread.join(120)
    after = job_runs(spark, cfg).collect()
    assert [(r["job"], r["status"]) for r in after] == [("slow", "succeeded")]
    assert after[0]["run_id"] == during[0]["run_id"]


def test_exception_in_job_is_recorded_with_its_message(spark, cfg):
    def broken(ctx):
        raise ValueError("landing file x.csv line 7: bad")

    with pytest.raises(ValueError):
        run_job(spark, cfg, "broken", broken)
    row = job_runs(spark, cfg).first()
    assert (row["status"], row["error"]) == ("failed", "ValueError: landing file x.csv line 7: bad")


STORE_HEADER = (
    '"Store","StoreType","Assortment","CompetitionDistance","CompetitionOpenSinceMonth",'
    '"CompetitionOpenSinceYear","Promo2","Promo2SinceWeek","Promo2SinceYear","PromoInterval"\n'
)
STORE_LINES = [
    '1,"b","b",700,7,2009,0,,,""\n',
    '2,"d","c",390,8,2003,1,35,2011,"Mar,Jun,Sept,Dec"\n',
    '3,"c","a",2950,,,0,,,""\n',
]


@pytest.mark.slow
def test_a_unit_whose_inputs_settings_and_outputs_are_unchanged_is_skipped(spark, root, tmp_path):
    from retail_lake import cleanse, ingest
    from retail_lake.config import load_config

    landing = tmp_path / "landing"
    (landing / "rossmann").mkdir(parents=True)
    (landing / "rossmann" / "store_a.csv").write_text(STORE_HEADER + "".join(STORE_LINES[:2]))
    lake = Lake(spark, str(root))

    def cleanse_run(*overrides, run_date=None):
        cfg = load_config("test", [f"paths.root={root}", f"paths.landing={landing}", *overrides])
        ctx, _ = run_job(spark, cfg, "cleanse", cleanse.run, run_date)
        states = lake.read("ops.unit_states").where(F.col("run_id") == ctx.run_id).collect()
        run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()
        return {s["unit"]: s["status"] for s in states}, run, states

    cfg = load_config("test", [f"paths.root={root}", f"paths.landing={landing}"])
    run_job(spark, cfg, "ingest", ingest.run)
    units, run, states = cleanse_run()
    assert units == {"cleanse rossmann_stores": "built"}
    built_version = lake.version("silver.stores")
    assert states[0]["output_versions"] == {"silver.stores": built_version}
    assert run["versions_written"]["silver.stores"] == built_version

    # Same bronze version, settings and code: skipped without reading bronze.
    units, run, _ = cleanse_run()
    assert units == {"cleanse rossmann_stores": "unchanged"}
    assert run["versions_read"] is None and run["versions_written"] is None
    assert lake.version("silver.stores") == built_version

    # A setting that shapes rows: rebuilt (the rows are the same, so nothing is committed).
    units, run, _ = cleanse_run("features.max_store=2")
    assert units == {"cleanse rossmann_stores": "built"}
    bronze = "bronze.rossmann_stores_raw"
    assert run["versions_read"] == {bronze: lake.version(bronze)}
    assert lake.version("silver.stores") == built_version

    # Someone deleted a silver row behind the job's back: the output's version moved, so the
    # next run rebuilds and the row is back.
    lake.delta_table("silver.stores").delete("store = 2")
    units, _, _ = cleanse_run("features.max_store=2")
    assert units == {"cleanse rossmann_stores": "built"}
    assert sorted(r["store"] for r in lake.read("silver.stores").collect()) == [1, 2]

    # A new file lands: bronze moves, the unit is rebuilt and silver gains the store.
    (landing / "rossmann" / "store_b.csv").write_text(STORE_HEADER + STORE_LINES[2])
    run_job(spark, cfg, "ingest", ingest.run)
    units, _, _ = cleanse_run("features.max_store=2")
    assert units == {"cleanse rossmann_stores": "built"}
    assert sorted(r["store"] for r in lake.read("silver.stores").collect()) == [1, 2, 3]
    units, _, _ = cleanse_run("features.max_store=2")
    assert units == {"cleanse rossmann_stores": "unchanged"}
    # A run for another logical date (a scheduler's backfill): cleansed rows do not depend
    # on it, so the unit is still skipped; only dated units (the Online Retail snapshot)
    # are rebuilt for a new day.
    units, _, _ = cleanse_run("features.max_store=2", run_date=date(2011, 6, 30))
    assert units == {"cleanse rossmann_stores": "unchanged"}
