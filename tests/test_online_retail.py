"""Online Retail cleansing rules and pseudonymisation on inline bronze rows, exact rows out."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import stat
from datetime import date, datetime
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from retail_lake.config import ConfigError, load_config
from retail_lake.lake import content_hash
from retail_lake.privacy import (
    KEY_ID_FILE,
    LAKE_ID_FILE,
    LEGACY_KEY_FILE,
    hmac_column,
    key_id,
    load_key,
    pseudonymiser,
    token,
)
from retail_lake.sources.online_retail.cleanse import RAW, cleanse_lines, customers, products

AT = datetime(2026, 1, 1)
KEY = b"test-key-0123456789abcdef"
CODES = load_config("test").get("online_retail.non_product_codes")
BRONZE_SCHEMA = ", ".join(f"{c} string" for c in RAW) + ", _source_file string, _line_number bigint"
T = token  # short alias for expected tokens


def bronze(spark, rows):
    df = spark.createDataFrame(rows, BRONZE_SCHEMA)
    return df.withColumn("_row_hash", content_hash(list(RAW)))


ROWS = [
    # invoice, stock, description, qty, date, price, customer, country, file, line
    ("536365", "85123a", "  white  hanging heart ", "6", "2010-12-01 08:26:00", "2.55",
     "17850.0", "United Kingdom", "f.csv", 2),
    ("536365", "POST", "POSTAGE", "1", "2010-12-01 08:26:00", "18.0", "17850.0",
     "United Kingdom", "f.csv", 3),
    ("536366", "22633", "HAND WARMER", "2", "2010-12-02 09:00:00", "1.85", "", "France",
     "f.csv", 4),
    ("C536379", "85123A", "WHITE HANGING HEART", "-2", "2010-12-03 10:00:00", "2.55",
     "17850.0", "United Kingdom", "f.csv", 5),
    ("C536380", "22633", "HAND WARMER", "-1", "2010-12-03 11:00:00", "1.85", "",
     "France", "f.csv", 6),
    ("C536381", "21000", "OLD ITEM", "-1", "2010-12-03 12:00:00", "1.00", "12346.0",
     "Norway", "f.csv", 7),
    ("A563186", "B", "Adjust bad debt", "1", "2011-08-12 14:51:00", "-11062.06", "",
     "United Kingdom", "f.csv", 8),
    ("536390", "22999", "damaged", "-5", "2010-12-04 10:00:00", "0.0", "",
     "United Kingdom", "f.csv", 9),
    ("536391", "22998", "FREE GIFT", "3", "2010-12-04 10:00:00", "0.0", "12346.0",
     "Norway", "f.csv", 10),
    ("536392", "22997", "THING", "12x", "2010-12-04 10:00:00", "1.0", "12346.0",
     "Norway", "f.csv", 11),
    ("536393", "22996", "THING", "1", "2010-12-04 10:00:00", "1.0", "12346.5",
     "Norway", "f.csv", 12),
    ("536365", "85123a", "  white  hanging heart ", "6", "2010-12-01 08:26:00", "2.55",
     "17850.0", "United Kingdom", "f.csv", 13),  # exact duplicate of line 2
    ("536400", "85123A", "WHITE HANGING HEART T-LIGHT", "1", "2010-12-05 10:00:00", "2.95",
     "12346.0", "Norway", "g.csv", 2),
]  # fmt: skip


@pytest.fixture(scope="module")
def cleansed(spark):
    return cleanse_lines(bronze(spark, ROWS), AT, pseudonymiser(KEY), CODES)


def test_hmac_in_spark_equals_rfc_2104(spark):
    values = ["17850", "12346", "", "ü-ñ", "x" * 200]
    long_key = b"k" * 100  # longer than a block: hashed first, as RFC 2104 says
    for key in (KEY, long_key):
        df = spark.createDataFrame([(v,) for v in values], "v string")
        got = pseudonymiser(key).keyed(df).select("v", hmac_column(F.col("v")).alias("h")).collect()
        assert {r["v"]: r["h"] for r in got} == {
            v: hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in values
        }


def test_token_is_stable_and_ignores_the_float_export(spark):
    assert token("17850.0", KEY) == token("17850", KEY) == token(" 17850 ", KEY)
    assert token("17850", KEY) != token("17850", b"another-key-0123456789")
    df = spark.createDataFrame([("17850.0",), ("17850",), ("",), (None,)], "c string")
    pseudonymise = pseudonymiser(KEY)
    got = [r[0] for r in pseudonymise.keyed(df).select(pseudonymise(F.col("c"))).collect()]
    assert got == [token("17850", KEY), token("17850", KEY), None, None]


def _secret_forms(key: bytes) -> list[str]:
    """The key and its HMAC pads as they could appear in text: raw, hex, base64."""
    import base64

    from retail_lake.privacy import _pads

    forms = []
    for secret in (key, *_pads(key)):
        forms += [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()]
    return [*forms, key.decode()]


def test_the_key_is_in_no_plan_that_spark_shows(cleansed, capsys):
    """explain (parsed, analysed, optimised and physical plans, before and after running,
    as the UI and the event log show queries) holds neither the key nor its pads."""
    for df in cleansed:  # sales, returns, quarantine, duplicates
        df.explain(mode="extended")
        df.collect()  # the plan as executed (adaptive execution's final plan)
        df.explain(mode="extended")
        text = capsys.readouterr().out
        assert "Physical Plan" in text
        leaked = [form for form in _secret_forms(KEY) if form in text]
        assert leaked == [], leaked


# A session of its own with Spark's event log on: Online Retail lines cleansed (tokens made
# with the key from the environment, as on a cluster), the log written as the session stops.
EVENT_LOG_RUN = """
import sys
from retail_lake.config import load_config
from retail_lake.privacy import load_key, pseudonymiser
from retail_lake.session import build_session
from retail_lake.sources.online_retail.cleanse import cleanse_lines
from tests.test_online_retail import AT, CODES, ROWS, bronze

