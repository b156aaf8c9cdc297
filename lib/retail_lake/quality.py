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

With `quality.data_docs` on, every validation also renders as Great Expectations Data Docs
under `<paths.root>/data_docs/` (see `DataDocs`): open `index.html` there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any

import yaml

from retail_lake.config import ConfigError, find_conf_dir
from retail_lake.contracts import TableContract

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from retail_lake.data_docs import DataDocs

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
) -> list[ExpectationResult]:
    """Evaluates `specs` on `df` with Great Expectations; returns one result per spec.

    With `docs`, the validation (passed or failed) is also rendered into that Data Docs site,
    named by the table and `docs.run_name`; a rendering error is logged, never raised.
    """
    import great_expectations as gx

    if not specs:
        return []
    context = _gx_context()
    source = context.data_sources.add_spark(name=f"pending_{contract.short_name}")
    asset = source.add_dataframe_asset(name=contract.short_name)
    batch = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(gx.ExpectationSuite(name=contract.name))
    ids = []
    for spec in specs:
        # Notes name the configured rule and its severity on the suite's Data Docs page.
        kwargs = {"notes": f"{spec.expectation} ({spec.severity})", **spec.kwargs}
        added = suite.add_expectation(_expectation_class(spec.expectation)(**kwargs))
        ids.append(str(added.id))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"gate_{contract.short_name}", data=batch, suite=suite)
    )
    outcome = definition.run(
        batch_parameters={"dataframe": df},
        result_format="SUMMARY",
        run_id=docs.run_identifier() if docs else None,
    )
    if docs:
        docs.render(contract, suite, outcome)
    by_id = {str(r.expectation_config.id): r for r in outcome.results}
    results = []
    for spec, exp_id in zip(specs, ids, strict=True):
        r = by_id[exp_id]
        res = r.result or {}
        observed = res.get("observed_value", res.get("partial_unexpected_list"))
        if r.exception_info and r.exception_info.get("raised_exception"):
            observed = f"error: {r.exception_info.get('exception_message')}"
        results.append(
            ExpectationResult(
                table_name=contract.name,
                spec=spec,
                success=bool(r.success),
                element_count=res.get("element_count"),
                unexpected_count=res.get("unexpected_count"),
                observed=None if observed is None else json.dumps(observed, default=str)[:2000],
            )
        )
    return results


# ----------------------------------------------------------------------------- Data Docs
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
