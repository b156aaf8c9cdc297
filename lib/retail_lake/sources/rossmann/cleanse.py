"""Rossmann bronze -> silver: typed daily sales and store attributes.

Rules (each one documented in the table catalog through the contract's comments):
- every field is parsed with a `try_*` function; a value that does not parse rejects the
  row with the column named; `StateHoliday` is a code (0, a, b, c), read as text;
- flags (`Open`, `Promo`, `SchoolHoliday`, `Promo2`) must be 0 or 1;
- closed days are kept (open = false);
- plans (days after the data with their covariates) follow the same rules without sales and
  customers; a plan line without `Open` is rejected (the forecast needs it);
- two lines with the same (store, date): identical ones are removed and counted, differing
  ones quarantine all but the latest line;
- gaps in a store's series are left as gaps (nothing is invented).
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from retail_lake.cleansing import (
    Cleanser,
    Persist,
    Rule,
    arrivals,
    conflict_errors,
    deduplicate,
    no_persist,
    parse_rule,
    quarantine_rows,
    required_rule,
    single_table,
    split_valid,
    with_errors,
)
from retail_lake.sources.rossmann.tables import (
    PLAN_COLUMNS,
    PLANS_BRONZE,
    SALES_BRONZE,
    STORE_DAILY_SALES,
    STORE_DAY_COLUMNS,
    STORE_DAY_PLANS,
    STORES,
    STORES_BRONZE,
)

SALES_SOURCE = "rossmann_sales"
STORES_SOURCE = "rossmann_stores"
PLANS_SOURCE = "rossmann_plans"
STATE_HOLIDAYS = ("0", "a", "b", "c")
MONTHS = {
    "Jan": 1,
    "Feb": 2,
    "Mar": 3,
    "Apr": 4,
    "May": 5,
    "Jun": 6,
    "Jul": 7,
    "Aug": 8,
    "Sept": 9,
    "Sep": 9,
    "Oct": 10,
    "Nov": 11,
    "Dec": 12,
}


def _date(raw: str) -> Column:
    # Spark 4.0 has no try_to_date: try_to_timestamp yields null for a bad value.
    return F.expr(f"CAST(try_to_timestamp(trim(`{raw}`), 'yyyy-MM-dd') AS DATE)")


def _int(raw: str) -> Column:
    return F.expr(f"try_cast(trim(`{raw}`) AS INT)")


def _flag(raw: str) -> Column:
    v = F.trim(F.col(raw))
    return F.when(v == "1", F.lit(True)).when(v == "0", F.lit(False))


def _flag_rule(name: str, column: str, raw: str) -> Rule:
    v = F.trim(F.col(raw))
    return Rule(
        name,
        column,
        v.isNotNull() & ~v.isin("0", "1"),
        f"{column}: {{value}} is not 0 or 1",
    )


def _key_rules() -> list[Rule]:
    """Store, date and weekday must parse (sales and plan lines)."""
    return [
        parse_rule("unparseable_store", "store", "store", _int("store"), "an integer"),
        parse_rule("unparseable_date", "date", "date", _date("date"), "a date (yyyy-MM-dd)"),
        parse_rule(
            "unparseable_day_of_week",
            "day_of_week",
            "day_of_week",
            _int("day_of_week"),
            "an integer",
        ),
    ]


def _weekday_rule(name: str) -> Rule:
    return Rule(
        name,
        "day_of_week",
        ~_int("day_of_week").between(1, 7),
        "day_of_week: {value} is not 1..7",
    )


def _covariate_rules() -> list[Rule]:
    """A known holiday code and 0/1 flags (sales and plan lines)."""
    return [
        Rule(
            "invalid_state_holiday",
            "state_holiday",
            ~F.trim(F.col("state_holiday")).isin(*STATE_HOLIDAYS),
            "state_holiday: {value} is not one of 0, a, b, c",
        ),
        _flag_rule("invalid_open", "open", "open"),
        _flag_rule("invalid_promo", "promo", "promo"),
        _flag_rule("invalid_school_holiday", "school_holiday", "school_holiday"),
    ]


def _typed(bronze: DataFrame, raw: tuple[str, ...], extra: list[Column]) -> DataFrame:
    """The raw columns, provenance, and the typed (t_) key and covariate columns + `extra`."""
    return bronze.select(
        *raw,
        "_source_file",
        "_line_number",
        _int("store").alias("t_store"),
        _date("date").alias("t_date"),
        _int("day_of_week").alias("t_day_of_week"),
        *extra,
        _flag("open").alias("t_open"),
        _flag("promo").alias("t_promo"),
        F.trim(F.col("state_holiday")).alias("t_state_holiday"),
        _flag("school_holiday").alias("t_school_holiday"),
    )


SALES_RAW = (
    "store",
    "day_of_week",
    "date",
    "sales",
    "customers",
    "open",
    "promo",
    "state_holiday",
    "school_holiday",
)


def type_sales(bronze: DataFrame) -> DataFrame:
    """Typed columns (prefixed `t_`) and `_errors` for every bronze sales row."""
    raw_of = {c: c for c in SALES_RAW}
    rules = [
        required_rule("missing_store", "store", "store"),
        required_rule("missing_day_of_week", "day_of_week", "day_of_week"),
        required_rule("missing_date", "date", "date"),
        required_rule("missing_sales", "sales", "sales"),
        required_rule("missing_customers", "customers", "customers"),
        required_rule("missing_open", "open", "open"),
        required_rule("missing_promo", "promo", "promo"),
        required_rule("missing_state_holiday", "state_holiday", "state_holiday"),
        required_rule("missing_school_holiday", "school_holiday", "school_holiday"),
        *_key_rules(),
        parse_rule("unparseable_sales", "sales", "sales", _int("sales"), "an integer"),
        parse_rule(
            "unparseable_customers", "customers", "customers", _int("customers"), "an integer"
        ),
        _weekday_rule("invalid_day_of_week"),
        Rule("negative_sales", "sales", _int("sales") < 0, "sales: {value} is negative"),
        Rule(
            "negative_customers",
            "customers",
            _int("customers") < 0,
            "customers: {value} is negative",
        ),
        *_covariate_rules(),
        Rule(
            "sales_on_closed_day",
            "sales",
            (F.trim(F.col("open")) == "0") & (_int("sales") > 0),
            "sales: {value} reported on a closed day",
        ),
    ]
    typed = _typed(
        bronze, SALES_RAW, [_int("sales").alias("t_sales"), _int("customers").alias("t_customers")]
    )
    return with_errors(typed, rules, raw_of)


def _silver_sales(valid: DataFrame) -> DataFrame:
    return valid.select(
        F.col("t_store").alias("store"),
        F.col("t_date").alias("date"),
        F.col("t_day_of_week").alias("day_of_week"),
        F.col("t_sales").alias("sales"),
        F.col("t_customers").alias("customers"),
        F.col("t_open").alias("open"),
        F.col("t_promo").alias("promo"),
        F.col("t_state_holiday").alias("state_holiday"),
        F.col("t_school_holiday").alias("school_holiday"),
        "_source_file",
        "_line_number",
    )


SALES_CONTENT = STORE_DAY_COLUMNS


def _per_store_day(
    bronze: DataFrame,
    typed: DataFrame,
    to_silver,
    source: str,
    raw: tuple[str, ...],
    content: tuple[str, ...],
    at: datetime,
    persist: Persist,
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver rows, quarantine rows, exact duplicates removed) of typed bronze rows keyed by
    (store, date): rows breaking a rule and all but the latest of differing duplicates go
    to quarantine; identical duplicates are removed and counted."""
    valid, rejected = split_valid(typed)
    kept, exact, conflict = deduplicate(
        to_silver(valid), ("store", "date"), content, persist=persist, arrived=arrivals(bronze)
    )
    conflicts = conflict_errors(
        conflict.select("_source_file", "_line_number").join(
            bronze.select(*raw, "_source_file", "_line_number"),
            on=["_source_file", "_line_number"],
            how="left",
        ),
        ("store", "date"),
    )
    quarantine = quarantine_rows(rejected, source, raw, at).unionByName(
        quarantine_rows(conflicts, source, raw, at)
    )
    return kept, quarantine, exact


