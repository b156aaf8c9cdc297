"""The A/B test of recommendations (`retail_lake.recommend.abtest`): the statistics on numbers
worked by hand, the split on many tokens, then a replay on the demo lake's Online Retail data:
recommendations published as of four weeks before the data ends, half the customers served
the popularity control, and what they bought afterwards recomputed here with pandas."""

from __future__ import annotations

import math

import pytest

from retail_lake.recommend.abtest import (
    ABTest,
    ABTestConfigError,
    summarise,
    two_proportion_p,
    welch_p,
    wilson,
)

from .conftest import copy_lake


def test_intervals_and_tests_on_numbers_worked_by_hand():
    # 10 of 100: p 0.1, z 1.96; Wilson's centre (0.1 + 0.019208) / 1.038415 = 0.114800, half
    # 1.96 * sqrt(0.0009 + 0.00009604) / 1.038415 = 0.059571.
    low, high = wilson(10, 100)
    assert (low, high) == pytest.approx((0.055229, 0.174366), abs=1e-6)
    # 30/100 against 20/100: pooled 0.25, se sqrt(0.25 * 0.75 * 0.02) = 0.061237, z 1.633.
    assert two_proportion_p(30, 100, 20, 100) == pytest.approx(0.102470, abs=1e-6)
    assert two_proportion_p(5, 50, 5, 50) == pytest.approx(1.0)
    # Means 1.0 and 0.8, variance 1, 100 each: se sqrt(0.02), z sqrt(2): p = erfc(1) = 0.157299.
    assert welch_p(1.0, 1.0, 100, 0.8, 1.0, 100) == pytest.approx(math.erfc(1.0), abs=1e-12)

    groups = {
        "als": {
            "n": 100,
            "hit_customers": 30,
            "active_customers": 60,
            "precision_sum": 5.0,
            "precision_sq": 1.0,
            "revenue_sum": 200.0,
            "revenue_sq": 2000.0,
        },
        "popularity": {
            "n": 100,
            "hit_customers": 20,
            "active_customers": 60,
            "precision_sum": 3.0,
            "precision_sq": 0.5,
            "revenue_sum": 100.0,
            "revenue_sq": 1000.0,
        },
    }
    rows = {(r["variant"], r["metric"]): r for r in summarise(groups, 10)}
    hit = rows[("als", "hit_rate")]
    assert hit["control"] == "popularity"
    assert hit["value"] == pytest.approx(0.3)
    assert hit["difference"] == pytest.approx(0.1)
    assert hit["p_value"] == pytest.approx(0.102470, abs=1e-6)
    assert rows[("als", "active_rate")]["p_value"] == pytest.approx(1.0)
    # Revenue: means 2.0 and 1.0; variances (2000 - 100 * 4) / 99 and (1000 - 100) / 99.
    revenue = rows[("als", "revenue_per_customer")]
    v1, v2 = 1600 / 99, 900 / 99
    assert revenue["value"] == pytest.approx(2.0)
    assert revenue["p_value"] == pytest.approx(welch_p(2.0, v1, 100, 1.0, v2, 100))
    assert revenue["ci_low"] == pytest.approx(2.0 - 1.959964 * math.sqrt(v1 / 100), abs=1e-6)
    control = rows[("popularity", "hit_rate")]
    assert (control["difference"], control["p_value"]) == (None, None)


def test_the_configured_split_is_checked():
    with pytest.raises(ABTestConfigError, match=r"unknown variant\(s\) \['bandit'\]"):
        ABTest.from_config({"shares": {"als": 0.5, "bandit": 0.5}})
    with pytest.raises(ABTestConfigError, match="sum to 1"):
        ABTest.from_config({"shares": {"als": 0.5, "popularity": 0.4}})
    assert not ABTest.from_config({}).active
    assert ABTest.from_config({"shares": {"popularity": 0.2, "als": 0.8}}).bounds() == [
        ("popularity", 2000),
        ("als", 10000),
    ]


def test_a_salt_fixes_the_split_and_another_redraws_it(spark):
    from pyspark.sql import functions as F

    from retail_lake.recommend.abtest import assign

    n = 20_000
    tokens = spark.range(n).select(F.concat(F.lit("t"), F.col("id")).alias("customer_token"))
    shares = {"als": 0.3, "popularity": 0.7}
    first = assign(tokens, ABTest.from_config({"salt": "a", "shares": shares}))
    again = assign(tokens, ABTest.from_config({"salt": "a", "shares": shares}))
    other = assign(tokens, ABTest.from_config({"salt": "b", "shares": shares}))
    a = {r["customer_token"]: (r["bucket"], r["variant"]) for r in first.collect()}
    assert a == {r["customer_token"]: (r["bucket"], r["variant"]) for r in again.collect()}
    b = {r["customer_token"]: r["variant"] for r in other.collect()}
    assert all((bucket < 3000) == (variant == "als") for bucket, variant in a.values())
    als = sum(v == "als" for _, v in a.values())
    # Binomial(20,000, 0.3): sd 64.8; four of them either side.
    assert abs(als - 0.3 * n) < 4 * math.sqrt(n * 0.21)
    # Independent splits disagree on 2 x 0.3 x 0.7 = 42% of the customers.
    changed = sum(a[t][1] != b[t] for t in a) / n
    assert 0.40 < changed < 0.44


