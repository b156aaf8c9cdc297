"""Ranking metrics and blocked top-N recommendation (retail_lake.recommend)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from pyspark.sql import DataFrame, Row
from pyspark.testing import assertDataFrameEqual

from retail_lake.recommend.metrics import (
    MetricsError,
    per_user_metrics,
    ranking_metrics,
    ranking_metrics_python,
)
from retail_lake.recommend.topn import TopNError, top_n, top_n_of_scores

RECOMMENDED_SCHEMA = "user string, item int, rank int"
RELEVANT_SCHEMA = "user string, item int"

# Hand-computed case. A: relevant {1, 3, 5, 6} (|R| = 4, listed twice for item 1),
# B: fewer relevant items than k, C: relevant but no recommendation, D: recommended but not
# relevant (not evaluated, but counts for coverage). Catalogue of 20 items.
HAND_RECOMMENDED = {"A": [1, 2, 3, 4], "B": [7, 8, 2], "D": [9, 10, 11]}
HAND_RELEVANT = {"A": {1, 3, 5, 6}, "B": {8}, "C": {2}}
LOG2_3 = math.log2(3)
# k = 3 (A's list is cut at rank 3):
#   A: top 3 = 1 (hit), 2, 3 (hit): P = 2/3, R = 2/4, AP = (P@1 + P@3) / min(3, 4)
#      = (1 + 2/3) / 3 = 5/9, DCG = 1/log2(2) + 1/log2(4) = 1.5,
#      IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4) = 1.5 + 1/log2(3)
#   B: top 3 = 7, 8 (hit), 2: P = 1/3, R = 1/1, AP = P@2 / min(3, 1) = 1/2,
#      DCG = 1/log2(3), IDCG = 1 (one hit at the top)
#   C: all 0
#   coverage: {1, 2, 3} | {7, 8, 2} | {9, 10, 11} = 8 items of 20 = 0.4
HAND_K3_PER_USER = {
    "A": (2 / 3, 1 / 2, 5 / 9, 1.5 / (1.5 + 1 / LOG2_3)),
    "B": (1 / 3, 1.0, 1 / 2, 1 / LOG2_3),
    "C": (0.0, 0.0, 0.0, 0.0),
}
HAND_K3 = {
    "precision": (2 / 3 + 1 / 3 + 0) / 3,  # = 1/3
    "recall": (1 / 2 + 1 + 0) / 3,  # = 1/2
    "map": (5 / 9 + 1 / 2 + 0) / 3,  # = 19/54
    "ndcg": (1.5 / (1.5 + 1 / LOG2_3) + 1 / LOG2_3 + 0) / 3,
    "coverage": 8 / 20,
    "users": 3,
}
# k = 1: A: item 1 is a hit: P = 1/1, R = 1/4, AP = P@1 / min(1, 4) = 1, NDCG = 1/1;
#   B: item 7 misses: all 0; C: all 0; coverage: {1, 7, 9} = 3 of 20.
HAND_K1 = {
    "precision": 1 / 3,
    "recall": (1 / 4) / 3,  # = 1/12
    "map": 1 / 3,
    "ndcg": 1 / 3,
    "coverage": 3 / 20,
    "users": 3,
}


def _recommended_df(spark, lists: dict) -> DataFrame:
    rows = [(u, item, r) for u, items in lists.items() for r, item in enumerate(items, start=1)]
    return spark.createDataFrame(rows, RECOMMENDED_SCHEMA)


def _relevant_df(spark, sets: dict, repeat: tuple = ()) -> DataFrame:
    rows = [(u, item) for u, items in sets.items() for item in sorted(items)]
    return spark.createDataFrame(rows + list(repeat), RELEVANT_SCHEMA)


def _random_case(seed: int = 7) -> tuple[dict, dict]:
    rnd = random.Random(seed)
    recommended = {
        f"u{u}": rnd.sample(range(30), rnd.randint(1, 12)) for u in range(50) if rnd.random() < 0.8
    }
    relevant = {
        f"u{u}": set(rnd.sample(range(30), rnd.randint(1, 8)))
        for u in range(50)
        if rnd.random() < 0.8
    }
    return recommended, relevant


@pytest.mark.parametrize(("k", "expected"), [(3, HAND_K3), (1, HAND_K1)])
def test_metrics_hand_computed(spark, k, expected):
    recommended = _recommended_df(spark, HAND_RECOMMENDED)
    relevant = _relevant_df(spark, HAND_RELEVANT, repeat=(("A", 1),))
    assert ranking_metrics(recommended, relevant, k, 20) == pytest.approx(expected, rel=1e-12)
    python = ranking_metrics_python(HAND_RECOMMENDED, HAND_RELEVANT, k, 20)
    assert python == pytest.approx(expected, rel=1e-12)


def test_per_user_metrics_hand_computed(spark):
    recommended = _recommended_df(spark, HAND_RECOMMENDED)
    relevant = _relevant_df(spark, HAND_RELEVANT, repeat=(("A", 1),))
    rows = per_user_metrics(recommended, relevant, 3).collect()
    got = {
        r["user"]: (r["precision"], r["recall"], r["average_precision"], r["ndcg"]) for r in rows
    }
    assert got.keys() == HAND_K3_PER_USER.keys()
    for user, values in HAND_K3_PER_USER.items():
        assert got[user] == pytest.approx(values, rel=1e-12), user


@pytest.mark.parametrize("k", [5, 10])
def test_metrics_spark_equals_python_on_random_case(spark, k):
    recommended, relevant = _random_case()
    got = ranking_metrics(_recommended_df(spark, recommended), _relevant_df(spark, relevant), k, 30)
    expected = ranking_metrics_python(recommended, relevant, k, 30)
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0 < expected["map"] < 1 and expected["users"] == len(relevant)


def test_metrics_cross_check_with_ranking_evaluator(spark):
    """Spark's RankingEvaluator given the same per-user lists; see the metrics docstring."""
    from pyspark.ml.evaluation import RankingEvaluator

    recommended, relevant = _random_case(seed=11)
    k = 5
    rows = [
        ([float(i) for i in recommended.get(u, [])[:k]], [float(i) for i in sorted(items)])
        for u, items in relevant.items()
    ]
    lists = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    ours = ranking_metrics_python(recommended, relevant, k, 30)

    def spark_metric(name: str) -> float:
        return RankingEvaluator(metricName=name, k=k).evaluate(lists)

    assert spark_metric("precisionAtK") == pytest.approx(ours["precision"], rel=1e-12)
    assert spark_metric("recallAtK") == pytest.approx(ours["recall"], rel=1e-12)
    assert spark_metric("ndcgAtK") == pytest.approx(ours["ndcg"], rel=1e-12)
    assert spark_metric("meanAveragePrecisionAtK") == pytest.approx(ours["map"], rel=1e-12)


