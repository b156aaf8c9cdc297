"""Ingest on real files: broken lines quarantined, provenance, incremental, encodings, drift."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.ingest import SchemaDriftError
from retail_lake.ingest import run as ingest
from retail_lake.lake import Lake
from retail_lake.runner import job_runs, run_job

SALES_HEADER = (
    '"Store","DayOfWeek","Date","Sales","Customers","Open","Promo","StateHoliday","SchoolHoliday"\n'
)
STORE_HEADER = (
    '"Store","StoreType","Assortment","CompetitionDistance",'
    '"CompetitionOpenSinceMonth","CompetitionOpenSinceYear","Promo2",'
    '"Promo2SinceWeek","Promo2SinceYear","PromoInterval"\n'
)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture
def landing(tmp_path) -> Path:
    folder = tmp_path / "landing"
    write(
        folder / "rossmann" / "train.csv.gz",
        (
            SALES_HEADER
            + '1,5,2015-07-31,5263,555,1,1,"0","1"\n'  # line 2
            + '2,5,2015-07-31,6064,625,1,1,"0"\n'  # line 3: 8 fields
            + '3,5,2015-07-31,8314,"821,1,1,"0","1"\n'  # line 4: unterminated quote
            + '1,5,2015-07-31,5263,555,1,1,"0","1"\n'  # line 5: duplicate line, kept
        ).encode()
        + b'4,5,2015-07-31,\xff\xfe,1,1,1,"0","1"\n',
    )  # line 6: not UTF-8
    write(
        folder / "rossmann" / "store.csv.gz",
        (STORE_HEADER + '1,"c","a",1270,9,2008,0,,,""\n').encode(),
    )
    return folder


def config(root, landing, *extra):
    return load_config("test", [f"paths.root={root}", f"paths.landing={landing}", *extra])


def test_ingest_keeps_text_and_provenance_and_quarantines_broken_lines(spark, root, landing):
    cfg = config(root, landing)
    ctx, writes = run_job(spark, cfg, "ingest", ingest)
    lake = Lake(spark, cfg.root)
    bronze = lake.read("bronze.rossmann_sales_raw").orderBy("_line_number").collect()
    assert [
        (r["_source_file"], r["_line_number"], r["store"], r["sales"], r["state_holiday"])
        for r in bronze
    ] == [
        ("rossmann/train.csv.gz", 2, "1", "5263", "0"),
        ("rossmann/train.csv.gz", 5, "1", "5263", "0"),
    ]
    assert bronze[0]["_row_hash"] == bronze[1]["_row_hash"]  # same content, two identities
    assert {r["_run_id"] for r in bronze} == {ctx.run_id}
    quarantine = lake.read("silver.quarantine").orderBy("_line_number").collect()
    assert [(r["stage"], r["source"], r["_line_number"], r["rule"]) for r in quarantine] == [
        ("ingest", "rossmann_sales", 3, "column_count"),
        ("ingest", "rossmann_sales", 4, "unparseable"),
        ("ingest", "rossmann_sales", 6, "undecodable"),
    ]
    assert quarantine[0]["reason"] == "expected 9 fields, found 8"
    assert quarantine[0]["payload"] == '2,5,2015-07-31,6064,625,1,1,"0"'
    assert "not valid utf-8" in quarantine[2]["reason"]
    run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()
    checks = {c["name"].split(":")[0]: c for c in json.loads(run["conservation"])}
    assert checks["ingest rossmann_sales"]["inputs"] == {"records_read": 5}
    assert checks["ingest rossmann_sales"]["outputs"] == {"bronze_rows": 2, "quarantined": 3}
    assert run["rows_written"]["bronze.rossmann_stores_raw"] == 1


def test_ingest_is_incremental(spark, root, landing):
    cfg = config(root, landing)
    run_job(spark, cfg, "ingest", ingest)
    lake = Lake(spark, cfg.root)
    version = lake.version("bronze.rossmann_sales_raw")
    _, writes = run_job(spark, cfg, "ingest", ingest)
    assert writes == {}  # nothing new: nothing written
    assert lake.version("bronze.rossmann_sales_raw") == version
    write(
        landing / "rossmann" / "train_2015-08-01.csv",
        (SALES_HEADER + '1,6,2015-08-01,4000,400,1,0,"0","0"\n').encode(),
    )
    _, writes = run_job(spark, cfg, "ingest", ingest)
    assert writes["bronze.rossmann_sales_raw"].inserted == 1
    files = lake.read("bronze.rossmann_sales_raw").groupBy("_source_file").count().collect()
    assert sorted((r["_source_file"], r["count"]) for r in files) == [
        ("rossmann/train.csv.gz", 2),
        ("rossmann/train_2015-08-01.csv", 1),
    ]


def test_declared_latin1_encoding_is_decoded(spark, root, tmp_path):
    folder = tmp_path / "latin"
    write(
        folder / "rossmann" / "store.csv",
        (STORE_HEADER + '1,"c","a",1270,9,2008,0,,,"Jan,Avr\xe9"\n').encode("latin-1"),
    )
    cfg = config(root, folder, "sources.rossmann_stores.encoding=latin-1")
    run_job(spark, cfg, "ingest", ingest)
    row = Lake(spark, cfg.root).read("bronze.rossmann_stores_raw").first()
    assert row["promo_interval"] == "Jan,Avré"


def test_header_drift_stops_with_the_column_named(spark, root, tmp_path):
    folder = tmp_path / "drift"
    write(
        folder / "rossmann" / "store.csv",
        (
            STORE_HEADER.replace('"PromoInterval"', '"PromoMonths"')
            + '1,"c","a",1270,9,2008,0,,,""\n'
        ).encode(),
    )
    cfg = config(root, folder)
    with pytest.raises(
        SchemaDriftError,
        match=r"rossmann/store.csv: .*missing column\(s\) "
        r"\['PromoInterval'\]; new column\(s\) "
        r"\['PromoMonths'\]",
    ):
        run_job(spark, cfg, "ingest", ingest)
    assert not Lake(spark, cfg.root).exists("bronze.rossmann_stores_raw")
