"""Shared cleansing machinery: typed parsing with reasons, duplicates, quarantine rows.

Typing uses the `try_*` functions (Spark 4 runs in ANSI mode, where a plain cast of a bad
value fails the job): a value that does not parse becomes null, and a rule turns that
into a rejected row naming the column and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.config import Config
from retail_lake.lake import content_hash
from retail_lake.privacy import Pseudonymiser

ERRORS = "_errors"


Persist = Callable[[DataFrame], DataFrame]


def no_persist(df: DataFrame) -> DataFrame:
    """The default `persist` of a cleanser's helpers: the frame as it is, nothing cached."""
    return df


@dataclass(frozen=True)
class CleanseEnv:
    """What a cleanse function may use besides its bronze frames."""

    at: datetime
    cfg: Config
    # The keyed pseudonym (HMAC-SHA256) of a personal identifier: `pseudonymise.keyed(df)`
    # first, then `pseudonymise(column)` (the key stays out of the plan).
    pseudonymise: Pseudonymiser
    # Caches an intermediate frame several outputs share; released when the run ends.
    persist: Persist = no_persist


@dataclass(frozen=True)
class Cleansed:
    """The result of cleansing one source."""

    outputs: Mapping[str, DataFrame]  # silver table -> rows; every bronze row lands in one
    quarantine: DataFrame
    duplicates: DataFrame
    derived: Mapping[str, DataFrame] = field(default_factory=dict)  # not counted


@dataclass(frozen=True)
class Cleanser:
    """How one source is cleansed: `fn(frames, env)`; `frames` holds bronze and lookups."""

    source: str
    bronze: str
    fn: Callable[[Mapping[str, DataFrame], CleanseEnv], Cleansed]
    lookups: tuple[str, ...] = ()


def single_table(
    silver: str, fn: Callable
) -> Callable[[Mapping[str, DataFrame], CleanseEnv], Cleansed]:
    """Adapts `fn(bronze, at, persist) -> (silver rows, quarantine, duplicates)` of one
    bronze table (`persist`: see `CleanseEnv`)."""

    def run(frames: Mapping[str, DataFrame], env: CleanseEnv) -> Cleansed:
        (bronze,) = frames.values()
        rows, quarantine, duplicates = fn(bronze, env.at, env.persist)
        return Cleansed({silver: rows}, quarantine, duplicates)

    return run


@dataclass(frozen=True)
class Rule:
    """A row is rejected when `broken` is true; `column` names the field at fault.

    `name` lands in `silver.quarantine.rule`: it is a string literal where the rule is built
    (or passed to a `*_rule` helper) and listed in the README's "Quarantine rules" table
    (`tests/test_rule_names.py` checks both).
    """

    name: str
    column: str | None
    broken: Column
    reason: str


def parse_rule(name: str, column: str, raw: str, parsed: Column, what: str) -> Rule:
    """A value present in `raw` that `parsed` could not read (parsed is null).

    `name` is the rule's name as a literal at the call (`"unparseable_<column>"`), so that
    grep finds where each name in `silver.quarantine.rule` is applied.
    """
    raw_col = F.trim(F.col(raw))
    present = raw_col.isNotNull() & (raw_col != "")
    return Rule(
        name,
        column,
        present & parsed.isNull(),
        f"{column}: {{value}} is not {what}",
    )


def required_rule(name: str, column: str, raw: str) -> Rule:
    """An empty or missing `raw` value; `name` a literal at the call (`"missing_<column>"`)."""
    raw_col = F.trim(F.col(raw))
    return Rule(
        name,
        column,
        raw_col.isNull() | (raw_col == ""),
        f"{column}: required value is empty",
    )


def with_errors(df: DataFrame, rules: Sequence[Rule], raw_of: dict[str, str]) -> DataFrame:
    """Adds `_errors`: array of {rule, column, reason} for each rule the row breaks."""
    entries = []
    for r in rules:
        raw = raw_of.get(r.column or "", None)
        value = F.coalesce(F.col(raw).cast("string"), F.lit("null")) if raw else F.lit("")
        reason = F.replace(
            F.lit(r.reason), F.lit("{value}"), F.concat(F.lit("'"), value, F.lit("'"))
        )
        entries.append(
            F.when(
                # A rule over a null value is unknown, not broken: it never yields null.
                F.coalesce(r.broken, F.lit(False)),
                F.struct(
                    F.lit(r.name).alias("rule"),
                    F.lit(r.column).cast("string").alias("column"),
                    reason.alias("reason"),
                ),
            )
        )
    return df.withColumn(ERRORS, F.filter(F.array(*entries), lambda e: e.isNotNull()))


