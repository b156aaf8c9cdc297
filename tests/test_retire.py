"""Merges retire the rows a unit of work no longer produces (issue 16): a tightened cleanse
rule moves exactly its rows from silver to quarantine, a loosened one brings them back, a
lowered features.max_store drops exactly the stores left out, and a re-run commits nothing.
Small Rossmann files landed inline, run through ingest, cleanse and features."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from retail_lake import cleanse, features, ingest
from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.registry import run_job
from retail_lake.runner import job_runs
from retail_lake.sources.rossmann import cleanse as rossmann

# Four to five job runs on a lake each (about a minute per test here): outside the inner loop.
pytestmark = pytest.mark.slow

SALES_HEADER = (
    '"Store","DayOfWeek","Date","Sales","Customers","Open","Promo","StateHoliday","SchoolHoliday"\n'
)
STORE_HEADER = (
    '"Store","StoreType","Assortment","CompetitionDistance","CompetitionOpenSinceMonth",'
    '"CompetitionOpenSinceYear","Promo2","Promo2SinceWeek","Promo2SinceYear","PromoInterval"\n'
)
STORE_LINES = [
    '1,"c","a",1270,9,2008,0,,,""\n',
    '2,"a","a",570,11,2007,1,13,2010,"Jan,Apr,Jul,Oct"\n',
    '3,"a","c",14130,12,2006,1,14,2011,"Jan,Apr,Jul,Oct"\n',
]


def sales_lines(stores: int, days: int) -> list[str]:
    """Open days with sales; Christmas days (25th, 26th) closed with state holiday c."""
    lines = []
    for store in range(1, stores + 1):
        for d in range(20, 20 + days):
            weekday = (d - 20 + 5) % 7 + 1  # 2014-12-20 was a Saturday (6)
            if d in (25, 26):
                lines.append(f'{store},{weekday},2014-12-{d},0,0,0,0,"c","1"\n')
            else:
                lines.append(
                    f"{store},{weekday},2014-12-{d},{1000 + 10 * d + store},"
                    f'{100 + d},1,{d % 2},"0","1"\n'
                )
    return lines


def land(tmp_path, stores: int, days: int, extra: str = ""):
    landing = tmp_path / "landing"
    (landing / "rossmann").mkdir(parents=True)
    (landing / "rossmann" / "train_a.csv").write_text(
        SALES_HEADER + "".join(sales_lines(stores, days)) + extra
    )
    (landing / "rossmann" / "store_a.csv").write_text(STORE_HEADER + "".join(STORE_LINES[:stores]))
    return landing


def lines_of(df) -> set[int]:
    return {r["_line_number"] for r in df.select("_line_number").collect()}


def quarantined(lake: Lake) -> list[tuple[str, int, str]]:
    """(stage, line, rule) of every quarantine row, sorted."""
    rows = lake.read("silver.quarantine").select("stage", "_line_number", "rule").collect()
    return sorted((r["stage"], r["_line_number"], r["rule"]) for r in rows)


def data_versions(lake: Lake) -> dict[str, int]:
    tables = ("silver.store_daily_sales", "silver.quarantine")
    return {t: lake.version(t) for t in tables}


def test_a_tightened_rule_moves_exactly_its_rows_and_a_loosened_one_brings_them_back(
    spark, root, tmp_path, monkeypatch
):
    # 2 stores x 8 days (4 closed Christmas lines), a line with an unknown holiday code
    # (quarantined at cleanse whatever the rules) and one with a field missing (at ingest).
    landing = land(tmp_path, 2, 8, '2,1,2014-12-29,10,1,1,0,"d","0"\n2,2,2014-12-30,10,1\n')
    # The stores file of another source (its own unit) with a line cleanse quarantines.
    with open(landing / "rossmann" / "store_a.csv", "a") as fh:
        fh.write('9,"","a",100,,,0,,,""\n')
    base = [f"paths.root={root}", f"paths.landing={landing}"]
    cfg = load_config("test", base)
    lake = Lake(spark, str(root))
    run_job(spark, cfg, "ingest", ingest.run)

    def cleanse_run():
        # The rules are patched in the process, not in the code's files: rebuild anyway.
        ctx, _ = run_job(
            spark,
            load_config("test", [*base, "runner.skip_unchanged=false"]),
            "cleanse",
            cleanse.run,
        )
        return job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()

    cleanse_run()
    silver = lake.read("silver.store_daily_sales")
    christmas = lines_of(silver.where(F.col("state_holiday") == "c"))
    kept = lines_of(silver)
    assert len(kept) == 16 and len(christmas) == 4
    before = quarantined(lake)
    assert before == [
        ("cleanse", 4, "missing_store_type"),
        ("cleanse", 18, "invalid_state_holiday"),
        ("ingest", 19, "column_count"),
    ]
    versions = data_versions(lake)

    # Tightened: state holiday c is no longer allowed.
    monkeypatch.setattr(rossmann, "STATE_HOLIDAYS", ("0", "a", "b"))
    run = cleanse_run()
    assert lines_of(lake.read("silver.store_daily_sales")) == kept - christmas
    moved = lake.read("silver.quarantine").where(
        (F.col("stage") == "cleanse") & (F.col("rule") == "invalid_state_holiday")
    )
    assert lines_of(moved) == christmas | {18}
    assert lake.read("silver.quarantine").count() == len(before) + len(christmas)
    feed = lake.changes("silver.store_daily_sales", versions["silver.store_daily_sales"] + 1)
    changes = {(r["_change_type"], r["_line_number"]) for r in feed.collect()}
    assert changes == {("delete", n) for n in christmas}
    assert run["rows_written"]["silver.store_daily_sales"] == len(christmas)
    tightened = data_versions(lake)

    # Loosened again: the rows come back and their quarantine records are retired; the
    # rows quarantined at ingest and by the rule that still holds stay.
    monkeypatch.undo()
    cleanse_run()
    assert lines_of(lake.read("silver.store_daily_sales")) == kept
    assert quarantined(lake) == before
    feed = lake.changes("silver.quarantine", tightened["silver.quarantine"] + 1)
    assert {(r["_change_type"], r["_line_number"]) for r in feed.collect()} == {
        ("delete", n) for n in christmas
    }

    # A day of sales lands: only the sales unit is rebuilt. Its rows and quarantine rows are
    # produced again as they are, so silver gets exactly the new line and the quarantine
    # gets no commit: the stores' row (its unit skipped, so not produced by this run) stays.
    settled = data_versions(lake)
    (landing / "rossmann" / "train_b.csv").write_text(
        SALES_HEADER + '1,3,2014-12-31,1500,150,1,0,"0","0"\n'
    )
    run_job(spark, cfg, "ingest", ingest.run)
    ctx, _ = run_job(spark, cfg, "cleanse", cleanse.run)  # skip_unchanged: the default
    states = lake.read("ops.unit_states").where(F.col("run_id") == ctx.run_id).collect()
    assert sorted((s["unit"], s["status"]) for s in states) == [
        ("cleanse rossmann_sales", "built"),
        ("cleanse rossmann_stores", "unchanged"),
    ]
    feed = lake.changes("silver.store_daily_sales", settled["silver.store_daily_sales"] + 1)
    assert [
        (r["_change_type"], r["_source_file"].rsplit("/", 1)[-1], r["date"].isoformat())
        for r in feed.collect()
    ] == [("insert", "train_b.csv", "2014-12-31")]
    assert lake.version("silver.quarantine") == settled["silver.quarantine"]
    assert quarantined(lake) == before


def test_a_lowered_max_store_retires_exactly_the_features_of_the_stores_left_out(
    spark, root, tmp_path
):
    lowered = 2
    landing = land(tmp_path, 3, 8)
    base = [f"paths.root={root}", f"paths.landing={landing}"]
    lake = Lake(spark, str(root))
    cfg = load_config("test", base)
    for job, fn in (("ingest", ingest.run), ("cleanse", cleanse.run), ("features", features.run)):
        run_job(spark, cfg, job, fn)
    table = "gold.store_day_features"
    full = {(r["store"], r["date"]) for r in lake.read(table).select("store", "date").collect()}
    assert {s for s, _ in full} == {1, 2, 3} and len(full) == 24
    built = lake.version(table)

    lowered_cfg = load_config("test", [*base, f"features.max_store={lowered}"])
    run_job(spark, lowered_cfg, "features", features.run)
    rows = {(r["store"], r["date"]) for r in lake.read(table).select("store", "date").collect()}
    assert rows == {(s, d) for s, d in full if s <= lowered}
    feed = lake.changes(table, built + 1).collect()
    assert {r["_change_type"] for r in feed} == {"delete"}
    assert {(r["store"], r["date"]) for r in feed} == full - rows

    # The same setting again: the unit is rebuilt (skip_unchanged off) and commits nothing.
    version = lake.version(table)
    off = load_config(
        "test", [*base, f"features.max_store={lowered}", "runner.skip_unchanged=false"]
    )
    run_job(spark, off, "features", features.run)
    assert lake.version(table) == version


def test_a_full_run_repairs_a_silver_table_changed_by_hand(spark, root, tmp_path, capsys):
    from retail_lake import cli
    from retail_lake.analyst import run_sql

    landing = land(tmp_path, 2, 8)
    base = [f"paths.root={root}", f"paths.landing={landing}"]
    cfg = load_config("test", base)
    lake = Lake(spark, str(root))
    for job, fn in (("ingest", ingest.run), ("cleanse", cleanse.run)):
        run_job(spark, cfg, job, fn)
    table = "silver.store_daily_sales"

    def content():
        return sorted(tuple(r) for r in lake.read(table).drop("_run_id").collect())

    built = content()
    assert len(built) == 16
    # By hand: a value changed (its stored content hash left as it was), a row deleted and
    # a row made up under a new key.
    for statement in (
        f"UPDATE {table} SET sales = 0 WHERE store = 1 AND date = '2014-12-20'",
        f"DELETE FROM {table} WHERE store = 2 AND date = '2014-12-21'",
        f"INSERT INTO {table} SELECT 9 AS store, date, day_of_week, sales, customers, open, "
        "promo, state_holiday, school_holiday, _source_file, _line_number, _run_id, "
        f"_content_hash FROM {table} WHERE store = 1 AND date = '2014-12-22'",
    ):
        run_sql(spark, cfg, statement, allow_writes=True)
    assert content() != built

    capsys.readouterr()
    sets = [x for o in base for x in ("--set", o)]
    code = cli.main(["run", "cleanse", "--full", "--profile", "test", *sets])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert content() == built
    run = (
        job_runs(spark, cfg)
        .where(F.col("job") == "cleanse")
        .orderBy(F.col("started_at").desc())
        .first()
    )
    assert run["parameters"]["set.runner.verify_content"] == "true"
    assert run["rows_written"][table] == 3  # one update, one insert, one delete
    # Repaired: a normal run finds nothing to do.
    version = lake.version(table)
    run_job(
        spark, load_config("test", [*base, "runner.skip_unchanged=false"]), "cleanse", cleanse.run
    )
    assert lake.version(table) == version
