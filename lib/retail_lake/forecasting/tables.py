"""The forecasting capability's gold tables: store-day features, training windows, forecasts."""

from __future__ import annotations

from retail_lake.contracts import Col, TableContract, meta_columns
from retail_lake.sources.rossmann.tables import DATE, STORE, STORE_DAILY_SALES, STORES

STORE_DAY_FEATURES = "gold.store_day_features"
SALES_WINDOWS = "gold.sales_windows"
SALES_FORECASTS = "gold.sales_forecasts"

MODEL_LINEAGE = (
    Col("model_name", "string", "registered model name", False),
    Col("model_version", "string", "registered model version that produced the row", False),
    Col(
        "input_versions",
        "map<string,bigint>",
        "Delta version of every input table the row was computed from",
        False,
    ),
)

GOLD = [
    TableContract(
        name=STORE_DAY_FEATURES,
        description="Per store and day: the day's facts plus calendar and store features. "
        "Features use only the day itself and the store's attributes.",
        columns=(
            Col(STORE, "int", "Rossmann store number", False),
            Col(DATE, "date", "calendar day", False),
            Col("sales", "int", "turnover (the forecasting target)", False),
            Col("customers", "int", "customers (not known in advance; not a feature)", False),
            Col("open", "boolean", "store open", False),
            Col("promo", "boolean", "promotion day", False),
            Col("state_holiday", "string", "0, a, b or c", False),
            Col("school_holiday", "boolean", "school holiday", False),
            Col("day_of_week", "int", "1 = Monday .. 7 = Sunday", False),
            Col("day_of_month", "int", "1..31", False),
            Col("month", "int", "1..12", False),
            Col("year", "int", "calendar year", False),
            Col("week_of_year", "int", "ISO week 1..53", False),
            Col("store_type", "string", "store model a..d", False),
            Col("assortment", "string", "assortment level a..c", False),
            Col("competition_distance_m", "double", "metres to the nearest competitor"),
            Col("competition_open", "boolean", "the nearest competitor was open that day", False),
            Col("promo2_active", "boolean", "a Promo2 round was running that day", False),
            Col("sales_lag_7", "int", "sales 7 days before; null when that day is missing"),
            Col("sales_lag_14", "int", "sales 14 days before; null when that day is missing"),
            Col(
                "sales_mean_7",
                "double",
                "mean sales of the open days among the 7 days before; null if none",
            ),
            Col(
                "sales_mean_28",
                "double",
                "mean sales of the open days among the 28 days before; null if none",
            ),
            Col(
                "customers_mean_28",
                "double",
                "mean customers of the open days among the 28 days before; null if none",
            ),
            Col("open_days_28", "int", "open days among the 28 days before", False),
            *meta_columns(),
        ),
        keys=(STORE, DATE),
        partition_by=("year",),
        source=f"{STORE_DAILY_SALES}, {STORES}",
        zorder_by=("store", "date"),  # a store's days within a year
    ),
    TableContract(
        name=SALES_WINDOWS,
        description="The LSTM forecaster's training table: one row per store and window of "
        "lookback + horizon consecutive days (forecast.lookback_days + forecast.test_days), as "
        "per-day arrays. Windows never span a gap in a store's series. Forecast starts are "
        "aligned to the data's last day every forecast.window_stride days: the last window per "
        "store forecasts the test period, the one a horizon earlier the validation period.",
        columns=(
            Col(STORE, "int", "Rossmann store number", False),
            Col("forecast_start", "date", "first forecast day (after the lookback)", False),
            Col("forecast_end", "date", "last forecast day", False),
            Col("lookback_start", "date", "first day of the window", False),
            Col("sales", "array<float>", "log(1 + sales) per day of the window", False),
            Col("customers", "array<float>", "log(1 + customers) per day", False),
            Col("open", "array<float>", "1 if the store was open", False),
            Col("promo", "array<float>", "1 on promotion days", False),
            Col("state_holiday", "array<float>", "1 on any state holiday", False),
            Col("school_holiday", "array<float>", "1 on school holidays", False),
            Col("promo2_active", "array<float>", "1 while a Promo2 round runs", False),
            Col("day_of_week", "array<float>", "1 = Monday .. 7 = Sunday", False),
            Col("month", "array<float>", "1..12", False),
            Col("day_of_month", "array<float>", "1..31", False),
            Col("store_type", "string", "store model a..d", False),
            Col("assortment", "string", "assortment level a..c", False),
            Col("competition_distance_m", "double", "metres to the nearest competitor"),
            Col("competition_open", "boolean", "the competitor was open on forecast_start", False),
            *meta_columns(),
        ),
        keys=(STORE, "forecast_start"),
        write_mode="overwrite",
        source=STORE_DAY_FEATURES,
    ),
    TableContract(
        name=SALES_FORECASTS,
        description="Daily sales forecasts per store from a registered model, for the "
        "backtest period and for future dates whose covariates are known.",
        columns=(
            Col(STORE, "int", "Rossmann store number", False),
            Col(DATE, "date", "forecast day", False),
            Col("forecast", "double", "forecast turnover (EUR); 0 on closed days", False),
            Col(
                "forecast_p10",
                "double",
                "10th percentile of the turnover (EUR): the 80% interval's lower end; 0 on "
                "closed days; null from a model registered before the network had one",
            ),
            Col(
                "forecast_p90",
                "double",
                "90th percentile of the turnover (EUR): the 80% interval's upper end",
            ),
            Col("actual", "int", "observed turnover when known (backtest), else null"),
            *MODEL_LINEAGE,
            *meta_columns(),
        ),
        keys=(STORE, DATE, "model_name"),
        source=f"{STORE_DAY_FEATURES} + the sales forecaster",
        zorder_by=("store", "date"),  # a store's forecast
    ),
]