def cleanse_sales(
    bronze: DataFrame, at: datetime, persist: Persist = no_persist
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.store_daily_sales rows, quarantine rows, exact duplicates removed)."""
    typed = type_sales(bronze)
    return _per_store_day(
        bronze, typed, _silver_sales, SALES_SOURCE, SALES_RAW, SALES_CONTENT, at, persist
    )


PLANS_RAW = (
    "store",
    "day_of_week",
    "date",
    "open",
    "promo",
    "state_holiday",
    "school_holiday",
)
PLANS_CONTENT = PLANS_RAW


def type_plans(bronze: DataFrame) -> DataFrame:
    """Typed columns (prefixed `t_`) and `_errors` for every bronze plan row."""
    raw_of = {c: c for c in PLANS_RAW}
    rules = [
        required_rule("missing_store", "store", "store"),
        required_rule("missing_day_of_week", "day_of_week", "day_of_week"),
        required_rule("missing_date", "date", "date"),
        required_rule("missing_open", "open", "open"),
        required_rule("missing_promo", "promo", "promo"),
        required_rule("missing_state_holiday", "state_holiday", "state_holiday"),
        required_rule("missing_school_holiday", "school_holiday", "school_holiday"),
        *_key_rules(),
        _weekday_rule("invalid_day_of_week"),
        *_covariate_rules(),
    ]
    return with_errors(_typed(bronze, PLANS_RAW, []), rules, raw_of)


def _silver_plans(valid: DataFrame) -> DataFrame:
    return valid.select(
        *[F.col(f"t_{c}").alias(c) for c in PLAN_COLUMNS], "_source_file", "_line_number"
    )


def cleanse_plans(
    bronze: DataFrame, at: datetime, persist: Persist = no_persist
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.store_day_plans rows, quarantine rows, exact duplicates removed)."""
    typed = type_plans(bronze)
    return _per_store_day(
        bronze, typed, _silver_plans, PLANS_SOURCE, PLANS_RAW, PLANS_CONTENT, at, persist
    )


