"""Gold customer and product features (retail_lake.recommend.features) on hand-built lines."""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from retail_lake.recommend.features import (
    RFM_SEGMENTS,
    FeatureError,
    centroid_segments,
    customer_features,
    product_features,
    quantile_score,
    rfm_segment_of,
    snapshot_day,
)

REPO = Path(__file__).resolve().parents[1]
LINES = (
    "invoice_no string, stock_code string, quantity int, invoice_date timestamp, "
    "invoice_day date, unit_price decimal(12,3), line_total decimal(18,3), "
    "customer_token string, country string, is_product boolean"
)
AS_OF = date(2011, 3, 31)
SEGMENTS = {"method": "rfm", "rfm_bins": 5, "kmeans_k": 3, "seed": 42}
UK = "United Kingdom"


def _line(invoice, code, qty, at, price, customer, country=UK, product=True):
    when = datetime.fromisoformat(at)
    price = Decimal(price)
    return (invoice, code, qty, when, when.date(), price, price * qty, customer, country, product)


# Five customers; c6 bought only postage, c7 only after the snapshot: neither has a row.
SALES = [
    _line("I1", "P1", 10, "2011-01-10 09:00", "2.000", "c1"),
    _line("I1", "P2", 5, "2011-01-10 09:00", "4.000", "c1"),
    _line("I1", "POST", 1, "2011-01-10 09:00", "18.000", "c1", product=False),
    _line("I2", "P1", 10, "2011-03-30 10:00", "2.000", "c1"),
    _line("I3", "P3", 2, "2011-03-31 23:00", "10.000", "c1"),  # the snapshot's last hour
    _line("I4", "P2", 1, "2011-02-01 10:00", "4.000", "c2"),
    _line("I5", "P2", 3, "2011-03-20 10:00", "4.000", "c2"),
    _line("I6", "P3", 1, "2011-03-20 12:00", "10.000", "c3"),
    # Counted, c3's country would be Spain (tie, latest line) and its frequency 2.
    _line("I16", "POST", 1, "2011-03-25 12:00", "5.000", "c3", "Spain", product=False),
    _line("I7", "P1", 100, "2011-01-05 08:00", "1.500", "c4"),
    _line("I8", "P1", 2, "2011-02-10 10:00", "2.000", "c5", "Germany"),
    _line("I9", "P2", 1, "2011-02-15 10:00", "4.000", "c5", "France"),
    _line("I11", "P1", 50, "2011-02-01 11:00", "1.800", None),
    _line("I13", "P5", 4, "2011-03-01 11:00", "0.500", None),
    _line("I14", "POST", 1, "2011-03-15 10:00", "15.000", "c6", product=False),
]
RETURNS = [
    _line("C1", "P1", -3, "2011-03-31 12:00", "2.000", "c1"),
    _line("C2", "P1", -20, "2011-01-20 10:00", "1.500", "c4"),
    _line("C3", "P5", -6, "2011-03-05 10:00", "0.500", None),  # more than sold: bought earlier
    _line("C4", "M", -1, "2011-02-01 10:00", "5.000", "c4", product=False),
]
AFTER_SALES = [
    _line("I12", "P2", 7, "2011-04-01 00:00", "4.000", "c2"),
    _line("I15", "P4", 1, "2011-04-05 10:00", "3.000", "c7"),
]
AFTER_RETURNS = [
    _line("C5", "P2", -5, "2011-04-02 10:00", "4.000", "c1"),
    _line("C6", "P3", -1, "2011-04-01 09:00", "10.000", "c3"),
]

# By hand (as_of 2011-03-31, 5 customers, 5 bins: score = rank, ties share the lower rank).
#   recency  c4 85, c5 44, c2 11, c3 11, c1 0  -> R 1, 2, 3, 3, 5
#   frequency c3 1, c4 1, c2 2, c5 2, c1 3     -> F 1, 1, 3, 3, 5
#   monetary c5 8, c3 10, c2 16, c1 74, c4 120 -> M 1, 2, 3, 4, 5
#   FM = round_half_up((F + M) / 2): c1 5, c2 3, c3 2, c4 3, c5 2.
HAND_COLUMNS = [
    "customer_token",
    "as_of_date",
    "country",
    "first_purchase_at",
    "last_purchase_at",
    "recency_days",
    "frequency",
    "monetary",
    "tenure_days",
    "avg_basket_size",
    "avg_basket_value",
    "return_rate",
    "r_score",
    "f_score",
    "m_score",
    "rfm_segment",
    "segment",
    "segment_method",
]
_T = datetime.fromisoformat
HAND = [
    ("c1", UK, "2011-01-10 09:00", "2011-03-31 23:00", 0, 3, "74.000", 80, 9.0, 80 / 3, 3 / 27,
     5, 5, 4, "champions"),
    ("c2", UK, "2011-02-01 10:00", "2011-03-20 10:00", 11, 2, "16.000", 58, 2.0, 8.0, 0.0,
     3, 3, 3, "need_attention"),
    ("c3", UK, "2011-03-20 12:00", "2011-03-20 12:00", 11, 1, "10.000", 11, 1.0, 10.0, 0.0,
     3, 1, 2, "about_to_sleep"),
    ("c4", UK, "2011-01-05 08:00", "2011-01-05 08:00", 85, 1, "120.000", 85, 100.0, 150.0, 0.2,
     1, 1, 5, "at_risk"),
    ("c5", "France", "2011-02-10 10:00", "2011-02-15 10:00", 44, 2, "8.000", 49, 1.5, 4.0, 0.0,
     2, 3, 1, "hibernating"),
]  # fmt: skip


