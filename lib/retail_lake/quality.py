"""Quality gates: Great Expectations suites evaluated on a pending output before it is written.

A table's suite is built from its contract (keys not null; keys unique, both critical) and
from `conf/suites/<layer>.<name>.yaml`:

    expectations:
      - expectation: expect_column_values_to_be_between
        column: sales
        min_value: 0
        severity: critical        # critical (default) stops the publish; warning is recorded

Every other key of an entry is an argument of the expectation, except the bounds of a row
count relative to what the job read (resolved by the runner from the job's `rows_read`):

      - expectation: expect_table_row_count_to_be_between
        relative_to: bronze.online_retail_raw     # a key of the job's rows_read
        min_ratio: 0.9                            # min_value = floor(0.9 * rows read)
        max_ratio: 1.0                            # max_value = ceil(1.0 * rows read)

Two engines evaluate a suite (`quality.engine`). `spark`, the default, measures every
expectation of a table in one Spark action over the pending frame: one aggregation of
conditional counts, minima and row counts, unioned with one grouped count per key set that
must be unique. GX's own success rule and result format (`Expectation._validate`) then turn
the measurements into GX's results, so gates, `ops.quality_results` and Data Docs read as
GX's; the values naming unexpected rows are fetched only where there are any. An expectation
it does not cover goes to GX's engine. `great_expectations` runs GX's Spark execution engine
on the whole suite (one Spark job or more per metric): the reference the other is tested
against (tests/test_quality_engine.py).

With `quality.data_docs` on, every validation also renders as Great Expectations Data Docs
under `<paths.root>/data_docs/` (see `DataDocs`): open `index.html` there.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import operator
import os
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any

import yaml
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, CharType, StringType, StructType, VarcharType

from retail_lake.config import QUALITY_ENGINES, ConfigError, find_conf_dir
from retail_lake.contracts import TableContract
from retail_lake.data_docs import DataDocs, suite_validation

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# Set before great_expectations (and its tqdm) is first imported: no usage analytics, and no
# tqdm bar per validation (the runner logs progress itself).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

SEVERITIES = ("critical", "warning")


class QualityGateError(RuntimeError):
    """A critical expectation failed: nothing was written."""

    def __init__(self, summary: str, results: list[ExpectationResult]) -> None:
        super().__init__(summary)
        self.results = results


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a suite, as configured."""

    expectation: str
    kwargs: dict[str, Any]
    severity: str = "critical"
    # {"relative_to": table, "min_ratio": x, "max_ratio": y}: row-count bounds to resolve.
    relative: dict[str, Any] | None = None

    def resolved(self, rows_read: dict[str, int]) -> ExpectationSpec:
        """The spec with relative row-count bounds turned into min_value/max_value."""
        if not self.relative:
            return self
        table = self.relative["relative_to"]
        if table not in rows_read:
            raise ConfigError(
                f"{self.expectation}: relative_to {table!r} is not an input of this job "
                f"(rows read: {sorted(rows_read)})"
            )
        n = rows_read[table]
        kwargs = dict(self.kwargs)
        if "min_ratio" in self.relative:
            kwargs["min_value"] = math.floor(self.relative["min_ratio"] * n)
        if "max_ratio" in self.relative:
            kwargs["max_value"] = math.ceil(self.relative["max_ratio"] * n)
        return ExpectationSpec(self.expectation, kwargs, self.severity)

    @property
    def column(self) -> str | None:
        col = self.kwargs.get("column")
        if col is None and "column_list" in self.kwargs:
            col = ",".join(self.kwargs["column_list"])
        return col


@dataclass(frozen=True)
class ExpectationResult:
    """The outcome of one expectation on one pending output (a row of ops.quality_results)."""

    table_name: str
    spec: ExpectationSpec
    success: bool
    element_count: int | None
    unexpected_count: int | None
    observed: str | None

    def as_row(self, run_id: str, at: datetime) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "table_name": self.table_name,
            "expectation": self.spec.expectation,
            "column": self.spec.column,
            "kwargs": json.dumps(self.spec.kwargs, sort_keys=True, default=str),
            "severity": self.spec.severity,
            "success": self.success,
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "observed": self.observed,
            "evaluated_at": at,
        }

    def describe(self) -> str:
        what = f"{self.spec.expectation}({_short_kwargs(self.spec.kwargs)})"
        if self.unexpected_count is not None:
            return f"{what}: {self.unexpected_count} of {self.element_count} rows unexpected"
        return f"{what}: observed {self.observed}"


