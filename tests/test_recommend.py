"""Interactions, stable indices, the incremental update of gold.interactions, and the
popularity baselines, on hand-built silver lines (real Spark and Delta)."""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.recommend.als import (
    RecommendConfig,
    RecommendConfigError,
    country_top_n,
    popularity_top_n,
)
from retail_lake.recommend.interactions import interactions, new_indices, preference_py
from retail_lake.recommend.job import interaction_outputs
from retail_lake.recommend.model_tables import INTERACTIONS
from retail_lake.registry import COMPONENTS, CONTRACTS
from retail_lake.runner import JobContext

UK = "United Kingdom"


def line(n, invoice, code, qty, at, price, customer, country=UK, product=True):
    when = datetime.fromisoformat(at)
    price = Decimal(price)
    return {
        "line_id": f"f.csv#{n}",
        "invoice_no": invoice,
        "stock_code": code,
        "description": f"ITEM {code}",
        "quantity": qty,
        "invoice_date": when,
        "invoice_day": when.date(),
        "unit_price": price,
        "line_total": price * qty,
        "customer_token": customer,
        "is_guest": customer is None,
        "country": country,
        "is_product": product,
        "non_product_kind": None if product else "postage",
        "_source_file": "f.csv",
        "_line_number": n,
    }


def frame(spark, table, rows, **extra):
    contract = CONTRACTS[table]
    names = [
        c.name
        for c in contract.columns
        if not c.name.startswith("_")
        or c.name
        in (
            "_source_file",
            "_line_number",
        )
    ]
    names = [n for n in names if n in rows[0] or n in extra]
    data = [{**extra, **r} for r in rows]
    schema = contract.spark_schema()
    fields = [schema[n] for n in names]
    from pyspark.sql.types import StructType

    return spark.createDataFrame([[d[n] for n in names] for d in data], StructType(fields))


def return_line(n, invoice, code, qty, at, price, customer):
    return {
        **line(n, invoice, code, qty, at, price, customer),
        "original_line_id": None,
        "original_invoice_no": None,
        "link_status": "not_found" if customer else "guest",
    }


SALES = [
    line(1, "I1", "P1", 2, "2011-01-10 09:00", "2.000", "c1"),
    line(2, "I1", "P2", 1, "2011-01-10 09:00", "4.000", "c1"),
    line(3, "I1", "POST", 1, "2011-01-10 09:00", "9.000", "c1", product=False),
    line(4, "I2", "P1", 3, "2011-02-01 10:00", "2.000", "c1"),
    line(5, "I2", "P1", 1, "2011-02-01 10:00", "2.000", "c1"),  # same invoice: one invoice
    line(6, "I3", "P2", 5, "2011-01-05 08:00", "4.000", "c2", "France"),
    line(7, "I4", "P3", 1, "2011-01-20 08:00", "7.000", "c3"),
    line(8, "I5", "P1", 9, "2011-01-03 08:00", "2.000", None),  # guest
]
RETURNS = [return_line(9, "C1", "P1", -2, "2011-02-02 10:00", "2.000", "c1")]


def test_interactions_count_invoices_units_and_returns(spark):
    sales = frame(spark, "silver.transactions", SALES)
    returns = frame(spark, "silver.returns", RETURNS)
    rows = interactions(sales, returns, None, None, "log_invoices").orderBy(
        "customer_token", "stock_code"
    )
    got = [tuple(r) for r in rows.drop("first_purchase_at", "last_purchase_at").collect()]
    assert got == [
        ("c1", "P1", 2, 6, 2, 1 + math.log(2)),
        ("c1", "P2", 1, 1, 0, 1.0),
        ("c2", "P2", 1, 5, 0, 1.0),
        ("c3", "P3", 1, 1, 0, 1.0),
    ]
    first, last = rows.select("first_purchase_at", "last_purchase_at").first()
    assert (first, last) == (datetime(2011, 1, 10, 9), datetime(2011, 2, 1, 10))
    # A period: only January's lines; the February return falls outside it.
    january = interactions(sales, returns, date(2011, 1, 1), date(2011, 1, 31), "invoices")
    assert {
        (r["customer_token"], r["stock_code"], r["invoices"], r["units_returned"], r["preference"])
        for r in january.collect()
    } == {
        ("c1", "P1", 1, 0, 1.0),
        ("c1", "P2", 1, 0, 1.0),
        ("c2", "P2", 1, 0, 1.0),
        ("c3", "P3", 1, 0, 1.0),
    }
    assert preference_py(4, "log_invoices") == pytest.approx(1 + math.log(4))
    with pytest.raises(ValueError, match="recommend.preference"):
        interactions(sales, returns, None, None, "units")


