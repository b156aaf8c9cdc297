"""silver.store_daily_sales + silver.stores -> gold.store_day_features.

Every feature of a row uses only that day and the store's attributes, so nothing from the
future can leak into a training row. Lags and rolling means arrive with the LSTM
forecaster (they are windowed from the past only).
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from retail_lake.runner import JobContext, Output

log = logging.getLogger(__name__)

SALES = "silver.store_daily_sales"
STORES = "silver.stores"
FEATURES = "gold.store_day_features"


def store_day_features(sales: DataFrame, stores: DataFrame) -> DataFrame:
    """One row per store and day with calendar, competition and promo2 state."""
    joined = sales.join(
        stores.drop("_source_file", "_line_number", "_run_id", "_content_hash"),
        on="store",
        how="left",
    )
    competition_open = F.coalesce(
        F.col("date") >= F.col("competition_open_since"),
        F.col("competition_distance_m").isNotNull(),
    )
    promo2_active = (
        F.col("promo2")
        & F.coalesce(F.col("date") >= F.col("promo2_since"), F.lit(False))
        & F.array_contains(F.col("promo2_months"), F.month("date"))
    )
    return joined.select(
        "store",
        "date",
        "sales",
        "customers",
        "open",
        "promo",
        "state_holiday",
        "school_holiday",
        "day_of_week",
        F.dayofmonth("date").alias("day_of_month"),
        F.month("date").alias("month"),
        F.year("date").alias("year"),
        F.weekofyear("date").alias("week_of_year"),
        "store_type",
        "assortment",
        "competition_distance_m",
        F.coalesce(competition_open, F.lit(False)).alias("competition_open"),
        F.coalesce(promo2_active, F.lit(False)).alias("promo2_active"),
    )


def store_day_outputs(ctx: JobContext) -> list[Output]:
    """gold.store_day_features, or nothing when the Rossmann data was never loaded."""
    missing = [t for t in (SALES, STORES) if not ctx.lake.exists(t)]
    if missing:
        log.warning(
            "[%s] features: %s skipped: %s missing (land the Rossmann files, then run ingest "
            "and cleanse)",
            ctx.run_id,
            FEATURES,
            ", ".join(missing),
        )
        return []
    sales = ctx.read(SALES)
    max_store = ctx.cfg.get("features.max_store")
    if max_store:
        sales = sales.where(F.col("store") <= max_store)
    features = store_day_features(sales, ctx.read(STORES))
    return [Output(FEATURES, features, mode="merge")]
