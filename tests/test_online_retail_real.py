"""Online Retail ingest + cleanse on the full real file: exact counts per outcome,
conservation and pseudonymisation. (The idempotent re-run of these jobs on real Online Retail
lines, 232k of them, is checked by the demo pipeline test, which re-runs the whole DAG.)

The expected counts were derived from the raw file with Python's csv module, applying the
documented rules independently of Spark (SOURCE.md's published figures agree where they
overlap: 541,909 lines, 5,268 duplicate lines of which 5 are among quarantined ones, 3
bad-debt lines, 1,336 non-cancelled negative quantities, 9,288 cancellations).
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.privacy import load_key, token
from retail_lake.runner import job_runs

from .conftest import shared_data, shared_lake

pytestmark = pytest.mark.slow

LINES = 541_909
SALES, RETURNS, QUARANTINED, DUPLICATES = 524_877, 9_251, 2_518, 5_263
TABLES = (
    "bronze.online_retail_raw",
    "silver.transactions",
    "silver.returns",
    "silver.customers",
    "silver.products",
    "silver.quarantine",
)


@pytest.fixture(scope="module")
def retail_lake(spark):
    """The real file ingested and cleansed, built in a process of its own from the start of
    the session (tests/lake_builds.py)."""
    shared_data("online_retail", "online_retail.csv.gz")  # a skip when it is not there
    root, built = shared_lake("online_retail_real")
    landing = root.parent / "landing"
    cfg = load_config("test", [f"paths.root={root}", f"paths.landing={landing}"])
    return cfg, Lake(spark, cfg.root), built["runs"]["ingest"], built["runs"]["cleanse"]


def test_every_line_is_accounted_for(spark, retail_lake):
    cfg, lake, ingest_id, cleanse_id = retail_lake
    assert lake.read("bronze.online_retail_raw").count() == LINES
    assert lake.read("silver.transactions").count() == SALES
    assert lake.read("silver.returns").count() == RETURNS
    quarantine = lake.read("silver.quarantine").where(F.col("source") == "online_retail")
    by_rule = {r["rule"]: r["count"] for r in quarantine.groupBy("rule").count().collect()}
    assert by_rule == {
        "non_positive_price": 1_179,
        "non_positive_quantity": 1_336,
        "bad_debt_adjustment": 3,
    }
    runs = {r["run_id"]: r for r in job_runs(spark, cfg).collect()}
    (check,) = json.loads(runs[cleanse_id]["conservation"])
    assert check["holds"] and check["inputs"] == {"bronze_rows": LINES}
    assert check["outputs"] == {
        "silver.transactions_rows": SALES,
        "silver.returns_rows": RETURNS,
        "quarantined": QUARANTINED,
        "duplicates_removed": DUPLICATES,
    }
    (ingested,) = json.loads(runs[ingest_id]["conservation"])
    assert ingested["outputs"] == {"bronze_rows": LINES, "quarantined": 0}


def test_sales_returns_guests_and_non_products(spark, retail_lake):
    _, lake, _, _ = retail_lake
    sales = lake.read("silver.transactions")
    returns = lake.read("silver.returns")
    assert sales.where(F.col("is_guest")).count() == 132_185
    assert sales.where(~F.col("is_product")).count() == 2_373
    kinds = {r[0] for r in sales.select("non_product_kind").distinct().collect()} - {None}
    assert {"postage", "manual", "bank_charges", "marketplace_fee"} <= kinds
    status = {
        r["link_status"]: r["count"] for r in returns.groupBy("link_status").count().collect()
    }
    assert status == {"linked": 7_481, "not_found": 1_391, "guest": 379}
    totals = sales.agg(F.sum("line_total")).first()[0], returns.agg(F.sum("line_total")).first()[0]
    assert totals == (Decimal("10631048.744"), Decimal("-893979.730"))
    # A linked return points at a real earlier sale of the same product to the same customer.
    linked = returns.where(F.col("link_status") == "linked").alias("r")
    joined = linked.join(
        sales.alias("s"), on=F.col("r.original_line_id") == F.col("s.line_id"), how="inner"
    )
    assert joined.count() == 7_481
    mismatched = joined.where(
        (F.col("r.customer_token") != F.col("s.customer_token"))
        | (F.col("r.stock_code") != F.col("s.stock_code"))
        | (F.col("s.invoice_date") > F.col("r.invoice_date"))
        | (F.col("s.quantity") < -F.col("r.quantity"))
    )
    assert mismatched.count() == 0


def test_customers_and_products(spark, retail_lake):
    _, lake, _, _ = retail_lake
    customers = lake.read("silver.customers")
    products = lake.read("silver.products")
    assert customers.count() == 4_371
    assert products.count() == 3_791
    assert products.where(~F.col("stock_code").rlike("^[0-9]{5}[A-Z]{0,3}$")).count() == 0
    heart = products.where(F.col("stock_code") == "85123A").first()
    assert heart["description"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert heart["description_variants"] >= 2  # the data spells it more than one way


def test_no_raw_customer_id_in_silver_and_tokens_are_stable(spark, retail_lake):
    cfg, lake, _, _ = retail_lake
    bronze = lake.read("bronze.online_retail_raw")
    known = bronze.where(F.trim("customer_id") != "")
    raw_ids = known.select(F.trim("customer_id").alias("v")).distinct()
    raw_ids = raw_ids.unionByName(raw_ids.select(F.regexp_replace("v", r"\.0$", "").alias("v")))
    # Row by row (through the lineage columns): no text column holds the line's own raw id
    # in either spelling (a stock code may equal somebody else's id: 5-digit numbers).
    ids = known.select(
        "_source_file",
        "_line_number",
        F.trim("customer_id").alias("raw"),
        F.regexp_replace(F.trim("customer_id"), r"\.0$", "").alias("canonical"),
    )
    for table in ("silver.transactions", "silver.returns", "silver.quarantine"):
        df = lake.read(table).join(ids, on=["_source_file", "_line_number"], how="inner")
        texts = [
            f.name for f in lake.read(table).schema.fields if f.dataType.typeName() == "string"
        ]
        hits = F.lit(False)
        for name in texts:
            hits = (
                hits
                | F.col(name).isin(F.col("raw"), F.col("canonical"))
                | F.col(name).contains(F.concat(F.lit('"'), F.col("raw"), F.lit('"')))
            )
        assert df.where(hits).count() == 0, f"{table} holds raw customer ids"
    tokens = lake.read("silver.customers").select(F.col("customer_token").alias("v"))
    assert tokens.join(raw_ids, "v", "left_semi").count() == 0
    payload_ids = lake.read("silver.quarantine").select(
        F.get_json_object("payload", "$.customer_id").alias("v")
    )
    assert payload_ids.join(raw_ids, "v", "left_semi").count() == 0
    key = load_key(cfg)
    first = bronze.where(F.col("_line_number") == 2).first()  # 536365, customer 17850.0
    line = lake.read("silver.transactions").where(F.col("line_id") == first["_source_file"] + "#2")
    assert line.first()["customer_token"] == token("17850", key)
