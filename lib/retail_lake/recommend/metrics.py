"""Ranking metrics at k for implicit-feedback recommendation, computed in Spark.

Inputs:

- `recommended` (user, item, rank): the recommendation lists in long form, one row per
  recommendation, rank 1 the best (what `retail_lake.recommend.topn.top_n` returns). A
  user's ranks and items must be unique. Only ranks 1..k count. A rank is the position in
  the list, so a gap in the ranks counts as a miss at that position.
- `relevant` (user, item): the held-out interactions. Each user's items form a set:
  repeated rows count once.

For an evaluated user u with relevant set R (|R| >= 1), let rel_i = 1 if the item at rank i
is in R and 0 otherwise, hits = sum_{i<=k} rel_i, m = min(k, |R|) and
P@i = (sum_{j<=i} rel_j) / i. Then:

- precision@k = hits / k. It always divides by k, even when fewer than k items are
  recommended or |R| < k.
- recall@k = hits / |R|.
- AP@k = sum_{i<=k} P@i * rel_i / m.
- NDCG@k = DCG / IDCG with binary relevance, where DCG = sum_{i<=k} rel_i / log2(i + 1)
  and IDCG = sum_{i=1..m} 1 / log2(i + 1), the DCG of m hits at the top.

Each metric is the mean over the evaluated users: the distinct users of `relevant`. MAP@k
is the mean of AP@k. A user with no recommendation scores 0 on all four. Users that have
recommendations but are absent from `relevant` are not evaluated.

coverage@k = (distinct items at ranks 1..k over every user of `recommended`) /
catalogue_size.

Relation to `pyspark.ml.evaluation.RankingEvaluator` (`mllib.evaluation.RankingMetrics`,
Spark 4.0.1), given one row per evaluated user with the top-k list as `prediction` (empty
for a user without recommendations) and the relevant set as `label`:

- precisionAtK, recallAtK and ndcgAtK (binary) are the definitions above. NDCG uses the
  natural logarithm there, and the base cancels in the ratio.
- meanAveragePrecisionAtK also divides the sum of P@i * rel_i by min(k, |R|), so it equals
  our MAP@k. `test_metrics_cross_check_with_ranking_evaluator` checks this on a case where
  |R| > k for many users. The un-truncated `meanAveragePrecision` divides by |R| over the
  whole list. Dividing by |R| at a cut-off k would keep AP@k below 1 even for a perfect
  list whenever |R| > k, which min(k, |R|) avoids.
- Spark averages over the rows it is given, scores an empty label set 0 with a warning,
  and counts a repeated prediction once per position. Here the evaluated users are those
  of `relevant` (never an empty set), and the unique-items rule above applies.
- coverage has no RankingEvaluator counterpart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence, Set

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.recommend.topn import ITEM, RANK, USER

log = logging.getLogger(__name__)

PRECISION = "precision"
RECALL = "recall"
AVERAGE_PRECISION = "average_precision"
NDCG = "ndcg"


class MetricsError(ValueError):
    """Invalid inputs or parameters for ranking metrics."""


def _check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MetricsError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_columns(df: DataFrame, what: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MetricsError(f"{what} lacks column(s) {missing}; it has {df.columns}")


def top_k(recommended: DataFrame, k: int) -> DataFrame:
    """The (user, item, rank) rows of `recommended` at ranks 1..k."""
    return recommended.where(F.col(RANK).between(1, k)).select(USER, ITEM, RANK)


def _ideal_dcg(m: Column) -> Column:
    """sum_{i=1..m} 1 / log2(i + 1), the DCG of m hits at the top (m >= 1)."""
    return F.aggregate(
        F.sequence(F.lit(1).cast("long"), m.cast("long")),
        F.lit(0.0),
        lambda acc, i: acc + F.lit(1.0) / F.log2(i + 1),
    )


def per_user_metrics(recommended: DataFrame, relevant: DataFrame, k: int) -> DataFrame:
    """precision@k, recall@k, AP@k and NDCG@k of each evaluated user.

    Args:
        recommended: (user, item, rank) recommendation lists (see the module docstring).
        relevant: (user, item) held-out interactions; defines the evaluated users.
        k: the cut-off rank.

    Returns:
        `user`, `precision`, `recall`, `average_precision`, `ndcg`: one row per distinct
        user of `relevant`.
    """
    k = _check_positive_int("k", k)
    _check_columns(recommended, "recommended", (USER, ITEM, RANK))
    _check_columns(relevant, "relevant", (USER, ITEM))
    relevant_set = relevant.select(USER, ITEM).distinct()
    relevant_size = relevant_set.groupBy(USER).agg(F.count(F.lit(1)).alias("_relevant"))
    so_far = (
        Window.partitionBy(USER)
        .orderBy(RANK)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    hits = (
        # (user, item) is unique on both sides, so the join keeps one row per hit.
        top_k(recommended, k)
        .join(relevant_set, on=[USER, ITEM], how="inner")
        .withColumn("_hits_so_far", F.count(F.lit(1)).over(so_far))
        .groupBy(USER)
        .agg(
            F.count(F.lit(1)).alias("_hits"),
            F.sum(F.col("_hits_so_far") / F.col(RANK)).alias("_precision_sum"),
            F.sum(F.lit(1.0) / F.log2(F.col(RANK) + 1)).alias("_dcg"),
        )
    )
    per_user = relevant_size.join(hits, on=USER, how="left").fillna(
        0, subset=["_hits", "_precision_sum", "_dcg"]
    )
    m = F.least(F.lit(k), F.col("_relevant"))
    return per_user.select(
        USER,
        (F.col("_hits") / F.lit(float(k))).alias(PRECISION),
        (F.col("_hits") / F.col("_relevant")).alias(RECALL),
        (F.col("_precision_sum") / m).alias(AVERAGE_PRECISION),
        (F.col("_dcg") / _ideal_dcg(m)).alias(NDCG),
    )


def ranking_metrics(
    recommended: DataFrame, relevant: DataFrame, k: int, catalogue_size: int
) -> dict[str, float | int]:
    """Mean precision@k, recall@k, MAP@k and NDCG@k, plus catalogue coverage@k.

    Args:
        recommended: (user, item, rank) recommendation lists (see the module docstring).
        relevant: (user, item) held-out interactions; defines the evaluated users.
        k: the cut-off rank.
        catalogue_size: the number of items that could be recommended.

    Returns:
        `{"precision", "recall", "map", "ndcg", "coverage"}` as floats and `"users"`, the
        number of evaluated users.

    Raises:
        MetricsError: `k` or `catalogue_size` not a positive integer, a missing column, or
            an empty `relevant` (no user to evaluate).
    """
    catalogue_size = _check_positive_int("catalogue_size", catalogue_size)
    per_user = per_user_metrics(recommended, relevant, k)
    means = per_user.agg(
        F.count(F.lit(1)).alias("users"),
        F.avg(PRECISION).alias("precision"),
        F.avg(RECALL).alias("recall"),
        F.avg(AVERAGE_PRECISION).alias("map"),
        F.avg(NDCG).alias("ndcg"),
    ).first()
    if not means["users"]:
        raise MetricsError("relevant has no rows: there is no user to evaluate")
    covered = top_k(recommended, k).select(ITEM).distinct().count()
    result: dict[str, float | int] = {
        name: float(means[name]) for name in ("precision", "recall", "map", "ndcg")
    }
    result["coverage"] = covered / catalogue_size
    result["users"] = int(means["users"])
    log.info("ranking metrics at k=%d: %s", k, result)
    return result


def ranking_metrics_python(
    recommended: Mapping[Hashable, Sequence[Hashable]],
    relevant: Mapping[Hashable, Set[Hashable]],
    k: int,
    catalogue_size: int,
) -> dict[str, float | int]:
    """The same metrics in plain Python: the reference for tests.

    Args:
        recommended: each user's recommendation list, best first (position i is rank i).
        relevant: each user's relevant items; users with an empty set are not evaluated,
            as they would have no row in the Spark input.
        k: the cut-off rank.
        catalogue_size: the number of items that could be recommended.

    Returns:
        The dictionary `ranking_metrics` returns.
    """
    k = _check_positive_int("k", k)
    catalogue_size = _check_positive_int("catalogue_size", catalogue_size)
    users = [u for u, items in relevant.items() if items]
    if not users:
        raise MetricsError("relevant has no items: there is no user to evaluate")
    totals = dict.fromkeys(("precision", "recall", "map", "ndcg"), 0.0)
    for user in users:
        truth = set(relevant[user])
        ranked = list(recommended.get(user, []))[:k]
        m = min(k, len(truth))
        hits = 0
        precision_sum = 0.0
        dcg = 0.0
        for i, item in enumerate(ranked, start=1):
            if item in truth:
                hits += 1
                precision_sum += hits / i
                dcg += 1.0 / math.log2(i + 1)
        totals["precision"] += hits / k
        totals["recall"] += hits / len(truth)
        totals["map"] += precision_sum / m
        totals["ndcg"] += dcg / sum(1.0 / math.log2(i + 1) for i in range(1, m + 1))
    result: dict[str, float | int] = {name: total / len(users) for name, total in totals.items()}
    covered = {item for ranked in recommended.values() for item in list(ranked)[:k]}
    result["coverage"] = len(covered) / catalogue_size
    result["users"] = len(users)
    return result
