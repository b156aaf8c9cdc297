"""Ingest on real files: broken lines quarantined, provenance, incremental, encodings, drift."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.ingest import SchemaDriftError, UnreadableFileError
from retail_lake.ingest import run as ingest
from retail_lake.lake import Lake
from retail_lake.record_count import count_csv_records
from retail_lake.registry import run_job
from retail_lake.runner import ConservationError, job_runs

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
    assert checks["ingest rossmann_sales"]["inputs"] == {"file_records": 5}
    assert checks["ingest rossmann_sales"]["outputs"] == {"bronze_rows": 2, "quarantined": 3}
    assert run["rows_written"]["bronze.rossmann_stores_raw"] == 1


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
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


def test_a_byte_order_mark_is_read_and_cr_only_line_endings_are_refused_plainly(
    spark, root, tmp_path
):
    folder = tmp_path / "bom"
    lines = ['1,"c","a",1270,9,2008,0,,,""', '2,"a","a",570,11,2007,1,13,2010,"Jan,Apr"']
    # A spreadsheet export: UTF-8 with a byte order mark, CRLF line ends.
    write(folder / "rossmann" / "store.csv", ("\ufeff" + STORE_HEADER.replace("\n", "\r\n")
          + "\r\n".join(lines) + "\r\n").encode())  # fmt: skip
    cfg = config(root, folder)
    run_job(spark, cfg, "ingest", ingest)
    rows = Lake(spark, cfg.root).read("bronze.rossmann_stores_raw").orderBy("_line_number")
    assert [(r["store"], r["_line_number"]) for r in rows.collect()] == [("1", 2), ("2", 3)]

    mac = tmp_path / "mac"
    write(mac / "rossmann" / "store.csv", (STORE_HEADER.replace("\n", "\r")
          + "\r".join(lines) + "\r").encode())  # fmt: skip
    other = config(tmp_path / "other_lake", mac)
    with pytest.raises(
        UnreadableFileError,
        match=r"rossmann/store.csv: .*end in a carriage return only .* convert them to LF",
    ):
        run_job(spark, other, "ingest", ingest)


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


RETAIL_HEADER = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
)


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_truncated_gzip_fails_naming_the_file_and_keeps_what_was_committed(spark, root, landing):
    cfg = config(root, landing)
    run_job(spark, cfg, "ingest", ingest)
    lake = Lake(spark, cfg.root)
    version = lake.version("bronze.rossmann_sales_raw")
    rows = lake.read("bronze.rossmann_sales_raw").count()
    # Cut in the header's first block, and far into the file (the task reading it fails).
    body = SALES_HEADER + "".join(
        f'{s % 1115 + 1},6,2015-08-01,{4000 + s},400,1,0,"0","0"\n' for s in range(80_000)
    )
    whole = gzip.compress(body.encode())
    for cut, match in ((200, "cannot read the header"), (len(whole) * 3 // 4, "after .* records")):
        (landing / "rossmann" / "train_2015-08-01.csv.gz").write_bytes(whole[:cut])
        with pytest.raises(
            UnreadableFileError, match=f"rossmann/train_2015-08-01.csv.gz: unreadable.*{match}"
        ):
            run_job(spark, cfg, "ingest", ingest)
    assert lake.version("bronze.rossmann_sales_raw") == version  # nothing half-ingested
    assert lake.read("bronze.rossmann_sales_raw").count() == rows
    failed = job_runs(spark, cfg).where(F.col("status") == "failed").first()
    assert "UnreadableFileError" in failed["error"]


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_empty_file_is_skipped_and_header_only_file_adds_nothing(spark, root, landing):
    write(landing / "rossmann" / "train_empty.csv", b"")
    write(landing / "rossmann" / "train_header_only.csv", SALES_HEADER.encode())
    cfg = config(root, landing)
    ctx, _ = run_job(spark, cfg, "ingest", ingest)
    files = {
        r[0]
        for r in Lake(spark, cfg.root)
        .read("bronze.rossmann_sales_raw")
        .select("_source_file")
        .distinct()
        .collect()
    }
    assert files == {"rossmann/train.csv.gz"}
    run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()
    checks = {c["name"].split(":")[0]: c for c in json.loads(run["conservation"])}
    assert checks["ingest rossmann_sales"]["inputs"] == {"file_records": 5}


def test_broken_line_with_a_customer_id_is_quarantined_pseudonymised(spark, root, tmp_path):
    from retail_lake.privacy import load_key, token

    folder = tmp_path / "retail"
    write(
        folder / "online_retail" / "day.csv",
        (
            RETAIL_HEADER
            + "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
            # a stray comma in the description: 9 fields, the id is second from the end
            + "536366,22633,HAND, WARMER,6,2010-12-01 08:28:00,1.85,13047.0,United Kingdom\n"
            + "536367,22634,CAF\xc9,1,2010-12-01 08:30:00,1.00,12583.0,France\n"
        ).encode("latin-1"),
    )
    cfg = config(root, folder)
    run_job(spark, cfg, "ingest", ingest)
    lake = Lake(spark, cfg.root)
    quarantine = lake.read("silver.quarantine").orderBy("_line_number").collect()
    assert [(r["_line_number"], r["rule"]) for r in quarantine] == [
        (3, "column_count"),
        (4, "undecodable"),
    ]
    key = load_key(cfg)
    # The id's position is not known on a broken line: the field 7th from the start and the
    # one 2nd from the end are both replaced (here the price too: over-masking is the safe side).
    assert quarantine[0]["payload"] == (
        f"536366,22633,HAND, WARMER,6,2010-12-01 08:28:00,{token('1.85', key)},"
        f"{token('13047', key)},United Kingdom"
    )
    assert "12583" not in quarantine[1]["payload"]
    assert token("12583", key) in quarantine[1]["payload"]
    # Declared Latin-1, the same file is read whole, accents intact.
    cfg = config(tmp_path / "lake2", folder, "sources.online_retail.encoding=latin-1")
    run_job(spark, cfg, "ingest", ingest)
    bronze = Lake(spark, cfg.root).read("bronze.online_retail_raw").orderBy("_line_number")
    assert [r["description"] for r in bronze.collect()] == ["HEART", "CAFÉ"]


def test_records_span_lines_inside_quotes_and_a_stray_quote_swallows_nothing():
    from retail_lake.ingest import SourceSpec, records_of

    spec = SourceSpec("s", "csv", "*", "t", ",", '"', "utf-8", True, ("a", "b", "c"))
    lines = [
        b"a,b,c\n",
        b'1,"two\n',  # line 2: a quoted field with a line break ...
        b'lines",3\n',  # ... closed on line 3
        b'4,"never closed,5\n',  # line 4: the quote never closes within 3 lines
        b"6,7,8\n",
        b"9,10,11\n",
        b'12,"\xff",13\n',  # not UTF-8
        b"14,15\n",  # 2 fields
    ]
    got = [(k, n, f, rule) for k, n, f, rule, _, _ in records_of(iter(lines), spec, 3)]
    assert got == [
        ("row", 2, ["1", "two\nlines", "3"], None),
        ("broken", 4, None, "unparseable"),
        ("row", 5, ["6", "7", "8"], None),
        ("row", 6, ["9", "10", "11"], None),
        ("broken", 7, None, "undecodable"),
        ("broken", 8, None, "column_count"),
    ]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_a_line_without_quotes_reads_as_the_csv_module_reads_it(delimiter):
    """Lines without a quote skip the csv module; their fields must be the module's."""
    import csv

    from retail_lake.ingest import SourceSpec, records_of

    spec = SourceSpec("s", "csv", "*", "t", delimiter, '"', "utf-8", False, ("a", "b", "c"))
    cells = ["", " ", "x", " y ", "a\x00b", "é", "1.5", "\t", ",", ";", "\ufeff", "a\rb"]
    texts = [delimiter.join(combo) for combo in itertools.product(cells, repeat=3)]
    texts += ["", "x", delimiter * 2, delimiter * 3, f"1{delimiter}2{delimiter}3\r"]
    lines = [t.encode() + b"\n" for t in texts]
    got = list(records_of(iter(lines), spec, 1))
    assert len(got) == len(texts)  # one record per line (none spans lines: no quotes)
    for (kind, line_no, fields, rule, _, _), text in zip(got, texts, strict=True):
        try:
            expected = next(csv.reader([text.rstrip("\r\n") + "\n"], delimiter=delimiter))
        except csv.Error:
            assert (kind, rule) == ("broken", "unparseable"), (line_no, text)
            continue
        if len(expected) == 3:
            assert (kind, fields) == ("row", expected), (line_no, text)
        else:
            assert (kind, rule) == ("broken", "column_count"), (line_no, text)


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_header_drift_evolves_bronze_when_the_source_says_so(spark, root, tmp_path):
    folder = tmp_path / "evolve"
    write(
        folder / "rossmann" / "store.csv",
        (STORE_HEADER + '1,"c","a",1270,9,2008,0,,,""\n').encode(),
    )
    cfg = config(root, folder, "sources.rossmann_stores.on_drift=evolve")
    run_job(spark, cfg, "ingest", ingest)
    # A later file renames PromoInterval and brings a new column.
    header = STORE_HEADER.replace('"PromoInterval"', '"PromoMonths","Store Manager"')
    write(folder / "rossmann" / "store_2.csv", (header + '2,"a","c",80,,,0,,,"","Ann"\n').encode())
    _, writes = run_job(spark, cfg, "ingest", ingest)
    assert writes["bronze.rossmann_stores_raw"].inserted == 1
    bronze = Lake(spark, cfg.root).read("bronze.rossmann_stores_raw").orderBy("_source_file")
    rows = [
        (r["_source_file"], r["store"], r["promo_interval"], r["promo_months"], r["store_manager"])
        for r in bronze.collect()
    ]
    assert rows == [
        ("rossmann/store.csv", "1", "", None, None),
        ("rossmann/store_2.csv", "2", None, "", "Ann"),
    ]
    # Cleanse reads its declared columns; the renamed one is null (no months) for store 2.
    from retail_lake.cleanse import run as cleanse

    run_job(spark, cfg, "cleanse", cleanse)
    stores = Lake(spark, cfg.root).read("silver.stores").orderBy("store").collect()
    assert [(r["store"], r["promo2_months"]) for r in stores] == [(1, []), (2, [])]