def _short_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def suite_path(table: str, conf_dir: Traversable | None = None) -> Traversable:
    return (conf_dir or find_conf_dir()) / "suites" / f"{table}.yaml"


def load_suite(
    contract: TableContract, conf_dir: Traversable | None = None
) -> list[ExpectationSpec]:
    """The contract's key rules followed by the configured suite, validated."""
    specs: list[ExpectationSpec] = []
    for key in contract.keys:
        specs.append(ExpectationSpec("expect_column_values_to_not_be_null", {"column": key}))
    if len(contract.keys) == 1:
        specs.append(
            ExpectationSpec("expect_column_values_to_be_unique", {"column": contract.keys[0]})
        )
    elif contract.keys:
        specs.append(
            ExpectationSpec(
                "expect_compound_columns_to_be_unique", {"column_list": list(contract.keys)}
            )
        )
    path = suite_path(contract.name, conf_dir)
    if not path.is_file():
        return specs
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"expectations"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (expected 'expectations')")
    for i, entry in enumerate(data.get("expectations") or []):
        where = f"{path}: expectations[{i}]"
        if not isinstance(entry, dict) or "expectation" not in entry:
            raise ConfigError(f"{where}: each entry needs an 'expectation' name")
        entry = dict(entry)
        name = entry.pop("expectation")
        severity = entry.pop("severity", "critical")
        relative = {
            k: entry.pop(k) for k in ("relative_to", "min_ratio", "max_ratio") if k in entry
        }
        if relative and "relative_to" not in relative:
            raise ConfigError(f"{where}: min_ratio/max_ratio need relative_to (a table read)")
        if severity not in SEVERITIES:
            raise ConfigError(f"{where}: severity must be one of {SEVERITIES}, got {severity!r}")
        for col_key in ("column", "column_A", "column_B"):
            if col_key in entry and entry[col_key] not in contract.column_names:
                raise ConfigError(f"{where}: {contract.name} has no column {entry[col_key]!r}")
        _expectation_class(name, where)
        specs.append(ExpectationSpec(name, entry, severity, relative or None))
    return specs


def _expectation_class(name: str, where: str = "") -> type:
    import great_expectations as gx

    class_name = "".join(part.capitalize() for part in name.split("_"))
    cls = getattr(gx.expectations, class_name, None)
    if cls is None:
        raise ConfigError(
            f"{where}: unknown expectation {name!r} (no gx.expectations.{class_name})"
        )
    return cls


def _expectation(spec: ExpectationSpec) -> Any:
    """The spec as a GX expectation: its arguments checked and coerced by GX's own model."""
    # Notes name the configured rule and its severity on the suite's Data Docs page.
    kwargs = {"notes": f"{spec.expectation} ({spec.severity})", **spec.kwargs}
    return _expectation_class(spec.expectation)(**kwargs)


def _gx_context():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx

        return gx.get_context(mode="ephemeral")