def test_metrics_bad_inputs(spark):
    recommended = _recommended_df(spark, HAND_RECOMMENDED)
    relevant = _relevant_df(spark, HAND_RELEVANT)
    with pytest.raises(MetricsError, match="k must be a positive integer"):
        ranking_metrics(recommended, relevant, 0, 20)
    with pytest.raises(MetricsError, match="catalogue_size must be a positive integer"):
        ranking_metrics(recommended, relevant, 3, 0)
    with pytest.raises(MetricsError, match=r"recommended lacks column\(s\) \['rank'\]"):
        ranking_metrics(recommended.drop("rank"), relevant, 3, 20)
    with pytest.raises(MetricsError, match=r"relevant lacks column\(s\) \['item'\]"):
        ranking_metrics(recommended, relevant.drop("item"), 3, 20)
    with pytest.raises(MetricsError, match="no user to evaluate"):
        ranking_metrics(recommended, spark.createDataFrame([], RELEVANT_SCHEMA), 3, 20)
    with pytest.raises(MetricsError, match="no user to evaluate"):
        ranking_metrics_python(HAND_RECOMMENDED, {"A": set()}, 3, 20)
    with pytest.raises(MetricsError, match="k must be a positive integer"):
        ranking_metrics_python(HAND_RECOMMENDED, HAND_RELEVANT, True, 20)


# --- top-N --------------------------------------------------------------------------------