def test_new_keys_get_the_next_indices_and_old_keys_keep_theirs(spark):
    seen = spark.createDataFrame(
        [
            ("b", datetime(2011, 1, 2)),
            ("a", datetime(2011, 1, 2)),
            ("c", datetime(2011, 1, 1)),
            ("a", datetime(2011, 3, 1)),
        ],
        "k string, first_seen timestamp",
    )
    first = new_indices(None, seen, "k", "idx", "first_seen")
    assert sorted((r["k"], r["idx"]) for r in first.collect()) == [("a", 1), ("b", 2), ("c", 0)]
    later = seen.unionByName(
        spark.createDataFrame(
            [("d", datetime(2010, 1, 1)), ("e", datetime(2012, 1, 1))],
            "k string, first_seen timestamp",
        )
    )
    added = new_indices(first, later, "k", "idx", "first_seen")
    # d is older than every key but new: it still gets a new number, after the old ones.
    assert sorted((r["k"], r["idx"]) for r in added.collect()) == [("d", 3), ("e", 4)]


def _ctx(spark, cfg, lake, run_id):
    ctx = JobContext(spark, cfg, lake, "features", run_id, None, components=COMPONENTS)
    return ctx


def _build(spark, cfg, lake, run_id):
    """One features-style build of gold.interactions; returns the write mode used."""
    ctx = _ctx(spark, cfg, lake, run_id)
    conf = RecommendConfig.from_config(cfg["recommend"])
    sales, returns = ctx.read("silver.transactions"), ctx.read("silver.returns")
    seen = sales.where("customer_token is not null and is_product")
    customers = new_indices(
        None,
        seen.select("customer_token", F.col("invoice_date").alias("t")),
        "customer_token",
        "customer_idx",
        "t",
    )
    products = new_indices(
        None,
        seen.select("stock_code", F.col("invoice_date").alias("t")),
        "stock_code",
        "product_idx",
        "t",
    )
    outputs = interaction_outputs(
        ctx, sales, returns, date(2011, 12, 31), conf, customers, products
    )
    for out in outputs:
        lake.write(out.df, CONTRACTS[out.table], run_id, mode=out.mode)
    return [out.mode for out in outputs]


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_incremental_update_from_the_change_feed_equals_a_rebuild(spark, root):
    # Incremental at any size here (by default only from 1M pairs, where it pays off).
    cfg = load_config("test", [f"paths.root={root}", "recommend.incremental_min_pairs=0"])
    lake = Lake(spark, str(root))
    lake.write(frame(spark, "silver.transactions", SALES), CONTRACTS["silver.transactions"], "r0")
    lake.write(frame(spark, "silver.returns", RETURNS), CONTRACTS["silver.returns"], "r0")
    assert _build(spark, cfg, lake, "r1") == ["overwrite"]
    assert _build(spark, cfg, lake, "r2") == []  # silver unchanged: nothing to do
    # New sales (a new pair, a repeat of an old pair) and a return of another pair.
    more = [
        line(10, "I6", "P3", 2, "2011-03-01 10:00", "7.000", "c1"),
        line(11, "I7", "P2", 1, "2011-03-02 10:00", "4.000", "c2", "France"),
        line(12, "I8", "P4", 1, "2011-03-02 10:00", "1.000", "c4"),
    ]
    lake.write(frame(spark, "silver.transactions", more), CONTRACTS["silver.transactions"], "r3")
    back = [
        return_line(13, "C2", "P3", -1, "2011-03-05 10:00", "7.000", "c3"),
        # A return of a product the customer bought before the data starts: no pair.
        return_line(14, "C3", "P9", -1, "2011-03-06 10:00", "3.000", "c2"),
    ]
    lake.write(frame(spark, "silver.returns", back), CONTRACTS["silver.returns"], "r3")
    before = lake.version(INTERACTIONS)
    assert _build(spark, cfg, lake, "r4") == ["merge"]
    metrics = lake.history(INTERACTIONS, 1).first()["operationMetrics"]
    # Only the changed pairs were touched: 2 updated (c2/P2, c3/P3), 2 inserted.
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsInserted"]) == ("2", "2")
    assert lake.version(INTERACTIONS) == before + 1

    columns = [
        "customer_token",
        "stock_code",
        "invoices",
        "units",
        "units_returned",
        "first_purchase_at",
        "last_purchase_at",
        "preference",
    ]
    incremental = lake.read(INTERACTIONS).select(*columns)
    rebuilt = interactions(
        lake.read("silver.transactions"), lake.read("silver.returns"), None, None, "log_invoices"
    ).select(*columns)
    assert sorted(incremental.collect()) == sorted(rebuilt.collect())
    assert incremental.count() == 6