def _frames(spark, sales, returns):
    return spark.createDataFrame(sales, LINES), spark.createDataFrame(returns, LINES)


@pytest.fixture(scope="module")
def features(spark):
    """customer_features rows: rfm on every line, kmeans on the snapshot's lines only."""
    every = _frames(spark, SALES + AFTER_SALES, RETURNS + AFTER_RETURNS)
    only = _frames(spark, SALES, RETURNS)
    return (
        customer_features(*every, AS_OF, SEGMENTS).collect(),
        customer_features(*only, AS_OF, {**SEGMENTS, "method": "kmeans"}).collect(),
    )


def test_rfm_rule_table_names_every_cell_once_and_the_suite_knows_them():
    cells = [(r, fm) for _, rs, fms in RFM_SEGMENTS for r in rs for fm in fms]
    assert sorted(cells) == [(r, fm) for r in range(1, 6) for fm in range(1, 6)]
    assert [rfm_segment_of(5, fm) for fm in range(1, 6)] == [
        "new", "potential_loyalists", "potential_loyalists", "champions", "champions",
    ]  # fmt: skip
    assert [rfm_segment_of(r, 1) for r in range(1, 6)] == [
        "lost", "hibernating", "about_to_sleep", "promising", "new",
    ]  # fmt: skip
    suite = yaml.safe_load((REPO / "conf/suites/gold.customer_features.yaml").read_text())
    (in_set,) = [
        e for e in suite["expectations"]
        if e["expectation"] == "expect_column_values_to_be_in_set" and e["column"] == "rfm_segment"
    ]  # fmt: skip
    assert sorted(in_set["value_set"]) == sorted(name for name, _, _ in RFM_SEGMENTS)


def test_snapshot_day_is_the_given_day_or_the_last_sales_day(spark):
    sales, _ = _frames(spark, SALES, RETURNS)
    assert snapshot_day(sales, "2011-02-01") == date(2011, 2, 1)
    assert snapshot_day(sales, date(2011, 2, 1)) == date(2011, 2, 1)
    assert snapshot_day(sales, datetime(2011, 2, 1, 13, 0)) == date(2011, 2, 1)
    assert snapshot_day(sales, "") == date(2011, 3, 31)
    for bad in ("2011-13-01", "31/03/2011", "20110331", 20110331):
        with pytest.raises(FeatureError, match=r"recommend\.as_of must be a day YYYY-MM-DD"):
            snapshot_day(sales, bad)
    with pytest.raises(FeatureError, match=r"recommend\.as_of is empty and there are no sales"):
        snapshot_day(spark.createDataFrame([], LINES), None)


def test_quantile_scores_share_ties_and_split_evenly(spark):
    values = spark.createDataFrame(
        [(i, v) for i, v in enumerate([1, 1, 2, 3, 4, 5, 5])], "i int, v int"
    )
    # rank 1, 1, 3, 4, 5, 6, 6 of 7 -> 1 + floor(3 * (rank - 1) / 7) = 1, 1, 1, 2, 2, 3, 3
    scored = values.select("i", quantile_score(F.col("v").asc(), 3).alias("s")).collect()
    assert [r["s"] for r in sorted(scored)] == [1, 1, 1, 2, 2, 3, 3]


def test_customer_features_by_hand(features):
    rfm, _ = features
    expected = [
        Row(**dict(zip(HAND_COLUMNS, (
            c, AS_OF, country, _T(first), _T(last), rec, freq, Decimal(mon), ten, size, value,
            rate, r, f, m, name, name, "rfm",
        ), strict=True)))
        for c, country, first, last, rec, freq, mon, ten, size, value, rate, r, f, m, name in HAND
    ]  # fmt: skip
    assertDataFrameEqual([Row(**{c: row[c] for c in HAND_COLUMNS}) for row in rfm], expected)
    assert all(row["segment"] == row["rfm_segment"] for row in rfm)


def test_later_lines_change_nothing_and_kmeans_is_deterministic(features):
    # Two fits (one on every line, one without the lines after the snapshot) give the same
    # full rows, k-means clusters included; only the method's columns differ.
    rfm, kmeans = features
    assert len(kmeans) == len(rfm) == len(HAND)
    assertDataFrameEqual(
        [Row(**{**r.asDict(), "segment": None, "segment_method": None}) for r in rfm],
        [Row(**{**r.asDict(), "segment": None, "segment_method": None}) for r in kmeans],
    )
    assert all(r["segment"] == r["kmeans_segment"] for r in kmeans)
    assert {r["segment_method"] for r in kmeans} == {"kmeans"}
    assert {r["kmeans_cluster"] for r in kmeans} <= set(range(SEGMENTS["kmeans_k"]))