# --- Conservation against the file's own bytes --------------------------------------------

SPEC3 = ("a", "b", "c")


def parsed_records(data: bytes, header: bool = True, max_lines: int = 20) -> int:
    import io

    from retail_lake.ingest import SourceSpec, records_of

    spec = SourceSpec("s", "csv", "*", "t", ",", '"', "utf-8", header, SPEC3)
    return sum(1 for _ in records_of(iter(io.BytesIO(data).readlines()), spec, max_lines))


def counted(data: bytes, header: bool = True, max_lines: int = 20, chunk: int = 0) -> int:
    """The count from the bytes, fed whole or in chunks of `chunk` bytes."""
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    return count_csv_records(chunks, ",", '"', "utf-8", header, max_lines)


@pytest.mark.parametrize(
    ("data", "records"),
    [
        (b"", 0),  # empty file
        (b"a,b,c\n", 0),  # header only
        (b"a,b,c", 0),  # header only, no line break
        (b"a,b,c\n1,2,3\n4,5,6", 2),  # the last line has no line break
        (b"a,b,c\r\n1,2,3\r\n4,5,6\r\n", 2),  # CRLF
        (b'a,b,c\r\n1,"two\r\nlines",3\r\n4,5,6\r\n', 2),  # CRLF inside quotes
        (b'a,b,c\n1,"x\n\ny\n",3\n4,"5"",""6",7\n', 2),  # line breaks and doubled quotes
        (b'a,b,c\n1,"open at the end', 1),  # quote still open at the end of the file
        (b'a,b,c\n12" ruler,2,3\n4,5,6\n', 2),  # a quote inside an unquoted field is text
        (b'a,b,c\n1,"x"y,3\n4,5,6\n', 2),  # text after a closing quote: one broken line
        (b"a,b,c\n1,2\r3,4\n5,6,7\n", 2),  # a bare CR: one broken line
        (b"a,b,c\n\n\n1,2,3\n", 3),  # blank lines are (broken) records
        (b'a,b,c\n1,"\xff\n",3\n', 2),  # undecodable line inside quotes: both lines broken
    ],
)
def test_records_are_counted_from_the_bytes_as_the_parser_reads_them(data, records):
    assert parsed_records(data) == records
    for chunk in (0, 1, 2, 5):
        assert counted(data, chunk=chunk) == records