STORES_RAW = (
    "store",
    "store_type",
    "assortment",
    "competition_distance",
    "competition_open_since_month",
    "competition_open_since_year",
    "promo2",
    "promo2_since_week",
    "promo2_since_year",
    "promo_interval",
)


def iso_week_monday(year: Column, week: Column) -> Column:
    """The Monday of ISO week `week` of `year` (week 1 holds January 4th)."""
    jan4 = F.make_date(year, F.lit(1), F.lit(4))
    monday_week1 = F.date_sub(jan4, (F.dayofweek(jan4) + 5) % 7)
    return F.date_add(monday_week1, (week - 1) * 7)


def promo_months(raw: Column) -> Column:
    """'Feb,May,Aug,Nov' -> [2, 5, 8, 11]; empty text -> []."""
    mapping = F.create_map(*[x for k, v in MONTHS.items() for x in (F.lit(k), F.lit(v))])
    parts = F.filter(F.split(F.coalesce(F.trim(raw), F.lit("")), ","), lambda p: p != "")
    return F.transform(parts, lambda p: F.try_element_at(mapping, F.trim(p)))


def cleanse_stores(
    bronze: DataFrame, at: datetime, persist: Persist = no_persist
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.stores rows, quarantine rows, exact duplicates removed); about a thousand
    stores: nothing is worth persisting."""
    raw_of = {c: c for c in STORES_RAW}
    months = promo_months(F.col("promo_interval"))
    rules = [
        required_rule("missing_store", "store", "store"),
        required_rule("missing_store_type", "store_type", "store_type"),
        required_rule("missing_assortment", "assortment", "assortment"),
        required_rule("missing_promo2", "promo2", "promo2"),
        parse_rule("unparseable_store", "store", "store", _int("store"), "an integer"),
        parse_rule(
            "unparseable_competition_distance",
            "competition_distance",
            "competition_distance",
            F.expr("try_cast(trim(competition_distance) AS DOUBLE)"),
            "a number",
        ),
        parse_rule(
            "unparseable_competition_open_since_month",
            "competition_open_since_month",
            "competition_open_since_month",
            _int("competition_open_since_month"),
            "an integer",
        ),
        parse_rule(
            "unparseable_competition_open_since_year",
            "competition_open_since_year",
            "competition_open_since_year",
            _int("competition_open_since_year"),
            "an integer",
        ),
        parse_rule(
            "unparseable_promo2_since_week",
            "promo2_since_week",
            "promo2_since_week",
            _int("promo2_since_week"),
            "an integer",
        ),
        parse_rule(
            "unparseable_promo2_since_year",
            "promo2_since_year",
            "promo2_since_year",
            _int("promo2_since_year"),
            "an integer",
        ),
        Rule(
            "invalid_store_type",
            "store_type",
            ~F.trim("store_type").isin("a", "b", "c", "d"),
            "store_type: {value} is not a..d",
        ),
        Rule(
            "invalid_assortment",
            "assortment",
            ~F.trim("assortment").isin("a", "b", "c"),
            "assortment: {value} is not a..c",
        ),
        _flag_rule("invalid_promo2", "promo2", "promo2"),
        Rule(
            "invalid_promo_interval",
            "promo_interval",
            F.exists(months, lambda m: m.isNull()),
            "promo_interval: {value} has a month name that is not recognised",
        ),
        Rule(
            "invalid_competition_open_since_month",
            "competition_open_since_month",
            ~_int("competition_open_since_month").between(1, 12),
            "competition_open_since_month: {value} is not 1..12",
        ),
        Rule(
            "invalid_promo2_since_week",
            "promo2_since_week",
            ~_int("promo2_since_week").between(1, 53),
            "promo2_since_week: {value} is not 1..53",
        ),
    ]
    comp_month, comp_year = (
        _int("competition_open_since_month"),
        _int("competition_open_since_year"),
    )
    promo_week, promo_year = _int("promo2_since_week"), _int("promo2_since_year")
    typed = bronze.select(
        *STORES_RAW,
        "_source_file",
        "_line_number",
        _int("store").alias("t_store"),
        F.trim("store_type").alias("t_store_type"),
        F.trim("assortment").alias("t_assortment"),
        F.expr("try_cast(trim(competition_distance) AS DOUBLE)").alias("t_distance"),
        # CASE WHEN evaluates make_date only for valid parts (ANSI mode would raise).
        F.when(
            comp_month.between(1, 12) & comp_year.between(1800, 2200),
            F.make_date(comp_year, comp_month, F.lit(1)),
        ).alias("t_comp_since"),
        _flag("promo2").alias("t_promo2"),
        F.when(
            promo_week.between(1, 53) & promo_year.between(1800, 2200),
            iso_week_monday(promo_year, promo_week),
        ).alias("t_promo2_since"),
        F.coalesce(months, F.array().cast("array<int>")).alias("t_promo2_months"),
    )
    valid, rejected = split_valid(with_errors(typed, rules, raw_of))
    silver = valid.select(
        F.col("t_store").alias("store"),
        F.col("t_store_type").alias("store_type"),
        F.col("t_assortment").alias("assortment"),
        F.col("t_distance").alias("competition_distance_m"),
        F.col("t_comp_since").alias("competition_open_since"),
        F.col("t_promo2").alias("promo2"),
        F.col("t_promo2_since").alias("promo2_since"),
        F.col("t_promo2_months").cast("array<int>").alias("promo2_months"),
        "_source_file",
        "_line_number",
    )
    content = (
        "store",
        "store_type",
        "assortment",
        "competition_distance_m",
        "competition_open_since",
        "promo2",
        "promo2_since",
        "promo2_months",
    )
    kept, exact, conflict = deduplicate(silver, ("store",), content, arrived=arrivals(bronze))
    conflicts = conflict_errors(
        conflict.select("_source_file", "_line_number").join(
            bronze.select(*STORES_RAW, "_source_file", "_line_number"),
            on=["_source_file", "_line_number"],
            how="left",
        ),
        ("store",),
    )
    quarantine = quarantine_rows(rejected, STORES_SOURCE, STORES_RAW, at).unionByName(
        quarantine_rows(conflicts, STORES_SOURCE, STORES_RAW, at)
    )
    return kept, quarantine, exact


CLEANSERS: list[Cleanser] = [
    Cleanser(SALES_SOURCE, SALES_BRONZE, single_table(STORE_DAILY_SALES, cleanse_sales)),
    Cleanser(STORES_SOURCE, STORES_BRONZE, single_table(STORES, cleanse_stores)),
    Cleanser(PLANS_SOURCE, PLANS_BRONZE, single_table(STORE_DAY_PLANS, cleanse_plans)),
]