@pytest.mark.slow  # features and recommend as of a past day, then the evaluation
def test_an_ab_replay_on_the_demo_data(spark, demo_lake, tmp_path):
    from datetime import timedelta

    import pandas as pd
    from pyspark.sql import functions as F

    from retail_lake.config import load_config
    from retail_lake.lake import Lake
    from retail_lake.pipeline import run_single

    root = copy_lake(demo_lake.root, tmp_path / "lake")
    lake = Lake(spark, str(root))
    last = lake.read("silver.transactions").agg(F.max("invoice_day")).first()[0]
    as_of = last - timedelta(days=28)
    overrides = [
        f"paths.root={root}",
        f"recommend.as_of={as_of}",
        "recommend.ab_test.salt=replay-1",
        "recommend.ab_test.shares={als: 0.5, popularity: 0.5}",
        "recommend.ab_test.window_days=21",
    ]
    cfg = load_config("test", overrides)
    for job in ("features", "recommend", "evaluate_recommendations"):
        run_single(cfg, job, overrides=overrides, spark=spark)

    assigned = lake.read("gold.recommendation_assignments").toPandas()
    recs = lake.read("gold.recommendations").toPandas()
    customers = lake.read("silver.customers").where(
        F.col("first_seen_at") < F.lit(as_of + timedelta(days=1)).cast("timestamp")
    )
    # Every customer seen by the snapshot is assigned once, and served in their variant.
    assert assigned["customer_token"].is_unique
    assert set(assigned["customer_token"]) == {
        r[0] for r in customers.select("customer_token").collect()
    }
    assert set(assigned["salt"]) == {"replay-1"} and set(assigned["as_of_date"]) == {as_of}
    counts = assigned["variant"].value_counts().to_dict()
    n = len(assigned)
    assert abs(counts["als"] - n / 2) < 4 * math.sqrt(n / 4)
    served = recs.merge(
        assigned[["customer_token", "variant"]], on="customer_token", suffixes=("", "_a")
    )
    assert len(served) == len(recs) and (served["variant"] == served["variant_a"]).all()
    known = set(
        lake.read("gold.interactions").select("customer_token").toPandas()["customer_token"]
    )
    # The model's lists go to its known customers in the als variant only.
    by_source = served.groupby("source")
    assert set(by_source.get_group("als")["variant"]) == {"als"}
    control = served[(served["variant"] == "popularity") & served["customer_token"].isin(known)]
    assert len(control) and set(control["source"]) == {"popularity"}
    # The control's list: the same products for everyone by buyers, their purchases masked.
    bought = lake.read("gold.interactions").select("customer_token", "stock_code").toPandas()
    mine = control.merge(bought, on=["customer_token", "stock_code"])
    assert mine.empty
    buyers = bought.groupby("stock_code")["customer_token"].nunique()
    assert (control["score"] == control["stock_code"].map(buyers).astype(float)).all()

    # The evaluation, recomputed from the transactions after the snapshot.
    k = cfg.get("recommend.k")
    sales = lake.read("silver.transactions").where(
        F.col("is_product")
        & F.col("customer_token").isNotNull()
        & F.col("invoice_day").between(as_of + timedelta(days=1), as_of + timedelta(days=21))
    )
    window = sales.select(
        "customer_token", "stock_code", F.col("line_total").cast("double")
    ).toPandas()
    top = recs[recs["rank"] <= k][["customer_token", "stock_code"]]
    spent = window.groupby(["customer_token", "stock_code"], as_index=False)["line_total"].sum()
    hits = (
        top.merge(spent, on=["customer_token", "stock_code"])
        .groupby("customer_token")
        .agg(hits=("stock_code", "size"), revenue=("line_total", "sum"))
    )
    per = assigned.set_index("customer_token")[["variant"]].join(hits).fillna(0.0)
    per["active"] = per.index.isin(set(window["customer_token"]))
    results = lake.read("gold.recommendation_ab_results").toPandas()
    assert len(results) == 8
    got = {(r.variant, r.metric): r for r in results.itertuples()}
    for variant, group in per.groupby("variant"):
        expected = {
            "hit_rate": (group["hits"] > 0).mean(),
            "precision_at_k": (group["hits"] / k).mean(),
            "revenue_per_customer": group["revenue"].mean(),
            "active_rate": group["active"].mean(),
        }
        for metric, value in expected.items():
            row = got[(variant, metric)]
            assert row.value == pytest.approx(value, abs=1e-9), (variant, metric)
            assert row.customers == len(group)
            assert row.ci_low <= row.value <= row.ci_high
            assert row.window_end == as_of + timedelta(days=21)
    assert got[("als", "hit_rate")].control == "popularity"
    # The tests against the control, by scipy: the two-proportion z-test is the 2x2
    # chi-square without continuity correction; for means, Welch's statistic read against
    # the normal distribution (the groups are large).
    from scipy.stats import chi2_contingency, norm, ttest_ind

    als, control = per[per["variant"] == "als"], per[per["variant"] == "popularity"]
    bought = [[(g["hits"] > 0).sum(), (g["hits"] == 0).sum()] for g in (als, control)]
    chi2_p = chi2_contingency(bought, correction=False)[1]
    assert got[("als", "hit_rate")].p_value == pytest.approx(chi2_p, rel=1e-9)
    welch = ttest_ind(als["revenue"], control["revenue"], equal_var=False).statistic
    assert got[("als", "revenue_per_customer")].p_value == pytest.approx(
        2 * norm.sf(abs(welch)), rel=1e-6
    )
    assert pd.isna(got[("popularity", "hit_rate")].p_value)
    # The replay has something to measure: customers bought recommended products.
    assert got[("als", "hit_rate")].value > 0

    # Evaluated again with nothing new: the same rows, nothing committed.
    version = lake.version("gold.recommendation_ab_results")
    run_single(cfg, "evaluate_recommendations", overrides=overrides, spark=spark)
    assert lake.version("gold.recommendation_ab_results") == version
