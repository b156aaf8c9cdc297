"""The sales forecaster's inputs and network.

The skeleton model regresses log(1 + sales) of an open store-day on covariates known in
advance (calendar, promo, holidays, store attributes) plus the store's mean log sales over
the training period. The LSTM over past sales replaces it (same seams: feature builder,
torch module, scoring).
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

FEATURE_NAMES = (
    *[f"dow_{d}" for d in range(1, 8)],
    "promo",
    "school_holiday",
    "state_holiday",
    "promo2_active",
    "competition_open",
    *[f"store_type_{t}" for t in "abcd"],
    *[f"assortment_{a}" for a in "abc"],
    "log_competition_distance",
    "competition_distance_missing",
    "month_sin",
    "month_cos",
    "store_level",
)
N_FEATURES = len(FEATURE_NAMES)


def _flag(cond: Column) -> Column:
    return F.when(cond, F.lit(1.0)).otherwise(F.lit(0.0))


def store_levels(train_days: DataFrame) -> DataFrame:
    """Mean log(1 + sales) per store over open days of the training period only."""
    return (
        train_days.where(F.col("open") & (F.col("sales") > 0))
        .groupBy("store")
        .agg(F.avg(F.log1p("sales")).alias("store_level"))
    )


def with_features(days: DataFrame, levels: DataFrame, global_level: float) -> DataFrame:
    """Adds `features` (array<float>, FEATURE_NAMES order) to store-day rows."""
    joined = days.join(levels, on="store", how="left")
    distance = F.col("competition_distance_m")
    angle = (F.col("month") - 1) * (2 * math.pi / 12)
    parts = [
        *[_flag(F.col("day_of_week") == d) for d in range(1, 8)],
        _flag(F.col("promo")),
        _flag(F.col("school_holiday")),
        _flag(F.col("state_holiday") != "0"),
        _flag(F.col("promo2_active")),
        _flag(F.col("competition_open")),
        *[_flag(F.col("store_type") == t) for t in "abcd"],
        *[_flag(F.col("assortment") == a) for a in "abc"],
        F.coalesce(F.log1p(distance) / 10.0, F.lit(0.0)),
        _flag(distance.isNull()),
        F.sin(angle),
        F.cos(angle),
        F.coalesce(F.col("store_level"), F.lit(global_level)) - F.lit(global_level),
    ]
    return joined.withColumn("features", F.array(*[p.cast("float") for p in parts]))