def test_centroids_are_named_by_their_rfm_scores_or_their_returns(spark):
    customers = spark.createDataFrame(
        [(rec, freq, Decimal(mon)) for _, _, _, _, rec, freq, mon, *_ in HAND],
        "recency_days int, frequency bigint, monetary decimal(18,3)",
    )
    # (cluster, recency, frequency, monetary, return rate) -> customers strictly worse on R,
    # F, M -> scores 1 + floor(5 * worse / 5) -> R level, FM = round_half_up((F + M) / 2).
    centroids = [
        (0, 0.5, 2.5, 100.0, 0.0),  # worse 4, 4, 4: R5 F5 M5 -> champions
        (1, 100.0, 1.0, 5.0, 0.1),  # worse 0, 0, 0: R1 F1 M1 -> lost
        (2, 11.0, 2.0, 12.0, 0.2),  # worse 2, 2, 2: R3 F3 M3 -> need_attention
        (3, 0.0, 9.0, 500.0, 0.6),  # returns >= 0.5 -> heavy_returners (else champions)
        (4, 50.0, 1.5, 50.0, 0.49),  # worse 1, 2, 3: R2 F3 M4 -> FM 4 -> at_risk
        # Beyond every customer (k-means' float error puts a centroid of the top customers
        # a hair above them): worse 5, 5, 5 -> scores capped at 5 -> champions, not null.
        (5, -1e-9, 9.000000000000002, 500.0000001, 0.0),
    ]
    named = centroid_segments(customers, centroids, 5).collect()
    assert dict(named) == {
        0: "champions", 1: "lost", 2: "need_attention", 3: "heavy_returners", 4: "at_risk",
        5: "champions",
    }  # fmt: skip


def test_bad_segment_settings_are_named(spark):
    sales, returns = _frames(spark, SALES, RETURNS)
    with pytest.raises(FeatureError, match=r"recommend\.segments\.method must be one of"):
        customer_features(sales, returns, AS_OF, {**SEGMENTS, "method": "dbscan"})
    with pytest.raises(FeatureError, match=r"recommend\.segments\.rfm_bins must be"):
        customer_features(sales, returns, AS_OF, {**SEGMENTS, "rfm_bins": 1})
    with pytest.raises(FeatureError, match=r"recommend\.as_of 2010-12-31: no customer"):
        customer_features(sales, returns, date(2010, 12, 31), SEGMENTS)


def test_product_features_by_hand(spark):
    sales, returns = _frames(spark, SALES + AFTER_SALES, RETURNS + AFTER_RETURNS)
    products = spark.createDataFrame(
        [(f"P{i}", f"THING {i}") for i in range(1, 6)], "stock_code string, description string"
    )
    rows = product_features(sales, returns, products, AS_OF).collect()
    actual = [Row(**{k: v for k, v in r.asDict().items() if k != "price_stddev"}) for r in rows]
    d = Decimal
    # P1: prices 2, 2, 1.5, 2, 1.8 (c1 twice, c4, c5, a guest); P4 sold only after as_of.
    expected = [
        ("P1", "THING 1", AS_OF, 5, 3, 172, d("284.000"), d("1.500"), 284 / 172, d("2.000"),
         23, 23 / 172, _T("2011-01-05 08:00"), _T("2011-03-30 10:00")),
        ("P2", "THING 2", AS_OF, 4, 3, 10, d("40.000"), d("4.000"), 4.0, d("4.000"), 0, 0.0,
         _T("2011-01-10 09:00"), _T("2011-03-20 10:00")),
        ("P3", "THING 3", AS_OF, 2, 2, 3, d("30.000"), d("10.000"), 10.0, d("10.000"), 0, 0.0,
         _T("2011-03-20 12:00"), _T("2011-03-31 23:00")),
        ("P5", "THING 5", AS_OF, 1, 0, 4, d("2.000"), d("0.500"), 0.5, d("0.500"), 6, 1.5,
         _T("2011-03-01 11:00"), _T("2011-03-01 11:00")),
    ]  # fmt: skip
    columns = list(actual[0].asDict())
    assertDataFrameEqual(actual, [Row(**dict(zip(columns, e, strict=True))) for e in expected])
    stddev = {r["stock_code"]: r["price_stddev"] for r in rows}
    mean = (2 + 2 + 1.5 + 2 + 1.8) / 5
    p1 = math.sqrt(sum((p - mean) ** 2 for p in (2, 2, 1.5, 2, 1.8)) / 5)
    assert stddev == pytest.approx({"P1": p1, "P2": 0.0, "P3": 0.0, "P5": 0.0})