def validate(
    df: DataFrame,
    contract: TableContract,
    specs: list[ExpectationSpec],
    docs: DataDocs | None = None,
    engine: str = "spark",
) -> list[ExpectationResult]:
    """Evaluates `specs` on `df`; returns one result per spec.

    `engine` (`quality.engine`): `spark` measures the suite in one Spark action over `df`
    (see `_spark_validation`) and applies GX's own success rules and result format to the
    measurements, handing GX's engine only what it does not cover; `great_expectations` runs
    GX's Spark execution engine (a Spark job or more per metric).
    With `docs`, the validation (passed or failed) is also rendered into that Data Docs site,
    named by the table and `docs.run_name`; a rendering error is logged, never raised.
    """
    if engine not in QUALITY_ENGINES:
        raise ConfigError(f"quality.engine must be one of {QUALITY_ENGINES}, got {engine!r}")
    if not specs:
        return []
    expectations = [_expectation(spec) for spec in specs]
    run_id = docs.run_identifier() if docs else None
    suite = outcome = None
    if engine == "great_expectations":
        suite, outcome, evrs = _gx_validation(df, contract, expectations, run_id)
    else:
        found = _spark_validation(df, expectations)
        rest = [i for i, evr in enumerate(found) if evr is None]
        if rest:
            log.info(
                "%s: Great Expectations' engine evaluates %s",
                contract.name,
                ", ".join(specs[i].expectation for i in rest),
            )
            _, _, gx_evrs = _gx_validation(df, contract, [expectations[i] for i in rest], None)
            for i, evr in zip(rest, gx_evrs, strict=True):
                found[i] = evr
        evrs = [evr for evr in found if evr is not None]
        if docs:
            suite, outcome = suite_validation(contract, expectations, evrs, run_id)
    if docs:
        docs.render(contract, suite, outcome)
    return [_result(contract, spec, evr) for spec, evr in zip(specs, evrs, strict=True)]


def _gx_validation(
    df: DataFrame, contract: TableContract, expectations: list[Any], run_id: Any
) -> tuple[Any, Any, list[Any]]:
    """GX's Spark engine on `df`: the suite, GX's outcome and each expectation's result."""
    import great_expectations as gx

    context = _gx_context()
    source = context.data_sources.add_spark(name=f"pending_{contract.short_name}")
    asset = source.add_dataframe_asset(name=contract.short_name)
    batch = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(gx.ExpectationSuite(name=contract.name))
    # The suite returns an equal expectation already in it: both specs share its result.
    ids = [str(suite.add_expectation(expectation).id) for expectation in expectations]
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"gate_{contract.short_name}", data=batch, suite=suite)
    )
    outcome = definition.run(
        batch_parameters={"dataframe": df}, result_format="SUMMARY", run_id=run_id
    )
    by_id = {str(r.expectation_config.id): r for r in outcome.results}
    return suite, outcome, [by_id[exp_id] for exp_id in ids]


def _result(contract: TableContract, spec: ExpectationSpec, evr: Any) -> ExpectationResult:
    res = evr.result or {}
    observed = res.get("observed_value", res.get("partial_unexpected_list"))
    if evr.exception_info and evr.exception_info.get("raised_exception"):
        observed = f"error: {evr.exception_info.get('exception_message')}"
    return ExpectationResult(
        table_name=contract.name,
        spec=spec,
        success=bool(evr.success),
        element_count=res.get("element_count"),
        unexpected_count=res.get("unexpected_count"),
        observed=None if observed is None else json.dumps(observed, default=str)[:2000],
    )


# ----------------------------------------------------------------------------- Spark engine
# GX's SUMMARY result format: what its Spark engine reports, at most 20 unexpected values.
_SUMMARY = {"result_format": "SUMMARY", "partial_unexpected_count": 20}


class _NotCoveredError(Exception):
    """The Spark engine cannot evaluate this expectation exactly as GX would: GX's engine does."""


@dataclass
class _Check:
    """One expectation as Spark expressions for the GX metrics its success rule reads.

    `aggregates` (GX metric name -> aggregate over the whole frame) run in the shared pass.
    `unexpected`: the rows that break a row-wise rule (their `columns` are fetched when there
    are any). Uniqueness instead groups the `grouped` rows by `columns`: GX's unexpected count
    is the rows whose key occurs more than once (a key with nulls is a key; GX's window does
    the same).
    """

    expectation: Any
    aggregates: dict[str, Column]
    columns: tuple[str, ...] = ()
    unexpected: Column | None = None
    grouped: Column | None = None

    @property
    def unexpected_metric(self) -> str | None:
        metric = getattr(self.expectation, "map_metric", None)
        return f"{metric}.unexpected_count" if metric else None


def _rows(condition: Column) -> Column:
    """How many rows meet `condition` (GX's counts of filtered rows)."""
    return F.count(F.when(condition, True))