root, events = sys.argv[1], sys.argv[2]
cfg = load_config("test", [f"paths.root={root}", "spark.conf.spark.eventLog.enabled=true",
                           f"spark.conf.spark.eventLog.dir={events}",
                           "spark.conf.spark.eventLog.compress=false"])
spark = build_session(cfg, "event log", register=False)
for df in cleanse_lines(bronze(spark, ROWS), AT, pseudonymiser(load_key(cfg)), CODES):
    df.collect()
spark.stop()
"""


@pytest.mark.slow  # a session of its own (a JVM start)
def test_the_key_is_in_no_event_log(tmp_path):
    """Spark's event log (what the history server shows: every query's plans, the
    environment) of a session that made tokens holds neither the key nor its pads."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    events = tmp_path / "events"
    events.mkdir()
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(EVENT_LOG_RUN))
    repo = Path(__file__).resolve().parents[1]
    path = f"{repo / 'lib'}:{repo}"
    env = {**os.environ, "PYTHONPATH": path, "RETAIL_LAKE_PSEUDONYM_KEY": KEY.decode()}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "lake"), f"file://{events}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # Spark 4 writes rolling logs: a folder of events_<n>_<app> files.
    logs = sorted(p for p in events.rglob("events_*") if not p.name.endswith(".crc"))
    assert logs, done.stderr[-2000:]
    text = "".join(p.read_text() for p in logs)
    assert "SparkListenerSQLExecutionStart" in text and "physicalPlanDescription" in text
    leaked = [form for form in _secret_forms(KEY) if form in text]
    assert leaked == [], leaked


def test_sales_lines_are_typed_normalised_and_pseudonymised(spark, cleansed):
    sales, _, _, _ = cleansed
    expected = spark.createDataFrame(
        [
            (
                "f.csv#2",
                "536365",
                "85123A",
                "WHITE HANGING HEART",
                6,
                datetime(2010, 12, 1, 8, 26),
                date(2010, 12, 1),
                Decimal("2.550"),
                Decimal("15.300"),
                T("17850", KEY),
                False,
                "United Kingdom",
                True,
                None,
            ),
            (
                "f.csv#3",
                "536365",
                "POST",
                "POSTAGE",
                1,
                datetime(2010, 12, 1, 8, 26),
                date(2010, 12, 1),
                Decimal("18.000"),
                Decimal("18.000"),
                T("17850", KEY),
                False,
                "United Kingdom",
                False,
                "postage",
            ),
            (
                "f.csv#4",
                "536366",
                "22633",
                "HAND WARMER",
                2,
                datetime(2010, 12, 2, 9, 0),
                date(2010, 12, 2),
                Decimal("1.850"),
                Decimal("3.700"),
                None,
                True,
                "France",
                True,
                None,
            ),
            (
                "g.csv#2",
                "536400",
                "85123A",
                "WHITE HANGING HEART T-LIGHT",
                1,
                datetime(2010, 12, 5, 10, 0),
                date(2010, 12, 5),
                Decimal("2.950"),
                Decimal("2.950"),
                T("12346", KEY),
                False,
                "Norway",
                True,
                None,
            ),
        ],
        "line_id string, invoice_no string, stock_code string, description string, "
        "quantity int, invoice_date timestamp, invoice_day date, unit_price decimal(12,3), "
        "line_total decimal(18,3), customer_token string, is_guest boolean, country string, "
        "is_product boolean, non_product_kind string",
    )
    assertDataFrameEqual(sales.drop("_source_file", "_line_number"), expected)


