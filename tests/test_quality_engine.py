"""The Spark quality engine against Great Expectations' own Spark engine, edge case by edge case.

Both engines evaluate the same suites on the same inline frames; every result GX records
(success, counts, percentages, observed values, errors) must agree, the unexpected values
as a multiset (either engine may list them in another order).
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime

import pytest

from retail_lake.contracts import Col, TableContract
from retail_lake.quality import (
    ExpectationSpec,
    _expectation,
    _gx_validation,
    _spark_validation,
    validate,
)

PROBE = TableContract(
    "test.quality_probe", "edge cases for the quality engines", (Col("id", "int", "row"),)
)

SCHEMA = (
    "id int, n int, all_null int, dup string, uniq bigint, k1 string, k2 int, d date, "
    "ts timestamp, s string, a double, b double, guest boolean"
)
D, T = date, datetime
ROWS = [
    (1, 1, None, "a", 1, "x", 1, D(2020, 1, 1), T(2020, 1, 1, 0, 0), "abc", 2.0, 1.0, False),
    (2, 2, None, "a", 2, "x", 1, D(2020, 1, 2), T(2020, 1, 2, 12, 0), "ABC", 1.0, 1.0, False),
    (3, None, None, "b", 3, "x", None, D(2020, 1, 3), T(2020, 1, 3, 0, 0), None, 1.0, 2.0, True),
    (4, 4, None, None, 4, "x", None, None, None, "abcd", None, 1.0, True),
    (5, 5, None, None, 5, None, None, D(2020, 1, 5), T(2020, 1, 5, 0, 0), "xyz", 1.0, None, False),
    (
        6,
        6,
        None,
        "c",
        6,
        None,
        None,
        D(2019, 12, 31),
        T(2019, 12, 31, 23, 59),
        "a1c",
        None,
        None,
        True,
    ),
    (7, 7, None, "d", 7, "y", 2, D(2020, 1, 7), T(2020, 1, 7, 0, 0), "Cab", 3.0, 2.5, False),
    (8, 8, None, "e", 8, "y", 3, D(2020, 1, 8), T(2020, 1, 8, 0, 0), "cab", 0.5, 0.5, False),
    (9, 9, None, "f", None, None, 2, D(2020, 1, 9), T(2020, 1, 9, 0, 0), "qrs", 5.0, 4.0, True),
    (
        10,
        -1,
        None,
        "g",
        None,
        "z",
        None,
        D(2020, 1, 10),
        T(2020, 1, 10, 0, 0),
        "tuv",
        4.0,
        4.0,
        False,
    ),
]


def spec(expectation: str, **kwargs) -> ExpectationSpec:
    return ExpectationSpec(expectation, kwargs)


NOT_NULL = "expect_column_values_to_not_be_null"
UNIQUE = "expect_column_values_to_be_unique"
COMPOUND = "expect_compound_columns_to_be_unique"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
REGEX = "expect_column_values_to_match_regex"
NOT_REGEX = "expect_column_values_to_not_match_regex"
PAIR = "expect_column_pair_values_A_to_be_greater_than_B"
MIN = "expect_column_min_to_be_between"
ROW_COUNT = "expect_table_row_count_to_be_between"
GUESTS_ONLY = {"row_condition": "guest = true", "condition_parser": "spark"}
NO_ROWS = {"row_condition": "id > 100", "condition_parser": "spark"}

SUITE = [
    # nulls: some, all, none; mostly just above and below 9 of 10; a row condition
    spec(NOT_NULL, column="n"),
    spec(NOT_NULL, column="all_null"),
    spec(NOT_NULL, column="id"),
    spec(NOT_NULL, column="n", mostly=0.9),
    spec(NOT_NULL, column="n", mostly=0.91),
    spec(NOT_NULL, column="d", **GUESTS_ONLY),
    # uniqueness: duplicates with nulls (ignored), nulls only, unique with nulls, mostly
    spec(UNIQUE, column="dup"),
    spec(UNIQUE, column="uniq"),
    spec(UNIQUE, column="all_null"),
    spec(UNIQUE, column="dup", mostly=0.75),
    spec(UNIQUE, column="dup", mostly=0.76),
    spec(UNIQUE, column="k1", **GUESTS_ONLY),
    # compound keys with partial nulls, every ignore_row_if
    spec(COMPOUND, column_list=["k1", "k2"]),
    spec(COMPOUND, column_list=["k1", "k2"], ignore_row_if="any_value_is_missing"),
    spec(COMPOUND, column_list=["k1", "k2"], ignore_row_if="never"),
    spec(COMPOUND, column_list=["id", "k2"]),
    # bounds: strict and not, one side and both, mostly, numbers, dates and timestamps as text
    spec(BETWEEN, column="n", min_value=0),
    spec(BETWEEN, column="n", min_value=1, strict_min=True),
    spec(BETWEEN, column="n", max_value=9),
    spec(BETWEEN, column="n", max_value=9, strict_max=True),
    spec(BETWEEN, column="n", min_value=-1, max_value=9, strict_min=True, strict_max=True),
    spec(BETWEEN, column="n", min_value=0, mostly=0.88),
    spec(BETWEEN, column="n", min_value=0, mostly=0.9),
    spec(BETWEEN, column="all_null", min_value=0),
    spec(BETWEEN, column="a", min_value=0.5, max_value=4.5),
    spec(BETWEEN, column="d", min_value="2020-01-01"),
    spec(BETWEEN, column="d", min_value="2020-01-01", max_value="2020-01-08", strict_max=True),
    spec(BETWEEN, column="ts", min_value="2020-01-01T00:00:00", strict_min=True),
    spec(BETWEEN, column="ts", max_value="2020-01-02 12:00:00"),
    spec(BETWEEN, column="ts", min_value="2020-01-02"),
    spec(BETWEEN, column="d", max_value="2020-01-02T12:00:00"),
    spec(BETWEEN, column="n", min_value=0, **GUESTS_ONLY),
    # sets and patterns, with nulls in the column
    spec(IN_SET, column="s", value_set=["abc", "xyz", "qrs", "tuv"]),
    spec(IN_SET, column="n", value_set=[1, 2, 4, 5, 6, 7, 8, 9]),
    spec(IN_SET, column="all_null", value_set=[1]),
    spec(REGEX, column="s", regex="^[a-z]{3}$"),
    spec(REGEX, column="s", regex="^[a-z]{3}$", mostly=0.5),
    spec(NOT_REGEX, column="s", regex="^[A-Z]"),
    # pairs: a null on one side or both, equal values, every ignore_row_if
    spec(PAIR, column_A="a", column_B="b"),
    spec(PAIR, column_A="a", column_B="b", or_equal=True),
    spec(PAIR, column_A="a", column_B="b", ignore_row_if="either_value_is_missing"),
    spec(PAIR, column_A="a", column_B="b", or_equal=True, ignore_row_if="neither"),
    spec(PAIR, column_A="a", column_B="b", ignore_row_if="neither"),
    spec(PAIR, column_A="a", column_B="b", or_equal=True, mostly=0.8),
    # column minimum: numbers, all null, dates and timestamps against text bounds (GX hands
    # its rule a date minimum as ISO text)
    spec(MIN, column="n", min_value=0, max_value=1),
    spec(MIN, column="n", min_value=-1, max_value=-1),
    spec(MIN, column="all_null", min_value=0),
    spec(MIN, column="d", min_value="2019-12-31"),
    spec(MIN, column="d", min_value="2019-12-31T00:00:00"),
    spec(MIN, column="ts", min_value="2019-12-31T23:59:00", strict_min=True),
    spec(MIN, column="ts", max_value="2020-01-01"),
    spec(MIN, column="n", min_value=0, **GUESTS_ONLY),
    spec(MIN, column="s", min_value=0),  # GX's rule raises comparing text with a number
    # row count: exact, strict, under a row condition
    spec(ROW_COUNT, min_value=10, max_value=10),
    spec(ROW_COUNT, min_value=11),
    spec(ROW_COUNT, max_value=10, strict_max=True),
    spec(ROW_COUNT, min_value=4, max_value=4, **GUESTS_ONLY),
    # a row condition no row meets: GX's counts are then None, not 0
    spec(NOT_NULL, column="n", **NO_ROWS),
    spec(UNIQUE, column="dup", **NO_ROWS),
    spec(BETWEEN, column="n", min_value=0, **NO_ROWS),
    spec(COMPOUND, column_list=["k1", "k2"], **NO_ROWS),
    spec(PAIR, column_A="a", column_B="b", **NO_ROWS),
    spec(MIN, column="n", min_value=0, **NO_ROWS),
    spec(ROW_COUNT, max_value=0, **NO_ROWS),
]


def comparable(evr) -> dict:
    """What GX records of one expectation, the unexpected values as a multiset."""
    result = dict(evr.result or {})
    for key in ("partial_unexpected_list", "partial_unexpected_counts"):
        if key in result:
            result[key] = sorted(json.dumps(v, default=str) for v in result[key])
    info = evr.exception_info or {}
    return {
        "success": evr.success,
        "result": result,
        "error": info.get("exception_message") if info.get("raised_exception") else None,
    }


def both_engines(df, specs):
    ours = _spark_validation(df, [_expectation(s) for s in specs])
    _, _, theirs = _gx_validation(df, PROBE, [_expectation(s) for s in specs], None)
    return ours, theirs


# Vacuous truth on an empty frame is decided per kind of expectation: one of each suffices.
EMPTY_SUITE = list(
    {s.expectation: s for s in reversed(SUITE) if not s.kwargs.get("mostly")}.values()
)


@pytest.mark.gx
@pytest.mark.parametrize(
    ("rows", "suite"), [(ROWS, SUITE), ([], EMPTY_SUITE)], ids=["edge_cases", "empty"]
)
def test_the_spark_engine_records_what_gx_records(spark, rows, suite):
    df = spark.createDataFrame(rows, SCHEMA)
    ours, theirs = both_engines(df, suite)

    assert all(evr is not None for evr in ours), "every suite expectation runs on Spark"
    mismatched = [
        (s.expectation, s.kwargs, comparable(a), comparable(b))
        for s, a, b in zip(suite, ours, theirs, strict=True)
        if comparable(a) != comparable(b)
    ]
    assert mismatched == []
    if rows:  # the cases reach both outcomes, and an error in GX's rule
        assert {evr.success for evr in theirs} == {True, False}
        assert any(comparable(evr)["error"] for evr in theirs)


def test_an_expectation_the_spark_engine_does_not_cover_goes_to_gx(spark, caplog):
    df = spark.createDataFrame(ROWS, SCHEMA)
    specs = [
        spec(NOT_NULL, column="n"),
        spec("expect_column_max_to_be_between", column="n", max_value=5),
        spec(BETWEEN, column="s", min_value=1),  # GX rejects bounds on a text column
    ]

    with caplog.at_level(logging.INFO, logger="retail_lake.quality"):
        results = validate(df, PROBE, specs)
        reference = validate(df, PROBE, specs, engine="great_expectations")

    assert results == reference
    # GX's engine fails the text column's bounds with the metric's error (no observed value)
    assert [(r.success, r.observed) for r in results] == [
        (False, "[null]"),
        (False, "9"),
        (False, None),
    ]
    assert (
        "test.quality_probe: Great Expectations' engine evaluates "
        "expect_column_max_to_be_between, expect_column_values_to_be_between"
    ) in caplog.messages


def test_a_failing_expectation_names_the_offending_values(spark):
    df = spark.createDataFrame(ROWS, SCHEMA)
    specs = [
        spec(BETWEEN, column="n", min_value=0),
        spec(UNIQUE, column="dup"),
        spec(COMPOUND, column_list=["k1", "k2"], ignore_row_if="any_value_is_missing"),
        spec(PAIR, column_A="a", column_B="b"),
        spec(IN_SET, column="s", value_set=["abc"], mostly=0.1),  # tolerated: still named
        spec(MIN, column="n", min_value=0),
    ]

    results = validate(df, PROBE, specs)

    assert [(r.success, r.element_count, r.unexpected_count) for r in results] == [
        (False, 10, 1),
        (False, 10, 2),
        (False, 10, 2),
        (False, 10, 4),
        (True, 10, 8),
        (False, None, None),
    ]
    observed = [json.loads(r.observed) for r in results]
    assert observed[0] == [-1]
    assert observed[1] == ["a", "a"]
    assert observed[2] == [{"k1": "x", "k2": 1}, {"k1": "x", "k2": 1}]
    assert sorted(observed[3]) == [[0.5, 0.5], [1.0, 1.0], [1.0, 2.0], [4.0, 4.0]]
    assert sorted(observed[4]) == ["ABC", "Cab", "a1c", "abcd", "cab", "qrs", "tuv", "xyz"]
    assert observed[5] == -1
    assert results[0].describe() == (
        "expect_column_values_to_be_between(column='n', min_value=0): 1 of 10 rows unexpected"
    )


def test_a_suite_is_a_bounded_number_of_spark_jobs(spark):
    """One Spark action: the aggregation and one grouped count per unique key set.

    With adaptive execution each shuffle stage runs as a job of its own: the aggregation is
    one stage and each grouped count two, plus the job that collects the result.
    """
    df = spark.createDataFrame(ROWS, SCHEMA).cache()
    df.count()
    specs = [
        spec(NOT_NULL, column="id"),
        spec(UNIQUE, column="id"),
        spec(COMPOUND, column_list=["id", "k1"]),
        spec(UNIQUE, column="id"),  # the same key set: counted once
        spec(BETWEEN, column="id", min_value=1, max_value=10),
        spec(IN_SET, column="guest", value_set=[True, False]),
        spec(REGEX, column="dup", regex="^[a-g]$"),
        spec(PAIR, column_A="id", column_B="n", or_equal=True),
        spec(MIN, column="id", min_value=1, max_value=1),
        spec(ROW_COUNT, min_value=10, max_value=10),
    ]
    key_sets = 2
    context = spark.sparkContext
    group = "test_quality_engine_jobs"
    context.setJobGroup(group, "one validation")
    try:
        results = validate(df, PROBE, specs)
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
        df.unpersist()

    assert all(r.success for r in results)
    jobs = context.statusTracker().getJobIdsForGroup(group)
    assert 1 <= len(jobs) <= 2 + 2 * key_sets
