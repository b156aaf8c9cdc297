"""The table contracts of retail-lake, by layer. `REGISTRY` is the one registry.

The README's table catalog is generated from here (`retail-lake catalog --readme README.md`).
"""

from __future__ import annotations

from retail_lake.contracts import (
    LINEAGE,
    Col,
    Registry,
    TableContract,
    meta_columns,
    raw_table,
)
from retail_lake.geo import tables as geo_tables
from retail_lake.images import tables as image_tables
from retail_lake.locations import tables as location_tables
from retail_lake.recommend import model_tables
from retail_lake.recommend import tables as recommend_tables
from retail_lake.retail import tables as retail_tables

# ----------------------------------------------------------------------------- bronze
BRONZE = [
    raw_table(
        "bronze.rossmann_sales_raw",
        "rossmann/train.csv.gz",
        [
            ("store", "Store"),
            ("day_of_week", "DayOfWeek"),
            ("date", "Date"),
            ("sales", "Sales"),
            ("customers", "Customers"),
            ("open", "Open"),
            ("promo", "Promo"),
            ("state_holiday", "StateHoliday"),
            ("school_holiday", "SchoolHoliday"),
        ],
        "Rossmann daily sales per store, every field as text, with provenance.",
    ),
    raw_table(
        "bronze.rossmann_plans_raw",
        "rossmann/plans.csv.gz",
        [
            ("store", "Store"),
            ("day_of_week", "DayOfWeek"),
            ("date", "Date"),
            ("open", "Open"),
            ("promo", "Promo"),
            ("state_holiday", "StateHoliday"),
            ("school_holiday", "SchoolHoliday"),
        ],
        "Rossmann days after the data with their known covariates (open, promotion, "
        "holidays), every field as text, with provenance.",
    ),
    raw_table(
        "bronze.rossmann_stores_raw",
        "rossmann/store.csv.gz",
        [
            ("store", "Store"),
            ("store_type", "StoreType"),
            ("assortment", "Assortment"),
            ("competition_distance", "CompetitionDistance"),
            ("competition_open_since_month", "CompetitionOpenSinceMonth"),
            ("competition_open_since_year", "CompetitionOpenSinceYear"),
            ("promo2", "Promo2"),
            ("promo2_since_week", "Promo2SinceWeek"),
            ("promo2_since_year", "Promo2SinceYear"),
            ("promo_interval", "PromoInterval"),
        ],
        "Rossmann store attributes, every field as text, with provenance.",
    ),
]

