"""Rossmann cleansing rules on inline bronze rows, with exact expected rows."""

from __future__ import annotations

from datetime import date, datetime

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from retail_lake.sources.rossmann.cleanse import (
    cleanse_plans,
    cleanse_sales,
    cleanse_stores,
    iso_week_monday,
)

AT = datetime(2026, 1, 1)
SALES_RAW = (
    "store string, day_of_week string, date string, sales string, customers string, "
    "open string, promo string, state_holiday string, school_holiday string, "
    "_source_file string, _line_number bigint"
)


def sales_bronze(spark, rows):
    return spark.createDataFrame(rows, SALES_RAW)


def test_sales_are_typed_and_bad_values_quarantined_naming_the_column(spark):
    bronze = sales_bronze(
        spark,
        [
            ("1", "5", "2015-07-31", "5263", "555", "1", "1", "0", "1", "t.csv", 2),
            ("2", "7", "2015-07-26", "0", "0", "0", "0", "a", "0", "t.csv", 3),  # closed: kept
            ("3", "5", "2015-31-07", "10", "1", "1", "0", "0", "0", "t.csv", 4),  # bad date
            ("4", "5", "2015-07-31", "12x", "1", "1", "0", "0", "0", "t.csv", 5),  # bad sales
            ("5", "5", "2015-07-31", "10", "1", "1", "0", "d", "0", "t.csv", 6),  # bad holiday
            ("6", "5", "2015-07-31", "10", "1", "0", "0", "0", "0", "t.csv", 7),  # sales, closed
            ("7", "9", "2015-07-31", "-1", "1", "2", "0", "0", "0", "t.csv", 8),  # 3 problems
        ],
    )
    silver, quarantine, dupes = cleanse_sales(bronze, AT)
    assertDataFrameEqual(
        silver.drop("_source_file"),
        spark.createDataFrame(
            [
                (1, date(2015, 7, 31), 5, 5263, 555, True, True, "0", True, 2),
                (2, date(2015, 7, 26), 7, 0, 0, False, False, "a", False, 3),
            ],
            "store int, date date, day_of_week int, sales int, customers int, open boolean, "
            "promo boolean, state_holiday string, school_holiday boolean, _line_number bigint",
        ),
    )
    assertDataFrameEqual(
        quarantine.select("_line_number", "rule", "column", "reason"),
        spark.createDataFrame(
            [
                (4, "unparseable_date", "date", "date: '2015-31-07' is not a date (yyyy-MM-dd)"),
                (5, "unparseable_sales", "sales", "sales: '12x' is not an integer"),
                (
                    6,
                    "invalid_state_holiday",
                    "state_holiday",
                    "state_holiday: 'd' is not one of 0, a, b, c",
                ),
                (7, "sales_on_closed_day", "sales", "sales: '10' reported on a closed day"),
                (
                    8,
                    "invalid_day_of_week",
                    "day_of_week",
                    "day_of_week: '9' is not 1..7; sales: '-1' is negative; "
                    "open: '2' is not 0 or 1",
                ),
            ],
            "_line_number bigint, rule string, column string, reason string",
        ),
    )
    row = quarantine.where("_line_number = 5").first()
    assert (row["source"], row["stage"]) == ("rossmann_sales", "cleanse")
    assert '"sales":"12x"' in row["payload"]
    assert dupes.count() == 0


def test_plans_follow_the_sales_rules_and_need_open(spark):
    bronze = spark.createDataFrame(
        [
            ("1", "6", "2015-08-01", "1", "0", "0", "1", "p.csv", 2),
            ("2", "7", "2015-08-02", "0", "0", "a", "0", "p.csv", 3),
            ("3", "6", "2015-08-01", "", "0", "0", "1", "p.csv", 4),  # Open missing
            ("4", "6", "2015-08-01", "1", "2", "0", "1", "p.csv", 5),  # bad promo flag
            ("5", "6", "2015-08-01", "1", "0", "0", "1", "p.csv", 6),  # differs from line 7:
            ("5", "6", "2015-08-01", "1", "1", "0", "1", "p.csv", 7),  # the latest is kept
            ("1", "6", "2015-08-01", "1", "0", "0", "1", "p.csv", 8),  # identical to line 2
        ],
        "store string, day_of_week string, date string, open string, promo string, "
        "state_holiday string, school_holiday string, _source_file string, _line_number bigint",
    )
    silver, quarantine, dupes = cleanse_plans(bronze, AT)
    assertDataFrameEqual(
        silver.drop("_source_file"),
        spark.createDataFrame(
            [
                (1, date(2015, 8, 1), 6, True, False, "0", True, 8),
                (2, date(2015, 8, 2), 7, False, False, "a", False, 3),
                (5, date(2015, 8, 1), 6, True, True, "0", True, 7),
            ],
            "store int, date date, day_of_week int, open boolean, promo boolean, "
            "state_holiday string, school_holiday boolean, _line_number bigint",
        ),
    )
    assert sorted(
        (r["_line_number"], r["rule"], r["column"], r["source"]) for r in quarantine.collect()
    ) == [
        (4, "missing_open", "open", "rossmann_plans"),
        (5, "invalid_promo", "promo", "rossmann_plans"),
        (6, "conflicting_duplicate", "store,date", "rossmann_plans"),
    ]
    assert [r["_line_number"] for r in dupes.collect()] == [2]