def test_cancellations_become_linked_returns(spark, cleansed):
    _, returns, _, _ = cleansed
    got = returns.select(
        "line_id",
        "quantity",
        "line_total",
        "original_line_id",
        "original_invoice_no",
        "link_status",
    )
    expected = spark.createDataFrame(
        [
            ("f.csv#5", -2, Decimal("-5.100"), "f.csv#2", "536365", "linked"),
            ("f.csv#6", -1, Decimal("-1.850"), None, None, "guest"),
            ("f.csv#7", -1, Decimal("-1.000"), None, None, "not_found"),
        ],
        "line_id string, quantity int, line_total decimal(18,3), original_line_id string, "
        "original_invoice_no string, link_status string",
    )
    assertDataFrameEqual(got, expected)


def test_rejected_lines_are_quarantined_with_reasons_and_no_raw_customer_id(spark, cleansed):
    _, _, quarantine, duplicates = cleansed
    rows = quarantine.orderBy("_line_number").collect()
    assert [(r["_line_number"], r["rule"], r["column"], r["reason"]) for r in rows] == [
        (8, "bad_debt_adjustment", "invoice_no",
         "invoice_no: 'A563186' is a bad-debt adjustment (A...), not a sale"),
        (9, "non_positive_quantity", "quantity",
         "quantity: '-5' is not positive on a sales line (stock adjustment); "
         "unit_price: '0.0' is not positive"),
        (10, "non_positive_price", "unit_price", "unit_price: '0.0' is not positive"),
        (11, "unparseable_quantity", "quantity", "quantity: '12x' is not an integer"),
        (12, "unparseable_customer_id", "customer_id",
         "customer_id: the value is not an integer id"),
    ]  # fmt: skip
    assert {r["source"] for r in rows} == {"online_retail"}
    payloads = {r["_line_number"]: json.loads(r["payload"]) for r in rows}
    assert payloads[10]["customer_id"] == T("12346", KEY)
    assert payloads[12]["customer_id"] == T("12346.5", KEY)
    assert payloads[8]["customer_id"] is None  # blank stays blank
    assert all("12346" not in r["payload"] and "12346" not in r["reason"] for r in rows)
    # The exact duplicate of line 2 is removed (the first occurrence is kept) and counted.
    assert [(r["_source_file"], r["_line_number"]) for r in duplicates.collect()] == [("f.csv", 13)]


def test_conservation_on_inline_rows(cleansed):
    sales, returns, quarantine, duplicates = cleansed
    assert sales.count() + returns.count() + quarantine.count() + duplicates.count() == len(ROWS)


def test_products_have_one_canonical_description_and_exclude_non_products(spark, cleansed):
    sales, _, _, _ = cleansed
    more = spark.createDataFrame(
        [("85123A", "WHITE HANGING HEART", True, datetime(2011, 1, 1))],
        "stock_code string, description string, is_product boolean, invoice_date timestamp",
    )
    lines = sales.select("stock_code", "description", "is_product", "invoice_date")
    got = products(lines.unionByName(more))
    expected = spark.createDataFrame(
        [
            ("22633", "HAND WARMER", 1, datetime(2010, 12, 2, 9), datetime(2010, 12, 2, 9)),
            # 2 x WHITE HANGING HEART beat 1 x ... T-LIGHT; POST is not a product.
            (
                "85123A",
                "WHITE HANGING HEART",
                2,
                datetime(2010, 12, 1, 8, 26),
                datetime(2011, 1, 1),
            ),
        ],
        "stock_code string, description string, description_variants int, "
        "first_sold_at timestamp, last_sold_at timestamp",
    )
    assertDataFrameEqual(got, expected)