# ----------------------------------------------------------------------------- silver
SILVER = [
    TableContract(
        name="silver.store_daily_sales",
        description="One row per Rossmann store and day, typed. Closed days are kept "
        "(open = false, sales 0); gaps in a store's series are not filled.",
        columns=(
            Col("store", "int", "Rossmann store number (1..1115)", False),
            Col("date", "date", "calendar day (UTC)", False),
            Col("day_of_week", "int", "ISO day of week, 1 = Monday .. 7 = Sunday", False),
            Col("sales", "int", "turnover of the day (EUR); 0 on closed days", False),
            Col("customers", "int", "customers served that day", False),
            Col("open", "boolean", "store was open", False),
            Col("promo", "boolean", "a store promotion ran that day", False),
            Col(
                "state_holiday",
                "string",
                "state holiday code: 0 none, a public, b Easter, c Christmas",
                False,
            ),
            Col("school_holiday", "boolean", "store affected by school holidays", False),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("store", "date"),
        source="bronze.rossmann_sales_raw",
    ),
    TableContract(
        name="silver.store_day_plans",
        description="One row per Rossmann store and future day with what is known in advance "
        "(open, promotion, holidays): the covariates `forecast` uses for days after the data.",
        columns=(
            Col("store", "int", "Rossmann store number", False),
            Col("date", "date", "planned day (UTC)", False),
            Col("day_of_week", "int", "ISO day of week, 1 = Monday .. 7 = Sunday", False),
            Col("open", "boolean", "store will be open", False),
            Col("promo", "boolean", "a store promotion will run", False),
            Col("state_holiday", "string", "state holiday code: 0, a, b or c", False),
            Col("school_holiday", "boolean", "store affected by school holidays", False),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("store", "date"),
        source="bronze.rossmann_plans_raw",
    ),
    TableContract(
        name="silver.stores",
        description="One row per Rossmann store with its attributes parsed into dates.",
        columns=(
            Col("store", "int", "Rossmann store number", False),
            Col("store_type", "string", "store model a..d", False),
            Col("assortment", "string", "assortment level: a basic, b extra, c extended", False),
            Col(
                "competition_distance_m",
                "double",
                "metres to the nearest competitor; null when unknown",
            ),
            Col(
                "competition_open_since",
                "date",
                "first day of the month the nearest competitor opened; null when unknown",
            ),
            Col("promo2", "boolean", "store takes part in the continuing promotion Promo2", False),
            Col("promo2_since", "date", "Monday of the ISO week Promo2 started; null if none"),
            Col(
                "promo2_months",
                "array<int>",
                "months (1..12) in which a Promo2 round starts; empty if none",
                False,
            ),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("store",),
        source="bronze.rossmann_stores_raw",
    ),
    TableContract(
        name="silver.quarantine",
        description="Every rejected record, with where it came from, the rule it broke and "
        "its raw payload (personal fields pseudonymised).",
        columns=(
            Col("source", "string", "source or table the record came from", False),
            Col("stage", "string", "ingest or cleanse", False),
            Col("rule", "string", "machine-readable rule name, e.g. column_count", False),
            Col("column", "string", "the column at fault, when one is"),
            Col("reason", "string", "readable reason", False),
            Col("payload", "string", "the raw line (ingest) or the bronze fields as JSON"),
            Col("_source_file", "string", "landing file", False),
            Col("_line_number", "bigint", "line in that file", False),
            Col(
                "_quarantined_at",
                "timestamp",
                "when the record was first rejected (UTC); not part of the content hash",
                False,
            ),
            *meta_columns(),
        ),
        keys=("source", "stage", "_source_file", "_line_number", "rule"),
        source="ingest, cleanse",
        retention_days=365,
    ),
]

# ----------------------------------------------------------------------------- gold
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
        name="gold.store_day_features",
        description="Per store and day: the day's facts plus calendar and store features. "
        "Features use only the day itself and the store's attributes.",
        columns=(
            Col("store", "int", "Rossmann store number", False),
            Col("date", "date", "calendar day", False),
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
        keys=("store", "date"),
        partition_by=("year",),
        source="silver.store_daily_sales, silver.stores",
    ),
    TableContract(
        name="gold.sales_windows",
        description="The LSTM forecaster's training table: one row per store and window of "
        "lookback + horizon consecutive days (forecast.lookback_days + forecast.test_days), as "
        "per-day arrays. Windows never span a gap in a store's series. Forecast starts are "
        "aligned to the data's last day every forecast.window_stride days: the last window per "
        "store forecasts the test period, the one a horizon earlier the validation period.",
        columns=(
            Col("store", "int", "Rossmann store number", False),
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
        keys=("store", "forecast_start"),
        write_mode="overwrite",
        source="gold.store_day_features",
    ),
    TableContract(
        name="gold.sales_forecasts",
        description="Daily sales forecasts per store from a registered model, for the "
        "backtest period and for future dates whose covariates are known.",
        columns=(
            Col("store", "int", "Rossmann store number", False),
            Col("date", "date", "forecast day", False),
            Col("forecast", "double", "forecast turnover (EUR); 0 on closed days", False),
            Col("actual", "int", "observed turnover when known (backtest), else null"),
            *MODEL_LINEAGE,
            *meta_columns(),
        ),
        keys=("store", "date", "model_name"),
        source="gold.store_day_features + the sales forecaster",
    ),
]

# ----------------------------------------------------------------------------- ops
OPS = [
    TableContract(
        name="ops.job_runs",
        description="One row per job run: written as 'running' when it starts, completed "
        "with its outcome when it ends.",
        columns=(
            Col("run_id", "string", "unique id of the run", False),
            Col("job", "string", "job name", False),
            Col("parent_run_id", "string", "the pipeline run this step belongs to"),
            Col("status", "string", "running, succeeded or failed", False),
            Col("profile", "string", "configuration profile", False),
            Col("run_date", "date", "logical run date / as-of snapshot"),
            Col("started_at", "timestamp", "start (UTC)", False),
            Col("ended_at", "timestamp", "end (UTC); null while running"),
            Col("duration_s", "double", "wall-clock seconds"),
            Col("parameters", "map<string,string>", "job parameters and --set overrides"),
            Col("rows_read", "map<string,bigint>", "rows read per input"),
            Col(
                "rows_written",
                "map<string,bigint>",
                "rows inserted+updated+deleted per output table",
            ),
            Col("versions_read", "map<string,bigint>", "Delta version read per input table"),
            Col("versions_written", "map<string,bigint>", "Delta version written per output table"),
            Col("conservation", "string", "row-conservation checks as JSON"),
            Col("error", "string", "error summary when failed"),
            Col("host", "string", "driver host"),
            Col("spark_app_id", "string", "Spark application id"),
        ),
        keys=("run_id",),
        write_mode="merge",
        source="every job",
        retention_days=365,
    ),
    TableContract(
        name="ops.unit_states",
        description="One row per unit of work a job considered (a source in cleanse, a group "
        "of feature tables) in a successful run: rebuilt, or skipped because nothing that "
        "shapes its rows changed since (runner.skip_unchanged).",
        columns=(
            Col("run_id", "string", "job run (ops.job_runs.run_id)", False),
            Col("job", "string", "job name", False),
            Col("unit", "string", "unit of work, e.g. 'cleanse online_retail'", False),
            Col("status", "string", "built or unchanged (skipped)", False),
            Col(
                "fingerprint",
                "string",
                "hash of the input versions, settings, run date and code the rows came from",
                False,
            ),
            Col("output_versions", "map<string,bigint>", "Delta version of each output after"),
            Col("recorded_at", "timestamp", "when (UTC)", False),
        ),
        write_mode="append",
        source="every job with units (cleanse, features)",
        retention_days=365,
    ),
    TableContract(
        name="ops.quality_results",
        description="One row per expectation evaluated by a quality gate.",
        columns=(
            Col("run_id", "string", "run that evaluated it", False),
            Col("table_name", "string", "table whose pending output was validated", False),
            Col("expectation", "string", "Great Expectations expectation type", False),
            Col("column", "string", "column, when the expectation has one"),
            Col("kwargs", "string", "the expectation's arguments as JSON", False),
            Col("severity", "string", "critical (stops the publish) or warning", False),
            Col("success", "boolean", "whether it held", False),
            Col("element_count", "bigint", "rows evaluated"),
            Col("unexpected_count", "bigint", "rows that broke it"),
            Col("observed", "string", "observed value / partial unexpected list as JSON"),
            Col("evaluated_at", "timestamp", "when (UTC)", False),
        ),
        write_mode="append",
        source="quality gates",
        retention_days=365,
    ),
    TableContract(
        name="ops.model_metrics",
        description="Metrics of every model run (MLflow holds the full tracking).",
        columns=(
            Col("run_id", "string", "job run", False),
            Col("model_name", "string", "model", False),
            Col("model_version", "string", "registered version; null when not published"),
            Col("mlflow_run_id", "string", "MLflow run id"),
            Col("split", "string", "train, validation, test or baseline name", False),
            Col("metric", "string", "metric name", False),
            Col("value", "double", "metric value", False),
            Col("input_versions", "map<string,bigint>", "Delta versions of the inputs"),
            Col("recorded_at", "timestamp", "when (UTC)", False),
        ),
        write_mode="append",
        source="training jobs",
        retention_days=365,
    ),
]

REGISTRY = Registry(
    [
        *BRONZE,
        *retail_tables.BRONZE,
        *geo_tables.BRONZE,
        *image_tables.BRONZE,
        *SILVER,
        *retail_tables.SILVER,
        *geo_tables.SILVER,
        *image_tables.SILVER,
        *GOLD,
        *location_tables.GOLD,
        *image_tables.GOLD,
        *recommend_tables.FEATURE_TABLES,
        *model_tables.MODEL_TABLES,
        *OPS,
    ]
)