def _summed(domain: Column, condition: Column) -> Column:
    """Rows of `domain` that meet `condition` as GX's engine sums them: None without rows."""
    return F.sum(F.when(domain, F.when(condition, 1).otherwise(0)))


def _row_condition(expectation: Any) -> Column:
    """The rows GX's engine hands the expectation (its row_condition, Spark SQL only)."""
    from great_expectations.expectations.row_conditions import PassThroughCondition

    condition = expectation.row_condition
    if not condition:
        return F.lit(True)
    if isinstance(condition, PassThroughCondition):
        return F.expr(condition.pass_through_filter)
    if isinstance(condition, str) and expectation.condition_parser == "spark":
        return F.expr(condition)
    raise _NotCoveredError(f"row_condition {condition!r}")


def _between(expectation: Any, column: Column, schema: StructType) -> Column:
    """GX's `column_values.between` for Spark, with the bounds GX's model coerced."""
    low, high = expectation.min_value, expectation.max_value
    if low is not None and high is not None and low > high:
        raise _NotCoveredError("min_value > max_value (GX reports the error)")
    field = schema[expectation.column].dataType
    if isinstance(field, StringType | BooleanType | VarcharType | CharType):
        raise _NotCoveredError(f"bounds on a {field.simpleString()} column")
    bounds = []
    if low is not None:
        bounds.append(column > F.lit(low) if expectation.strict_min else column >= F.lit(low))
    if high is not None:
        bounds.append(column < F.lit(high) if expectation.strict_max else column <= F.lit(high))
    return functools.reduce(operator.and_, bounds)


def _column_map(expectation: Any, expected: Column) -> _Check:
    """A row-wise rule on one column: nulls are not unexpected, only counted."""
    column = F.col(expectation.column)
    domain = _row_condition(expectation)
    unexpected = domain & column.isNotNull() & ~expected
    return _Check(
        expectation,
        {
            "table.row_count": _rows(domain),
            "column_values.nonnull.unexpected_count": _summed(domain, column.isNull()),
            f"{expectation.map_metric}.unexpected_count": _summed(domain, unexpected),
        },
        (expectation.column,),
        unexpected=unexpected,
    )


def _not_null(expectation: Any, schema: StructType) -> _Check:
    domain = _row_condition(expectation)
    unexpected = domain & F.col(expectation.column).isNull()
    return _Check(
        expectation,
        {
            "table.row_count": _rows(domain),
            "column_values.nonnull.unexpected_count": _summed(domain, unexpected),
        },
        (expectation.column,),
        unexpected=unexpected,
    )


def _unique(expectation: Any, schema: StructType) -> _Check:
    column = F.col(expectation.column)
    domain = _row_condition(expectation)
    return _Check(
        expectation,
        {
            "table.row_count": _rows(domain),
            "column_values.nonnull.unexpected_count": _summed(domain, column.isNull()),
        },
        (expectation.column,),
        grouped=domain & column.isNotNull(),
    )


def _compound_unique(expectation: Any, schema: StructType) -> _Check:
    domain = _row_condition(expectation)
    nulls = [F.col(c).isNull() for c in expectation.column_list]
    ignored = {
        "all_values_are_missing": functools.reduce(operator.and_, nulls),
        "any_value_is_missing": functools.reduce(operator.or_, nulls),
        "never": F.lit(False),
    }[expectation.ignore_row_if]
    kept = domain & ~ignored
    return _Check(
        expectation,
        {
            "table.row_count": _rows(domain),
            "compound_columns.unique.filtered_row_count": _rows(kept),
        },
        tuple(expectation.column_list),
        grouped=kept,
    )


def _a_greater_than_b(expectation: Any, schema: StructType) -> _Check:
    a, b = F.col(expectation.column_A), F.col(expectation.column_B)
    domain = _row_condition(expectation)
    ignored = {
        "both_values_are_missing": a.isNull() & b.isNull(),
        "either_value_is_missing": a.isNull() | b.isNull(),
        "neither": F.lit(False),
    }[expectation.ignore_row_if]
    kept = domain & ~ignored
    # As GX: with a null on one side the comparison is null, which never counts as unexpected.
    expected = ((a >= b) | a.eqNullSafe(b)) if expectation.or_equal else a > b
    unexpected = kept & ~expected
    metric = expectation.map_metric
    return _Check(
        expectation,
        {
            "table.row_count": _rows(domain),
            f"{metric}.filtered_row_count": _rows(kept),
            f"{metric}.unexpected_count": _rows(unexpected),
        },
        (expectation.column_A, expectation.column_B),
        unexpected=unexpected,
    )