def split_valid(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(rows without errors, rows with errors); `_errors` dropped from the valid side."""
    valid = df.where(F.size(ERRORS) == 0).drop(ERRORS)
    rejected = df.where(F.size(ERRORS) > 0)
    return valid, rejected


def quarantine_rows(
    rejected: DataFrame, source: str, raw_columns: Sequence[str | Column], at: datetime
) -> DataFrame:
    """silver.quarantine rows (first broken rule as the rule; all reasons joined).

    The payload is the JSON of `raw_columns`: names, or aliased columns (a personal field
    replaced by its pseudonym).
    """
    first = F.col(ERRORS)[0]
    return rejected.select(
        F.lit(source).alias("source"),
        F.lit("cleanse").alias("stage"),
        first["rule"].alias("rule"),
        first["column"].alias("column"),
        F.array_join(F.transform(F.col(ERRORS), lambda e: e["reason"]), "; ").alias("reason"),
        F.to_json(
            F.struct(*[F.col(c) if isinstance(c, str) else c for c in raw_columns]),
            {"ignoreNullFields": "false"},
        ).alias("payload"),
        "_source_file",
        "_line_number",
        F.lit(at).cast("timestamp").alias("_quarantined_at"),
    )


ARRIVED = "_arrived"


def arrivals(bronze: DataFrame) -> DataFrame | None:
    """Each landing file of `bronze` with when it arrived (`_ingested_at`, as `_arrived`),
    for `deduplicate`; None for rows without `_ingested_at` (ordered by file name then)."""
    if "_ingested_at" not in bronze.columns:
        return None
    return bronze.groupBy("_source_file").agg(F.min("_ingested_at").alias(ARRIVED))


def deduplicate(
    df: DataFrame,
    keys: Sequence[str],
    content: Sequence[str],
    keep: str = "latest",
    persist: Persist = no_persist,
    arrived: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Splits rows sharing a key into (kept, exact duplicates, conflicting duplicates).

    The latest line of a key is kept, or the first with `keep="first"`: lines are ordered
    by when their file arrived (`arrived`, from `arrivals`: a file landed later wins
    whatever its name), then by file name and line number. Another line with the same
    content is an exact duplicate (removed and counted); one with different content is a
    conflict (quarantined, never silently dropped). The three are filters of one ranking (a
    window sort over every row); `persist` is applied to it, so that counting and writing
    the three sorts the rows once.
    """
    if keep not in ("latest", "first"):
        raise ValueError(f"keep must be 'latest' or 'first', got {keep!r}")
    order = [F.col("_source_file"), F.col("_line_number")]
    if arrived is not None:  # one row per file: broadcast
        df = df.join(F.broadcast(arrived), on="_source_file", how="left")
        order.insert(0, F.col(ARRIVED))
    if keep == "latest":
        order = [c.desc() for c in order]
    w = Window.partitionBy(*keys).orderBy(*order)
    if tuple(content) == tuple(keys):  # the key is the content: every other line is exact
        ranked = persist(df.withColumn("_rn", F.row_number().over(w))).drop(ARRIVED)
        extra = ranked.where(F.col("_rn") > 1).drop("_rn")
        return ranked.where(F.col("_rn") == 1).drop("_rn"), extra, extra.where(F.lit(False))
    ranked = persist(
        df.withColumn("_h", content_hash(list(content)))
        .withColumn("_rn", F.row_number().over(w))
        .withColumn(
            "_kept_h",
            F.first("_h").over(w.rowsBetween(Window.unboundedPreceding, Window.currentRow)),
        )
    ).drop(ARRIVED)
    kept = ranked.where(F.col("_rn") == 1).drop("_h", "_rn", "_kept_h")
    extra = ranked.where(F.col("_rn") > 1)
    exact = extra.where(F.col("_h") == F.col("_kept_h")).drop("_h", "_rn", "_kept_h")
    conflict = extra.where(F.col("_h") != F.col("_kept_h")).drop("_h", "_rn", "_kept_h")
    return kept, exact, conflict


def conflict_errors(conflict: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Gives conflicting duplicates an `_errors` entry so they quarantine like any reject."""
    return conflict.withColumn(
        ERRORS,
        F.array(
            F.struct(
                F.lit("conflicting_duplicate").alias("rule"),
                F.lit(",".join(keys)).alias("column"),
                F.lit(
                    f"another line has the same key ({', '.join(keys)}) with different values; "
                    "the latest line was kept"
                ).alias("reason"),
            )
        ),
    )