def test_duplicate_lines_are_removed_and_conflicts_quarantined(spark):
    line = ("1", "5", "2015-07-31", "5263", "555", "1", "1", "0", "1")
    other = ("1", "5", "2015-07-31", "9999", "555", "1", "1", "0", "1")
    bronze = sales_bronze(spark, [(*line, "a.csv", 2), (*line, "a.csv", 3), (*other, "b.csv", 2)])
    silver, quarantine, dupes = cleanse_sales(bronze, AT)
    # The latest line (b.csv) is kept; a.csv:3 conflicts with it, a.csv:2 is identical to a.csv:3
    # but not to the kept one, so both a.csv lines are conflicts.
    assert [(r["sales"], r["_source_file"]) for r in silver.collect()] == [(9999, "b.csv")]
    assert sorted(
        (r["_source_file"], r["_line_number"], r["rule"]) for r in quarantine.collect()
    ) == [("a.csv", 2, "conflicting_duplicate"), ("a.csv", 3, "conflicting_duplicate")]
    assert dupes.count() == 0

    exact = sales_bronze(spark, [(*line, "a.csv", 2), (*line, "a.csv", 3)])
    silver, quarantine, dupes = cleanse_sales(exact, AT)
    assert [(r["_line_number"]) for r in silver.collect()] == [3]
    assert [(r["_line_number"]) for r in dupes.collect()] == [2]
    assert quarantine.count() == 0


STORES_RAW = (
    "store string, store_type string, assortment string, competition_distance "
    "string, competition_open_since_month string, competition_open_since_year "
    "string, promo2 string, promo2_since_week string, promo2_since_year string, "
    "promo_interval string, _source_file string, _line_number bigint"
)


def test_store_attributes_become_dates_and_month_lists(spark):
    bronze = spark.createDataFrame(
        [
            ("1", "c", "a", "1270", "9", "2008", "0", "", "", "", "s.csv", 2),
            ("2", "a", "a", "570", "11", "2007", "1", "13", "2010", "Jan,Apr,Jul,Oct", "s.csv", 3),
            ("3", "a", "c", "", "", "", "1", "1", "2015", "Mar,Jun,Sept,Dec", "s.csv", 4),
            ("4", "a", "c", "10", "13", "2015", "0", "", "", "", "s.csv", 5),  # month 13
            ("5", "a", "c", "10", "", "", "1", "1", "2015", "Mar,Juneish", "s.csv", 6),
        ],
        STORES_RAW,
    )
    silver, quarantine, _ = cleanse_stores(bronze, AT)
    assertDataFrameEqual(
        silver.drop("_source_file", "_line_number"),
        spark.createDataFrame(
            [
                (1, "c", "a", 1270.0, date(2008, 9, 1), False, None, []),
                (2, "a", "a", 570.0, date(2007, 11, 1), True, date(2010, 3, 29), [1, 4, 7, 10]),
                (3, "a", "c", None, None, True, date(2014, 12, 29), [3, 6, 9, 12]),
            ],
            "store int, store_type string, assortment string, competition_distance_m double, "
            "competition_open_since date, promo2 boolean, promo2_since date, "
            "promo2_months array<int>",
        ),
    )
    assert sorted((r["_line_number"], r["rule"]) for r in quarantine.collect()) == [
        (5, "invalid_competition_open_since_month"),
        (6, "invalid_promo_interval"),
    ]


def test_iso_week_monday_matches_python(spark):
    cases = [(2010, 13), (2015, 1), (2009, 53), (2012, 1), (2013, 31)]
    df = spark.createDataFrame(cases, "y int, w int").select(
        "y", "w", iso_week_monday(F.col("y"), F.col("w")).alias("monday")
    )
    got = {(r["y"], r["w"]): r["monday"] for r in df.collect()}
    assert got == {(y, w): date.fromisocalendar(y, w, 1) for y, w in cases}


def test_a_key_seen_twice_keeps_the_later_arrival_whatever_the_file_names(spark):
    """b.csv arrived first, a.csv (the same store-day, other sales) a day later: a.csv's
    line is kept although its name sorts first; b.csv's is the conflict."""
    line = ("1", "5", "2015-07-31", "5263", "555", "1", "1", "0", "1")
    other = ("1", "5", "2015-07-31", "9999", "555", "1", "1", "0", "1")
    first, later = datetime(2026, 1, 1), datetime(2026, 1, 2)
    bronze = spark.createDataFrame(
        [(*line, "b.csv", 2, first), (*other, "a.csv", 2, later)],
        SALES_RAW + ", _ingested_at timestamp",
    )
    silver, quarantine, _ = cleanse_sales(bronze, AT)
    assert [(r["sales"], r["_source_file"]) for r in silver.collect()] == [(9999, "a.csv")]
    assert [(r["_source_file"], r["rule"]) for r in quarantine.collect()] == [
        ("b.csv", "conflicting_duplicate")
    ]
    # Without arrival times (rows made by hand), the file name decides as before.
    silver, _, _ = cleanse_sales(bronze.drop("_ingested_at"), AT)
    assert [r["_source_file"] for r in silver.collect()] == ["b.csv"]