def test_customers_are_known_tokens_with_their_main_country(spark, cleansed):
    sales, returns, _, _ = cleansed
    got = customers(sales, returns)
    expected = spark.createDataFrame(
        [
            (
                T("17850", KEY),
                "United Kingdom",
                1,
                datetime(2010, 12, 1, 8, 26),
                datetime(2010, 12, 3, 10),
                2,
                1,
            ),
            (
                T("12346", KEY),
                "Norway",
                1,
                datetime(2010, 12, 3, 12),
                datetime(2010, 12, 5, 10),
                1,
                1,
            ),
        ],
        "customer_token string, country string, countries int, first_seen_at timestamp, "
        "last_seen_at timestamp, sales_lines bigint, return_lines bigint",
    )
    assertDataFrameEqual(got, expected)


def test_local_key_is_generated_once_outside_the_lake_with_mode_0600(tmp_path):
    lake, keys = tmp_path / "lake", tmp_path / "keys"
    cfg = load_config("test", [f"paths.root={lake}", f"privacy.key_dir={keys}"])
    first = load_key(cfg, environ={})
    assert load_key(cfg, environ={}) == first and len(first) == 64
    (key_file,) = keys.iterdir()
    assert key_file.name == (lake / LAKE_ID_FILE).read_text().strip() + ".key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not [p for p in lake.rglob("*") if p.is_file() and first in p.read_bytes()]
    var = cfg.get("privacy.key_env")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_key(cfg, environ={var: "short"})
    # Another key on a root whose key is recorded: refused, naming both ids (never the key).
    with pytest.raises(ConfigError, match="not the key this lake's tokens were made with") as e:
        load_key(cfg, environ={var: "cluster-secret-value-1234"})
    assert key_id(first) in str(e.value) and first.decode() not in str(e.value)
    # A mistyped privacy.key_env falls back to the file: the same key, accepted.
    typo = load_config(
        "test", [f"paths.root={lake}", f"privacy.key_dir={keys}", "privacy.key_env=TYPO_KEY"]
    )
    assert load_key(typo, environ={var: "cluster-secret-value-1234"}) == first
    # A copy of the lake on a machine without its key file: refused, naming the key id.
    copy = shutil.copytree(lake, tmp_path / "copy")
    elsewhere = load_config("test", [f"paths.root={copy}", f"privacy.key_dir={tmp_path / 'k2'}"])
    with pytest.raises(ConfigError, match="a copy of a lake does not carry its key") as e:
        load_key(elsewhere, environ={})
    assert key_id(first) in str(e.value)
    # A fresh root takes the environment's key and records it; the file is never made.
    fresh = load_config("test", [f"paths.root={tmp_path / 'fresh'}", f"privacy.key_dir={keys}"])
    key = load_key(fresh, environ={var: "cluster-secret-value-1234"})
    assert key == b"cluster-secret-value-1234"
    assert (tmp_path / "fresh" / KEY_ID_FILE).read_text().strip() == key_id(key)
    with pytest.raises(ConfigError, match="not at"):
        load_key(fresh, environ={})  # the variable unset: a generated key would differ
    assert [p.name for p in keys.iterdir()] == [key_file.name]
    # A lake made before key ids were recorded: its key file's id is recorded first, so
    # another key is refused there too.
    (lake / KEY_ID_FILE).unlink()
    with pytest.raises(ConfigError, match="not the key this lake's tokens were made with"):
        load_key(cfg, environ={var: "cluster-secret-value-1234"})
    assert (lake / KEY_ID_FILE).read_text().strip() == key_id(first)
    assert sorted(p.name for p in (lake / KEY_ID_FILE).parent.iterdir()) == [
        "key_id",
        "lake_id",
    ]  # no temporary file left behind, no key
    # A lake an older release made keeps its key, moved out of the root.
    old = tmp_path / "old"
    (old / LEGACY_KEY_FILE).parent.mkdir(parents=True)
    (old / LEGACY_KEY_FILE).write_text("legacy-key-0123456789abcdef\n")
    legacy = load_config("test", [f"paths.root={old}", f"privacy.key_dir={keys}"])
    assert load_key(legacy, environ={}) == b"legacy-key-0123456789abcdef"
    assert not (old / LEGACY_KEY_FILE).exists()
    assert load_key(legacy, environ={}) == b"legacy-key-0123456789abcdef"
    remote = load_config("test", ["paths.root=hdfs://nn:8020/lake"])
    with pytest.raises(ConfigError, match=f"set \\${var}"):
        load_key(remote, environ={})
