"""silver.store_daily_sales + silver.stores -> gold.store_day_features and gold.sales_windows.

A row's calendar, promotion and store features describe that day; its lags and rolling means
come from strictly earlier calendar days of the same store, so nothing from the day itself or
the future leaks in. The LSTM's training windows (`forecasting.windows`) are built from it.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.forecasting.tables import SALES_WINDOWS, STORE_DAY_FEATURES
from retail_lake.runner import JobContext, Output
from retail_lake.sources.rossmann.tables import (
    DATE,
    STORE,
    STORE_DAILY_SALES,
    STORE_DAY_COLUMNS,
    STORES,
)

log = logging.getLogger(__name__)


def store_day_features(sales: DataFrame, stores: DataFrame) -> DataFrame:
    """One row per store and day with calendar, competition and promo2 state."""
    joined = sales.join(
        stores.drop("_source_file", "_line_number", "_run_id", "_content_hash"),
        on=STORE,
        how="left",
    )
    competition_open = F.coalesce(
        F.col(DATE) >= F.col("competition_open_since"),
        F.col("competition_distance_m").isNotNull(),
    )
    promo2_active = (
        F.col("promo2")
        & F.coalesce(F.col(DATE) >= F.col("promo2_since"), F.lit(False))
        & F.array_contains(F.col("promo2_months"), F.month(DATE))
    )
    return joined.select(
        *STORE_DAY_COLUMNS,
        F.dayofmonth(DATE).alias("day_of_month"),
        F.month(DATE).alias("month"),
        F.year(DATE).alias("year"),
        F.weekofyear(DATE).alias("week_of_year"),
        "store_type",
        "assortment",
        "competition_distance_m",
        F.coalesce(competition_open, F.lit(False)).alias("competition_open"),
        F.coalesce(promo2_active, F.lit(False)).alias("promo2_active"),
    )


# (column, source, first day back, last day back, how): rolling over calendar days before
# the row's day; averages count open days only; null when no such day is in the data.
HISTORY = (
    ("sales_lag_7", "sales", 7, 7, "value"),
    ("sales_lag_14", "sales", 14, 14, "value"),
    ("sales_mean_7", "sales", 7, 1, "open_mean"),
    ("sales_mean_28", "sales", 28, 1, "open_mean"),
    ("customers_mean_28", "customers", 28, 1, "open_mean"),
    ("open_days_28", "open", 28, 1, "count_open"),
)


def with_history(days: DataFrame) -> DataFrame:
    """Adds the HISTORY lags and rolling means, from earlier calendar days only.

    Frames are ranges of days (a missing day is absent, not shifted over), ending at least
    one day before the row, so no row sees its own or a later day's sales.
    """
    day = F.datediff(F.col(DATE), F.lit("1970-01-01").cast("date"))
    out = days.withColumn("_day", day)
    for name, source, back_from, back_to, how in HISTORY:
        frame = Window.partitionBy(STORE).orderBy("_day").rangeBetween(-back_from, -back_to)
        if how == "value":
            col = F.max(F.col(source)).over(frame)
        elif how == "open_mean":
            col = F.avg(F.when(F.col("open"), F.col(source).cast("double"))).over(frame)
        else:
            col = F.count(F.when(F.col("open"), 1)).over(frame).cast("int")
        out = out.withColumn(name, col)
    return out.drop("_day")


def store_day_outputs(ctx: JobContext, cached: list | None = None) -> list[Output]:
    """gold.store_day_features and gold.sales_windows, or nothing when the Rossmann data was
    never loaded. The features are persisted (and added to `cached`): both outputs read them."""
    missing = [t for t in (STORE_DAILY_SALES, STORES) if not ctx.lake.exists(t)]
    if missing:
        log.warning(
            "[%s] features: %s skipped: %s missing (land the Rossmann files, then run ingest "
            "and cleanse)",
            ctx.run_id,
            STORE_DAY_FEATURES,
            ", ".join(missing),
        )
        return []
    unit = "features store_day"
    if ctx.unchanged(unit, (STORE_DAILY_SALES, STORES), dated=False):
        return []
    sales = ctx.read(STORE_DAILY_SALES)
    max_store = ctx.cfg.get("features.max_store")
    if max_store:
        sales = sales.where(F.col(STORE) <= max_store)
    from retail_lake.forecasting.windows import WindowSpec, windows

    spec = WindowSpec.from_config(ctx.cfg["forecast"])
    features = with_history(store_day_features(sales, ctx.read(STORES))).persist()
    if cached is not None:
        cached.append(features)
    return [
        # Rebuilt from all of silver: a store or day no longer produced (features.max_store
        # lowered, a silver row gone) is retired.
        Output(STORE_DAY_FEATURES, features, mode="merge", unit=unit, retire="true"),
        Output(SALES_WINDOWS, windows(features, spec), mode="overwrite", unit=unit),
    ]
