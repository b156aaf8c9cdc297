"""Landing files: the ledger (a copy under another name is skipped, an empty file recorded
once), a run that ends between its commits loses nothing, and masking a broken line with a
customer id never fails the load nor leaves the id raw."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake.cleanse import run as cleanse
from retail_lake.config import load_config
from retail_lake.ingest import SourceSpec, mask_personal
from retail_lake.ingest import run as ingest
from retail_lake.lake import Lake
from retail_lake.privacy import load_key as token_key
from retail_lake.privacy import token
from retail_lake.registry import run_job
from retail_lake.runner import job_runs

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
GOOD = "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
BROKEN = "536366,22633,HAND, WARMER,6,2010-12-01 08:28:00,1.85,13047.0,United Kingdom\n"
KEY = b"k" * 32
SPEC = SourceSpec(
    "online_retail",
    "csv",
    "*",
    "bronze.online_retail_raw",
    ",",
    '"',
    "utf-8",
    True,
    (
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ),
    ("CustomerID",),
)


def _land(folder: Path, name: str, text: str) -> None:
    path = folder / "online_retail" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _config(root, landing):
    return load_config("test", [f"paths.root={root}", f"paths.landing={landing}"])


@pytest.mark.parametrize(
    "line",
    [
        # a quote left open: the csv module reads the rest of the line as one field
        '536366,22633,"HAND WARMER,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom',
        # a carriage return inside an unquoted field
        "536366,22633,HAND\rWARMER,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom,x",
        # a field over the csv module's 128 KiB limit
        '536366,"' + "A" * 200_000 + '",6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom,x',
    ],
    ids=["open_quote", "carriage_return", "huge_field"],
)
def test_masking_a_broken_line_never_fails_and_never_leaves_the_id(line):
    masked = mask_personal(line, SPEC, KEY)
    assert "17850" not in masked
    assert token("17850.0", KEY) in masked


def test_masking_a_line_whose_fields_can_be_read_replaces_the_id_positions_only():
    masked = mask_personal(BROKEN.rstrip("\n"), SPEC, KEY)
    assert masked == (
        f"536366,22633,HAND, WARMER,6,2010-12-01 08:28:00,{token('1.85', KEY)},"
        f"{token('13047', KEY)},United Kingdom"
    )


def test_one_malformed_line_is_quarantined_and_the_load_goes_on(spark, root, tmp_path):
    landing = tmp_path / "landing"
    open_quote = '536367,22634,"CAFE,1,2010-12-01 08:30:00,1.00,12583.0,France\n'
    _land(landing, "day.csv", HEADER + GOOD + open_quote + GOOD.replace("536365", "536368"))
    cfg = _config(root, landing)
    run_job(spark, cfg, "ingest", ingest)
    lake = Lake(spark, cfg.root)
    bronze = lake.read("bronze.online_retail_raw").orderBy("_line_number").collect()
    assert [r["_line_number"] for r in bronze] == [2, 4]
    (broken,) = lake.read("silver.quarantine").collect()
    assert (broken["_line_number"], broken["rule"]) == (3, "unparseable")
    assert "12583" not in broken["payload"]


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_a_copy_landed_under_another_name_is_skipped_and_recorded_once(
    spark, root, tmp_path, caplog
):
    landing = tmp_path / "landing"
    _land(landing, "day1.csv", HEADER + GOOD)
    cfg = _config(root, landing)
    run_job(spark, cfg, "ingest", ingest)
    run_job(spark, cfg, "cleanse", cleanse)
    _land(landing, "day1_copy.csv", HEADER + GOOD)  # the same bytes, another name
    _land(landing, "empty.csv", "")
    with caplog.at_level(logging.WARNING, logger="retail_lake"):
        ctx, writes = run_job(spark, cfg, "ingest", ingest)
    assert "bronze.online_retail_raw" not in writes  # nothing new
    assert "day1_copy.csv has the same content as online_retail/day1.csv" in caplog.text
    assert "empty.csv is empty" in caplog.text
    lake = Lake(spark, cfg.root)
    ledger = {
        r["file"]: (r["status"], r["duplicate_of"]) for r in lake.read("ops.landed_files").collect()
    }
    assert ledger == {
        "online_retail/day1.csv": ("ingested", None),
        "online_retail/day1_copy.csv": ("duplicate", "online_retail/day1.csv"),
        "online_retail/empty.csv": ("empty", None),
    }
    # Cleanse is not blocked: bronze holds each line once.
    run_job(spark, cfg, "cleanse", cleanse)
    assert lake.read("bronze.online_retail_raw").count() == 1
    # Warned once: the next run knows both files.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retail_lake"):
        run_job(spark, cfg, "ingest", ingest)
    assert "same content" not in caplog.text and "is empty" not in caplog.text
    # A file that was empty and then filled is looked at again.
    _land(landing, "empty.csv", HEADER + GOOD.replace("536365", "536369"))
    _, writes = run_job(spark, cfg, "ingest", ingest)
    assert writes["bronze.online_retail_raw"].inserted == 1


def test_a_run_that_ends_between_its_commits_loses_no_quarantined_line(
    spark, root, tmp_path, monkeypatch
):
    """The run dies after its quarantine commit and before its bronze commit: the next run
    takes the file again; its broken line is in quarantine once, its rows in bronze once,
    and the ledger is complete."""
    landing = tmp_path / "landing"
    _land(landing, "day.csv", HEADER + GOOD + BROKEN)
    cfg = _config(root, landing)
    real_write = Lake.write

    def dies_at_bronze(self, df, contract, *args, **kwargs):
        if contract.name == "bronze.online_retail_raw":
            raise SystemError("the process died here")
        return real_write(self, df, contract, *args, **kwargs)

    monkeypatch.setattr(Lake, "write", dies_at_bronze)
    with pytest.raises(SystemError, match="died here"):
        run_job(spark, cfg, "ingest", ingest)
    monkeypatch.setattr(Lake, "write", real_write)
    lake = Lake(spark, cfg.root)
    assert lake.read("silver.quarantine").count() == 1  # committed before bronze
    assert not lake.exists("bronze.online_retail_raw")

    ctx, _ = run_job(spark, cfg, "ingest", ingest)
    quarantine = lake.read("silver.quarantine").collect()
    assert [(r["_line_number"], r["rule"]) for r in quarantine] == [(3, "column_count")]
    assert [r["_line_number"] for r in lake.read("bronze.online_retail_raw").collect()] == [2]
    assert [r["file"] for r in lake.read("ops.landed_files").collect()] == ["online_retail/day.csv"]
    run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()
    assert run["status"] == "succeeded"


def test_a_huge_broken_line_is_quarantined_cut_with_its_length(spark, root, tmp_path):
    landing = tmp_path / "landing"
    huge = "536366,22633," + "W" * 100_000 + ", WARMER,6,2010-12-01 08:28:00,1.85,13047.0,UK\n"
    _land(landing, "day.csv", HEADER + GOOD + huge)
    cfg = _config(root, landing)
    run_job(spark, cfg, "ingest", ingest)
    (broken,) = Lake(spark, cfg.root).read("silver.quarantine").collect()
    assert broken["rule"] == "column_count"
    whole = len(mask_personal(huge.rstrip("\n"), SPEC, token_key(cfg)))
    assert broken["payload"].endswith(f"... [{whole} characters, cut at 16384]")
    assert len(broken["payload"]) < 16384 + 50
    assert "13047" not in broken["payload"]


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_a_retracted_file_leaves_bronze_quarantine_and_silver_and_stays_out(
    spark, root, tmp_path, capsys
):
    from retail_lake.cli import main
    from retail_lake.landing import RetractError, retract

    landing = tmp_path / "landing"
    day2 = GOOD.replace("536365", "536370") + BROKEN
    _land(landing, "day1.csv", HEADER + GOOD)
    _land(landing, "day2.csv", HEADER + day2)
    cfg = _config(root, landing)
    run_job(spark, cfg, "ingest", ingest)
    run_job(spark, cfg, "cleanse", cleanse)
    lake = Lake(spark, cfg.root)

    def invoices() -> list[str]:
        return sorted(r["invoice_no"] for r in lake.read("silver.transactions").collect())

    assert invoices() == ["536365", "536370"]
    silver_before = lake.version("silver.transactions")

    args = ["--profile", "test", "--root", str(root), "--set", f"paths.landing={landing}"]
    assert main(["landing", "retract", "online_retail/day2.csv", *args]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "bronze.online_retail_raw: 1 rows removed" in printed
    assert "silver.quarantine: 1 rows removed" in printed  # its broken line (ingest stage)
    bronze = lake.read("bronze.online_retail_raw").collect()
    assert [(r["_source_file"], r["invoice_no"]) for r in bronze] == [
        ("online_retail/day1.csv", "536365")
    ]
    assert lake.read("silver.quarantine").where(F.col("stage") == "ingest").count() == 0
    runs = job_runs(spark, cfg).where(F.col("job") == "retract").collect()
    assert [(r["status"], r["parameters"]["file"]) for r in runs] == [
        ("succeeded", "online_retail/day2.csv")
    ]
    ledger = lake.read("ops.landed_files").where(F.col("file") == "online_retail/day2.csv")
    last = ledger.orderBy(F.col("recorded_at").desc()).first()
    assert (last["status"], last["run_id"]) == ("retracted", runs[0]["run_id"])

    # The cleanse the command ran retired the file's silver rows: the change feed shows it.
    assert invoices() == ["536365"]
    changes = lake.changes("silver.transactions", silver_before + 1).collect()
    assert [(r["invoice_no"], r["_change_type"]) for r in changes] == [("536370", "delete")]

    # The same bytes stay out; a corrected file under the name comes in.
    _, writes = run_job(spark, cfg, "ingest", ingest)
    assert "bronze.online_retail_raw" not in writes
    _land(landing, "day2.csv", HEADER + GOOD.replace("536365", "536371"))
    _, writes = run_job(spark, cfg, "ingest", ingest)
    assert writes["bronze.online_retail_raw"].inserted == 1

    # What is not an ingested file is refused, naming it.
    with pytest.raises(RetractError, match="nothing.csv is not in the landing ledger"):
        run_job(spark, cfg, "retract", retract("online_retail/nothing.csv"))
    _land(landing, "copy.csv", HEADER + GOOD)  # day1's bytes: recorded as a duplicate
    run_job(spark, cfg, "ingest", ingest)
    with pytest.raises(RetractError, match="recorded as duplicate"):
        run_job(spark, cfg, "retract", retract("online_retail/copy.csv"))