def _column_min(expectation: Any, schema: StructType) -> _Check:
    domain = _row_condition(expectation)
    minimum = F.min(F.when(domain, F.col(expectation.column)))
    return _Check(expectation, {"column.min": minimum})


def _row_count(expectation: Any, schema: StructType) -> _Check:
    return _Check(expectation, {"table.row_count": _rows(_row_condition(expectation))})


def _map_check(expected: Callable[[Any, Column, StructType], Column]) -> Callable:
    def check(expectation: Any, schema: StructType) -> _Check:
        return _column_map(expectation, expected(expectation, F.col(expectation.column), schema))

    return check


def _in_set(expectation: Any, column: Column, schema: StructType) -> Column:
    value_set = expectation.value_set
    return F.lit(True) if value_set is None else column.isin(list(value_set))


# The expectations the Spark engine evaluates; any other goes to GX's engine.
_CHECKS: dict[str, Callable[[Any, StructType], _Check]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_unique": _unique,
    "expect_compound_columns_to_be_unique": _compound_unique,
    "expect_column_values_to_be_between": _map_check(_between),
    "expect_column_values_to_be_in_set": _map_check(_in_set),
    "expect_column_values_to_match_regex": _map_check(lambda e, c, s: c.rlike(e.regex)),
    "expect_column_values_to_not_match_regex": _map_check(lambda e, c, s: ~c.rlike(e.regex)),
    "expect_column_pair_values_a_to_be_greater_than_b": _a_greater_than_b,
    "expect_column_min_to_be_between": _column_min,
    "expect_table_row_count_to_be_between": _row_count,
}


def _check(expectation: Any, schema: StructType) -> _Check | None:
    """How the Spark engine evaluates `expectation`, or None: GX's engine evaluates it."""
    build = _CHECKS.get(expectation.expectation_type)
    kwargs = expectation.configuration.kwargs
    if build is None or any(isinstance(v, dict) and "$PARAMETER" in v for v in kwargs.values()):
        return None
    try:
        return build(expectation, schema)
    except Exception as why:  # e.g. bounds GX cannot compare: its engine reports the error
        log.debug("%s goes to GX's engine: %s", expectation.expectation_type, why)
        return None


def _spark_validation(df: DataFrame, expectations: list[Any]) -> list[Any]:
    """GX results for `expectations` from one Spark action over `df`; None where GX must run.

    The action unions one aggregation (every count, minimum and row count) with one grouped
    count per distinct key set that must be unique. Values naming unexpected rows are fetched
    afterwards, one small query per expectation that found any.
    """
    from pyspark.errors import PySparkException

    checks = [_check(expectation, df.schema) for expectation in expectations]
    covered = [check for check in checks if check is not None]
    if not covered:
        return [None] * len(expectations)
    try:
        metrics = _measure(df, covered)
    except PySparkException as exc:
        # GX's engine then reports the error on the expectations it concerns.
        log.warning("the Spark engine failed (%s): Great Expectations' engine evaluates", exc)
        return [None] * len(expectations)
    found = iter(metrics)
    return [None if check is None else _evr(df, check, next(found)) for check in checks]