def test_top_n_of_scores_ties_exclusions_and_short_rows():
    nan, inf = float("nan"), float("inf")
    scores = np.array(
        [
            [1.0, 3.0, 3.0, 2.0, 3.0],  # three-way tie at the top: lowest indices win
            [0.0, 1.0, 1.0, 1.0, 2.0],  # tie at the boundary (n-th place)
            [-inf, 5.0, nan, -inf, -inf],  # one candidate only
        ]
    )
    index, top = top_n_of_scores(scores, 2)
    np.testing.assert_array_equal(index[:2], [[1, 2], [4, 1]])
    np.testing.assert_array_equal(top[:2], [[3.0, 3.0], [2.0, 1.0]])
    assert index[2, 0] == 1 and top[2, 0] == 5.0 and top[2, 1] == -inf
    index, top = top_n_of_scores(scores[:1], 9)  # n above the number of items
    np.testing.assert_array_equal(index, [[1, 2, 4, 3, 0]])


FACTORS_SCHEMA = "id int, features array<float>"


def test_top_n_hand_factors_ties_and_exclusions(spark):
    users = spark.createDataFrame([(1, [1.0, 0.0]), (2, [0.0, 1.0])], FACTORS_SCHEMA)
    items = spark.createDataFrame(
        [(14, [1.0, 0.0]), (10, [1.0, 0.0]), (11, [1.0, 0.0]), (12, [0.5, 0.0]), (13, [0.0, 2.0])],
        FACTORS_SCHEMA,
    )
    schema = "user int, item int, score float, rank int"
    # User 1 scores 1 on items 10, 11, 14 (tie: ids ascending), 0.5 on 12, 0 on 13;
    # user 2 scores 2 on 13 and 0 on all others (tie: 10 first).
    got = top_n(users, items, 2, batch_size=1, user_col="id", item_col="id")
    expected = [(1, 10, 1.0, 1), (1, 11, 1.0, 2), (2, 13, 2.0, 1), (2, 10, 0.0, 2)]
    assertDataFrameEqual(got, spark.createDataFrame(expected, schema))
    # Excluding 10 and 11 from user 1 and everything but 12 from user 2 (999: not an item).
    exclude = spark.createDataFrame(
        [(1, 10), (1, 11), (1, 10), (2, 10), (2, 11), (2, 13), (2, 14), (2, 999)],
        "user int, item long",
    )
    got = top_n(users, items, 3, exclude=exclude, user_col="id", item_col="id")
    expected = [(1, 14, 1.0, 1), (1, 12, 0.5, 2), (1, 13, 0.0, 3), (2, 12, 0.0, 1)]
    assertDataFrameEqual(got, spark.createDataFrame(expected, schema))


@pytest.fixture(scope="module")
def als_case(spark):
    """A tiny implicit ALS model: 40 users x 25 items, random counts."""
    from pyspark.ml.recommendation import ALS

    rnd = random.Random(3)
    interactions = [
        (u, i, float(rnd.randint(1, 5)))
        for u in range(40)
        for i in rnd.sample(range(25), rnd.randint(3, 10))
    ]
    df = spark.createDataFrame(interactions, "user int, item int, rating float")
    als = ALS(rank=4, maxIter=3, implicitPrefs=True, seed=42, userCol="user", itemCol="item")
    model = als.fit(df)
    return model, interactions


def _ours(df) -> dict[int, list[tuple[int, float]]]:
    ranked: dict[int, list[tuple[int, int, float]]] = {}
    for r in df.collect():
        ranked.setdefault(r["user"], []).append((r["rank"], r["item"], r["score"]))
    for rows in ranked.values():
        assert [rank for rank, _, _ in sorted(rows)] == list(range(1, len(rows) + 1))
    return {u: [(item, score) for _, item, score in sorted(rows)] for u, rows in ranked.items()}


def _assert_same_ranking(got: dict, expected: dict) -> None:
    """Same items in the same order per user, up to ties (scores within 1e-5 relative)."""
    assert got.keys() == expected.keys()
    for user, want in expected.items():
        have = got[user]
        assert len(have) == len(want), user
        assert [s for _, s in have] == pytest.approx([s for _, s in want], rel=1e-5, abs=1e-7)
        # Runs of tied scores must hold the same items, except the last run, which the
        # cut at n may split differently among tied items.
        start = 0
        for end in range(1, len(want) + 1):
            if end < len(want) and want[end][1] == pytest.approx(want[end - 1][1], rel=1e-5):
                continue
            if end < len(want):
                assert {i for i, _ in have[start:end]} == {i for i, _ in want[start:end]}, user
            start = end