def test_config_errors_name_the_key():
    section = load_config("test")["recommend"]
    bad = {
        **section,
        "als": {**section["als"], "search": {"rank": [], "reg_param": [0.1], "alpha": [1.0]}},
    }
    with pytest.raises(RecommendConfigError, match=r"recommend\.als\.search\.rank"):
        RecommendConfig.from_config(bad)
    with pytest.raises(RecommendConfigError, match=r"recommend\.top_n"):
        RecommendConfig.from_config({**section, "top_n": 5, "k": 10})


def test_popularity_baselines_exclude_past_items_and_follow_the_country(spark):
    scores = spark.createDataFrame(
        [(1, 5.0), (2, 9.0), (3, 9.0), (4, 1.0)], "item int, score double"
    )
    users = spark.createDataFrame([(10,), (11,)], "user int")
    exclude = spark.createDataFrame([(10, 2)], "user int, item int")
    lists = popularity_top_n(scores, users, 3, exclude, 16)
    got = sorted((r["user"], r["rank"], r["item"]) for r in lists.collect())
    # Ties (2 and 3 both 9 buyers) go to the lower item; user 10 bought item 2 already.
    assert got == [(10, 1, 3), (10, 2, 1), (10, 3, 4), (11, 1, 2), (11, 2, 3), (11, 3, 1)]

    lines = spark.createDataFrame(
        [
            (10, 1, "France", datetime(2011, 1, 1), date(2011, 1, 1)),
            (12, 1, "France", datetime(2011, 1, 1), date(2011, 1, 1)),
            (11, 2, UK, datetime(2011, 1, 1), date(2011, 1, 1)),
            (13, 2, UK, datetime(2011, 1, 1), date(2011, 1, 1)),
            (13, 3, UK, datetime(2011, 1, 2), date(2011, 1, 2)),
            (14, 4, "France", datetime(2011, 1, 1), date(2011, 1, 1)),
        ],
        "user int, item int, country string, invoice_date timestamp, invoice_day date",
    )
    by_country = country_top_n(lines, users, 2, None, 16)
    got = sorted((r["user"], r["rank"], r["item"]) for r in by_country.collect())
    # France: item 1 (2 buyers) then item 4 (1); UK: item 2 (2) then item 3 (1).
    assert got == [(10, 1, 1), (10, 2, 4), (11, 1, 2), (11, 2, 3)]