def _measure(df: DataFrame, checks: list[_Check]) -> list[dict[str, Any]]:
    """Each check's GX metrics (name -> value) from one Spark action."""
    from great_expectations.util import convert_to_json_serializable

    fields: list[tuple[int, str]] = []
    aggregates: list[Column] = []
    for i, check in enumerate(checks):
        for metric, aggregate in check.aggregates.items():
            aggregates.append(aggregate.alias(f"m{len(fields)}"))
            fields.append((i, metric))
    main = df.agg(F.struct(*aggregates).alias("m"))
    struct = main.schema["m"].dataType
    # One grouped count per distinct (key columns, rows) among the uniqueness checks.
    groups: dict[tuple[tuple[str, ...], str], list[int]] = {}
    for i, check in enumerate(checks):
        if check.grouped is not None:
            groups.setdefault((check.columns, str(check.grouped)), []).append(i)
    query = main.select(F.lit(-1).alias("g"), "m", F.lit(None).cast("long").alias("dup"))
    for g, members in enumerate(groups.values()):
        first = checks[members[0]]
        dupes = (
            _key_counts(df, first.columns, first.grouped)
            .where(F.col("__rows") > 1)
            .agg(F.sum("__rows").alias("dup"))
            .select(F.lit(g).alias("g"), F.lit(None).cast(struct).alias("m"), "dup")
        )
        query = query.unionByName(dupes)
    collected = {row["g"]: row for row in query.collect()}
    values = collected[-1]["m"]
    metrics: list[dict[str, Any]] = [{} for _ in checks]
    for n, (i, metric) in enumerate(fields):
        # As GX's engine hands aggregates on: a date minimum as ISO text, NaN as None.
        metrics[i][metric] = convert_to_json_serializable(values[n])
    for g, members in enumerate(groups.values()):
        for i in members:
            metrics[i][checks[i].unexpected_metric] = collected[g]["dup"] or 0
    return metrics


def _key_counts(df: DataFrame, columns: tuple[str, ...], rows: Column) -> DataFrame:
    return df.where(rows).groupBy(*columns).agg(F.count(F.lit(1)).alias("__rows"))


def _evr(df: DataFrame, check: _Check, metrics: dict[str, Any]) -> Any:
    """The check's result as GX's engine builds it: GX's own rule on the measured metrics."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.validator.exception_info import ExceptionInfo

    expectation = check.expectation
    metric = check.unexpected_metric
    try:
        if metric in metrics:
            # As GX's records today: the values also when `mostly` tolerated them.
            found = (metrics[metric] or 0) > 0
            metrics[f"{expectation.map_metric}.unexpected_values"] = (
                _unexpected_values(df, check) if found else []
            )
        raw = expectation._validate(
            metrics=metrics, runtime_configuration={"result_format": _SUMMARY}
        )
        return expectation._build_evr(raw_response=raw)
    except Exception as exc:  # as GX's validator: the expectation fails and names the error
        return ExpectationValidationResult(
            success=False,
            expectation_config=expectation.configuration,
            exception_info=ExceptionInfo(
                exception_traceback=traceback.format_exc(), exception_message=str(exc)
            ),
        )


def _unexpected_values(df: DataFrame, check: _Check) -> list[Any]:
    """Up to 20 values naming unexpected rows, shaped as GX's engine returns them."""
    limit = _SUMMARY["partial_unexpected_count"]
    columns = check.columns
    if check.grouped is None:
        rows = df.where(check.unexpected).select(*columns).limit(limit).collect()
        return [row[0] if len(columns) == 1 else tuple(row) for row in rows]
    # Duplicated keys, each repeated as often as it occurs (GX lists the rows).
    keys = (
        _key_counts(df, columns, check.grouped)
        .where(F.col("__rows") > 1)
        .orderBy(*columns)
        .limit(limit)
        .collect()
    )
    values: list[Any] = []
    for key in keys:
        value = key[0] if len(columns) == 1 else {c: key[c] for c in columns}
        values.extend([value] * key["__rows"])
    return values[:limit]


# ----------------------------------------------------------------------------- gate
def gate(results: list[ExpectationResult]) -> None:
    """Raises QualityGateError when a critical expectation failed; logs failed warnings."""
    for r in results:
        if not r.success and r.spec.severity == "warning":
            log.warning("quality warning on %s: %s", r.table_name, r.describe())
    failed = [r for r in results if not r.success and r.spec.severity == "critical"]
    if failed:
        lines = [f"  - {r.table_name}: {r.describe()}" for r in failed]
        raise QualityGateError(
            f"quality gate failed: {len(failed)} critical expectation(s); nothing was written\n"
            + "\n".join(lines),
            results,
        )


def utc_now() -> datetime:
    return datetime.now(UTC)