def test_top_n_equals_mllib_recommend_for_all_users(als_case):
    model, _ = als_case
    got = _ours(top_n(model.userFactors, model.itemFactors, 5, user_col="id", item_col="id"))
    mllib = model.recommendForAllUsers(5).collect()
    expected = {
        r["user"]: [(p["item"], float(p["rating"])) for p in r["recommendations"]] for r in mllib
    }
    assert len(expected) == 40
    _assert_same_ranking(got, expected)


def test_top_n_with_exclusions_equals_numpy_brute_force(spark, als_case):
    model, interactions = als_case
    excluded = {(u, i) for u, i, _ in interactions if u not in (0, 1)}
    excluded |= {(0, i) for i in range(25) if i not in (3, 17)}  # 2 candidates left
    excluded |= {(1, i) for i in range(25)} | {(1, 999)}  # none left (999: not an item)
    exclude = spark.createDataFrame(sorted(excluded), "user int, item int")
    result = top_n(
        model.userFactors, model.itemFactors, 5, exclude, batch_size=7, user_col="id", item_col="id"
    )
    got = _ours(result)

    users = {
        r["id"]: np.asarray(r["features"], dtype=np.float64) for r in model.userFactors.collect()
    }
    items = {
        r["id"]: np.asarray(r["features"], dtype=np.float64) for r in model.itemFactors.collect()
    }
    expected = {}
    for user, vector in users.items():
        scored = [
            (-np.float32(vector @ factors), item)
            for item, factors in items.items()
            if (user, item) not in excluded
        ]
        if scored:
            expected[user] = [(item, -float(neg)) for neg, item in sorted(scored)[:5]]
    _assert_same_ranking(got, expected)
    assert not {(u, i) for u, ranked in got.items() for i, _ in ranked} & excluded
    assert [i for i, _ in got[0]] == sorted([3, 17], key=lambda i: -(users[0] @ items[i]))
    assert 1 not in got


def test_top_n_bad_inputs(spark):
    users = spark.createDataFrame([(1, [1.0, 0.0])], "user int, features array<float>")
    items = spark.createDataFrame([(10, [1.0, 0.0])], "item int, features array<float>")
    for n in (0, -1, 2.5, True):
        with pytest.raises(TopNError, match="n must be a positive integer"):
            top_n(users, items, n)
    with pytest.raises(TopNError, match="batch_size must be a positive integer"):
        top_n(users, items, 3, batch_size=0)
    with pytest.raises(TopNError, match=r"user_factors lacks column\(s\) \['user'\]"):
        top_n(users.withColumnRenamed("user", "id"), items, 3)
    with pytest.raises(TopNError, match=r"item_factors lacks column\(s\) \['features'\]"):
        top_n(users, items.drop("features"), 3)
    with pytest.raises(TopNError, match="must be array<float> or array<double>"):
        top_n(users, spark.createDataFrame([Row(item=10, features="x")]), 3)
    with pytest.raises(TopNError, match=r"exclude lacks column\(s\) \['item'\]"):
        top_n(users, items, 3, exclude=users.select("user"))
    strings = spark.createDataFrame([(1, "10")], "user int, item string")
    with pytest.raises(TopNError, match="exclude.item is string but the factor ids are int"):
        top_n(users, items, 3, exclude=strings)
    with pytest.raises(TopNError, match="item_factors is empty"):
        top_n(users, spark.createDataFrame([], "item int, features array<float>"), 3)
    duplicated = items.unionAll(items)
    with pytest.raises(TopNError, match="must be unique and not null"):
        top_n(users, duplicated, 3)
    wide = spark.createDataFrame([(11, [1.0, 0.0, 2.0])], "item int, features array<float>")
    with pytest.raises(TopNError, match=r"same rank > 0, found \[2, 3\]"):
        top_n(users, items.unionAll(wide), 3)
    with pytest.raises(TopNError, match="rank 3, found ranks from 2 to 2"):
        top_n(users, wide, 3)