def test_an_unclosed_quote_counts_its_first_line_and_reads_the_rest_again():
    # Line 2 opens a quote that closes on line 6: too far for 3 lines per record, so line 2
    # is one (quarantined) record and lines 3.. are read again; line 6 then opens a quote
    # that never closes (one record) and line 7 is read again.
    data = b'a,b,c\n1,"open\n2,3,4\n5,6,7\n8,9,10\nclose",11\n12,13,14\n'
    assert parsed_records(data, max_lines=3) == 6
    assert [counted(data, max_lines=3, chunk=c) for c in (0, 1, 7)] == [6, 6, 6]
    # With room for 5 lines, lines 2-6 are one record.
    assert parsed_records(data, max_lines=5) == counted(data, max_lines=5) == 2


def test_the_count_agrees_with_the_parser_on_random_files():
    import random

    rng = random.Random(20240601)
    pieces = [b"a", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b'",', b',"', b"\xff", b"\xc3\xa9"]
    for _ in range(2000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        header, max_lines = rng.random() < 0.5, rng.randint(1, 4)
        expected = parsed_records(data, header, max_lines)
        assert counted(data, header, max_lines, rng.choice([0, 1, 3])) == expected, data


def patch_records_of(monkeypatch, change):
    """Makes the parser's record reader pass each file's records through `change`."""
    import retail_lake.ingest as ingest_module

    original = ingest_module.records_of

    def records_of(raw_lines, spec, max_record_lines, width=None):
        return change(list(original(raw_lines, spec, max_record_lines, width)))

    monkeypatch.setattr(ingest_module, "records_of", records_of)


def assert_nothing_written(spark, cfg, *files_named):
    lake = Lake(spark, cfg.root)
    for table in ("bronze.rossmann_sales_raw", "bronze.rossmann_stores_raw", "silver.quarantine"):
        assert not lake.exists(table)
    failed = job_runs(spark, cfg).where(F.col("job") == "ingest").collect()
    assert [r["status"] for r in failed] == ["failed"]
    assert "ConservationError" in failed[0]["error"]
    check = next(
        c
        for c in json.loads(failed[0]["conservation"])
        if c["name"].startswith("ingest rossmann_sales:")
    )
    assert check["holds"] is False
    for name in files_named:
        assert name in check["name"]
    return check


def test_a_parser_that_skips_a_record_fails_the_run_naming_the_file(
    spark, root, landing, monkeypatch
):
    # Drops the record of line 5 (a good row) of any file that has one.
    patch_records_of(monkeypatch, lambda records: [r for r in records if r[1] != 5])
    cfg = config(root, landing)
    with pytest.raises(
        ConservationError, match=r"rossmann/train.csv.gz: 5 records in the file, 4 parsed"
    ):
        run_job(spark, cfg, "ingest", ingest)
    check = assert_nothing_written(spark, cfg, "rossmann/train.csv.gz")
    assert check["inputs"] == {"file_records": 5}
    assert check["outputs"] == {"bronze_rows": 1, "quarantined": 3}


def test_a_parser_that_merges_lines_fails_even_when_another_file_evens_the_totals(
    spark, root, landing, monkeypatch
):
    # In train.csv.gz lines 2 and 3 become one record; the one record of the other file is
    # emitted twice. The source's totals agree (6 = 6), each file's do not.
    write(
        landing / "rossmann" / "train_2015-08-01.csv",
        (SALES_HEADER + '1,6,2015-08-01,4000,400,1,0,"0","0"\n').encode(),
    )

    def merge_or_repeat(records):
        if len(records) == 1:
            return records * 2
        first, second, *rest = records
        merged = ("broken", first[1], None, "unparseable", "merged", first[5] + "\n" + second[5])
        return [merged, *rest]

    patch_records_of(monkeypatch, merge_or_repeat)
    cfg = config(root, landing)
    with pytest.raises(ConservationError) as failure:
        run_job(spark, cfg, "ingest", ingest)
    assert "rossmann/train.csv.gz: 5 records in the file, 4 parsed" in str(failure.value)
    assert "rossmann/train_2015-08-01.csv: 1 records in the file, 2 parsed" in str(failure.value)
    check = assert_nothing_written(
        spark, cfg, "rossmann/train.csv.gz", "rossmann/train_2015-08-01.csv"
    )
    assert check["inputs"] == {"file_records": 6}
    assert check["outputs"] == {"bronze_rows": 3, "quarantined": 3}


def test_quoted_line_breaks_crlf_last_line_empty_and_header_only_files_conserve(
    spark, root, tmp_path
):
    folder = tmp_path / "edges"
    write(
        folder / "rossmann" / "train.csv.gz",
        (
            SALES_HEADER.replace("\n", "\r\n")
            + '1,5,2015-07-31,5263,555,1,1,"0\r\nzero","1"\r\n'  # lines 2-3: one record
            + '2,5,2015-07-31,6064,625,1,1,"0","1"\r\n'  # line 4
            + '3,5,2015-07-31,8314,821,1,1,"0","1"'  # line 5: no line break
        ).encode(),
    )
    write(folder / "rossmann" / "train_empty.csv", b"")
    write(folder / "rossmann" / "train_header_only.csv", SALES_HEADER.encode())
    cfg = config(root, folder)
    ctx, _ = run_job(spark, cfg, "ingest", ingest)
    bronze = Lake(spark, cfg.root).read("bronze.rossmann_sales_raw").orderBy("_line_number")
    assert [(r["_line_number"], r["state_holiday"]) for r in bronze.collect()] == [
        (2, "0\nzero"),  # the parser drops the CR of a line end inside quotes
        (4, "0"),
        (5, "0"),
    ]
    run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()
    checks = {c["name"].split(":")[0]: c for c in json.loads(run["conservation"])}
    assert checks["ingest rossmann_sales"] == {
        "name": "ingest rossmann_sales: records in the files = bronze rows added + quarantined",
        "inputs": {"file_records": 3},
        "outputs": {"bronze_rows": 3, "quarantined": 0},
        "holds": True,
    }


def test_a_blank_header_line_with_records_after_it_is_not_skipped(spark, root, tmp_path):
    folder = tmp_path / "blank"
    write(folder / "rossmann" / "store.csv", b'\n1,"c","a",1270,9,2008,0,,,""\n')
    cfg = config(root, folder)
    with pytest.raises(
        SchemaDriftError, match=r"rossmann/store.csv: the header line is empty but 1 record"
    ):
        run_job(spark, cfg, "ingest", ingest)


# A fourth store-sales data set with its own quirks, declared in the config alone: lines end
# in a carriage return only, ';' between fields, Latin-1 text, NA for missing values.
SHOP_SOURCE = (
    "sources.shop_sales={pattern: 'shop_sales/*.csv*', table: bronze.shop_sales_raw, "
    "delimiter: ';', encoding: latin-1, line_ending: cr, null_markers: [NA], "
    "columns: [Shop, Day, Turnover, Town]}"
)


def test_a_source_declared_in_the_config_alone_reaches_bronze(spark, root, tmp_path):
    landing = tmp_path / "shop_landing"
    lines = [
        "Shop;Day;Turnover;Town",
        "7;2024-03-01;1200;München",
        "7;2024-03-02;NA;München",
        "8;2024-03-01;980",  # a field short: quarantined at ingest
        '9;2024-03-01;"NA";Köln',  # a quoted NA is a marker too: the csv value is NA
    ]
    write(landing / "shop_sales" / "week09.csv", ("\r".join(lines) + "\r").encode("latin-1"))
    cfg = config(root, landing, SHOP_SOURCE)
    assert cfg.get("sources.shop_sales.quote") == '"'  # the defaults of an added source
    ctx, writes = run_job(spark, cfg, "ingest", ingest)

    lake = Lake(spark, cfg.root)
    bronze = lake.read("bronze.shop_sales_raw").orderBy("_line_number")
    assert [
        tuple(r) for r in bronze.select("shop", "day", "turnover", "town", "_line_number").collect()
    ] == [
        ("7", "2024-03-01", "1200", "München", 2),
        ("7", "2024-03-02", None, "München", 3),
        ("9", "2024-03-01", None, "Köln", 5),
    ]
    assert {r["_source_file"] for r in bronze.collect()} == {"shop_sales/week09.csv"}
    quarantine = lake.read("silver.quarantine").collect()
    assert [(r["source"], r["_line_number"], r["rule"]) for r in quarantine] == [
        ("shop_sales", 4, "column_count")
    ]
    # The contract was derived from the declared columns: comments name the header as it
    # arrived, and Spark's catalog shows them to an analyst.
    described = {
        r["col_name"]: r["comment"]
        for r in spark.sql(
            f"DESCRIBE TABLE delta.`{lake.location('bronze.shop_sales_raw')}`"
        ).collect()
    }
    assert described["turnover"] == "as it arrived: Turnover"
    run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()
    checks = {c["name"].split(":")[0]: c for c in json.loads(run["conservation"])}
    assert checks["ingest shop_sales"]["inputs"] == {"file_records": 4}
    assert checks["ingest shop_sales"]["outputs"] == {"bronze_rows": 3, "quarantined": 1}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("sources.shop={pattern: 'a/*', table: bronze.shop}", r"missing \['columns'\]"),
        (
            "sources.shop={pattern: 'a/*', table: bronze.shop, columns: [A], nulls: [NA]}",
            r"unknown key\(s\) \['nulls'\]",
        ),
        ("sources.shop={pattern: 'a/*', table: silver.shop, columns: [A]}", "bronze.<name>"),
        (
            "sources.shop={pattern: 'a/*', table: bronze.online_retail_raw, columns: [A]}",
            "already the table of source online_retail",
        ),
        (
            "sources.shop={pattern: 'a/*', table: bronze.shop, columns: [A], line_ending: lf}",
            "line_ending must be one of",
        ),
        (
            "sources.shop={pattern: 'a/*', table: bronze.shop, columns: [A], format: idx}",
            "read as csv",
        ),
    ],
)
def test_an_added_source_with_a_wrong_key_is_a_config_error_naming_it(root, item, message):
    from retail_lake.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config("test", [f"paths.root={root}", item])
