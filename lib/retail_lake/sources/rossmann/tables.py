"""Rossmann's table contracts: the three landing files' bronze tables and their silver tables."""

from __future__ import annotations

from retail_lake.contracts import LINEAGE, Col, TableContract, meta_columns, raw_table

SALES_BRONZE = "bronze.rossmann_sales_raw"
PLANS_BRONZE = "bronze.rossmann_plans_raw"
STORES_BRONZE = "bronze.rossmann_stores_raw"
STORE_DAILY_SALES = "silver.store_daily_sales"
STORE_DAY_PLANS = "silver.store_day_plans"
STORES = "silver.stores"

# The store-day key, read by other packages (forecasting).
STORE = "store"
DATE = "date"
# silver.store_daily_sales's columns per store and day, in the contract's order.
STORE_DAY_COLUMNS = (
    STORE,
    DATE,
    "day_of_week",
    "sales",
    "customers",
    "open",
    "promo",
    "state_holiday",
    "school_holiday",
)
# What silver.store_day_plans knows of them in advance: all but sales and customers.
PLAN_COLUMNS = tuple(c for c in STORE_DAY_COLUMNS if c not in ("sales", "customers"))

BRONZE = [
    raw_table(
        SALES_BRONZE,
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
        PLANS_BRONZE,
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
        STORES_BRONZE,
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

SILVER = [
    TableContract(
        name=STORE_DAILY_SALES,
        description="One row per Rossmann store and day, typed. Closed days are kept "
        "(open = false, sales 0); gaps in a store's series are not filled.",
        columns=(
            Col(STORE, "int", "Rossmann store number (1..1115)", False),
            Col(DATE, "date", "calendar day (UTC)", False),
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
        keys=(STORE, DATE),
        source=SALES_BRONZE,
        zorder_by=("store", "date"),  # a store's days
    ),
    TableContract(
        name=STORE_DAY_PLANS,
        description="One row per Rossmann store and future day with what is known in advance "
        "(open, promotion, holidays): the covariates `forecast` uses for days after the data.",
        columns=(
            Col(STORE, "int", "Rossmann store number", False),
            Col(DATE, "date", "planned day (UTC)", False),
            Col("day_of_week", "int", "ISO day of week, 1 = Monday .. 7 = Sunday", False),
            Col("open", "boolean", "store will be open", False),
            Col("promo", "boolean", "a store promotion will run", False),
            Col("state_holiday", "string", "state holiday code: 0, a, b or c", False),
            Col("school_holiday", "boolean", "store affected by school holidays", False),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=(STORE, DATE),
        source=PLANS_BRONZE,
    ),
    TableContract(
        name=STORES,
        description="One row per Rossmann store with its attributes parsed into dates.",
        columns=(
            Col(STORE, "int", "Rossmann store number", False),
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
        keys=(STORE,),
        source=STORES_BRONZE,
    ),
]
