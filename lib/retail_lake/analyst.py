"""`retail-lake sql`: analysts read the lake; a write takes `--allow-writes` and is a run.

A statement is classified by the session's own SQL parser (Delta's extensions included), so
what runs is what was checked: a query, or a command that only reads (SHOW, DESCRIBE,
EXPLAIN, Delta's DESCRIBE HISTORY / DETAIL), runs as it is. Anything else (INSERT, UPDATE,
DELETE, MERGE, DROP, CREATE, ALTER, OPTIMIZE, VACUUM, SET, CACHE, ...) is refused with a
message naming it, unless writes are allowed: then it runs as a job `sql` recorded in
ops.job_runs with the statement, and its commits carry the run id like every job's.

A hand-made change is not a job's: `retail-lake run cleanse --full` rebuilds silver from
bronze and the rules whatever was done to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Spark's and Delta's logical plans of commands that only read the catalog or a table.
READ_ONLY_COMMANDS = frozenset(
    {
        "DescribeColumn",
        "DescribeDeltaDetail",
        "DescribeDeltaDetailCommand",
        "DescribeDeltaHistory",
        "DescribeDeltaHistoryCommand",
        "DescribeFunction",
        "DescribeNamespace",
        "DescribeRelation",
        "ExplainCommand",
        "ShowCatalogs",
        "ShowColumns",
        "ShowCreateTable",
        "ShowFunctions",
        "ShowNamespaces",
        "ShowPartitions",
        "ShowTableExtended",
        "ShowTableProperties",
        "ShowTables",
        "ShowViews",
    }
)
_COMMAND_TRAITS = (
    "org.apache.spark.sql.catalyst.plans.logical.Command",
    "org.apache.spark.sql.catalyst.plans.logical.ParsedStatement",
)


class WriteRefusedError(ValueError):
    """A statement that would change the lake, given without --allow-writes."""


@dataclass(frozen=True)
class Statement:
    """What the parser made of one SQL text."""

    kind: str  # the logical plan's class, e.g. Project, DeleteFromTable, ShowTables
    writes: bool


def classify(spark: SparkSession, query: str) -> Statement:
    """Parses `query` with the session's parser (nothing runs) and says whether it writes.

    Every node of the parsed plan is looked at, not only its root: a write can hide under a
    wrapper that is not a command itself (`WITH ... DELETE`, a multi-insert's union).
    `kind` names the first writing node found, else the plan's root.

    >>> classify(spark, "DELETE FROM silver.stores").writes
    True
    """
    plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    java_class = spark._jvm.java.lang.Class
    traits = [java_class.forName(t) for t in _COMMAND_TRAITS]
    for node in _nodes(plan):
        kind = _kind(node)
        if kind not in READ_ONLY_COMMANDS and any(t.isInstance(node) for t in traits):
            return Statement(kind, True)
    return Statement(_kind(plan), False)


def _kind(node) -> str:
    return str(node.getClass().getSimpleName()).rstrip("$")


def _nodes(plan) -> Iterator:
    """The plan and every plan below it: its children and inner children (a WITH's CTEs)."""
    stack = [plan]
    while stack:
        node = stack.pop()
        yield node
        for seq in (node.children(), node.innerChildren()):
            stack.extend(seq.apply(i) for i in range(seq.size()))


def tables_named(spark: SparkSession, query: str) -> set[str]:
    """The lake's tables (`layer.table`) and whole layers (`SHOW TABLES IN silver`) that
    `query` names, read from its parsed plan (nothing runs).

    >>> sorted(tables_named(spark, "SELECT * FROM silver.stores JOIN gold.x USING (store)"))
    ['gold.x', 'silver.stores']
    """
    from retail_lake.session import LAYERS

    plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    named: set[str] = set()
    for node in _nodes(plan):
        kind = _kind(node)
        if not kind.startswith("Unresolved"):
            continue
        parts = _name_parts(node)
        if len(parts) == 3 and parts[0] == "spark_catalog":
            parts = parts[1:]
        if len(parts) == 2 and parts[0] in LAYERS:
            named.add(".".join(parts))
        elif len(parts) == 1 and parts[0] in LAYERS and kind == "UnresolvedNamespace":
            named.add(parts[0])
    return named


def _name_parts(node) -> list[str]:
    """The identifier of an unresolved relation, table, view, namespace or name, else []."""
    from py4j.protocol import Py4JError

    for method in ("multipartIdentifier", "nameParts"):
        try:
            seq = getattr(node, method)()
        except Py4JError:
            continue
        return [str(seq.apply(i)) for i in range(seq.size())]
    return []


def run_sql(spark: SparkSession, cfg, query: str, allow_writes: bool = False) -> DataFrame:
    """The statement's result; a write only with `allow_writes`, run as a recorded job.

    Only the tables the statement names are registered (each registration reads a log), so a
    session started with `build_session(cfg, register=False)` answers at once on a big lake.
    """
    from retail_lake.session import register_tables

    statement = classify(spark, query)
    if statement.writes and not allow_writes:
        raise WriteRefusedError(
            f"refused: the statement is a {statement.kind}, which changes the lake; "
            "retail-lake sql runs queries only (SELECT, SHOW, DESCRIBE, EXPLAIN). Add "
            "--allow-writes to run it as a recorded run in ops.job_runs"
        )
    register_tables(spark, cfg.root, tables_named(spark, query))
    if not statement.writes:
        return spark.sql(query)
    from retail_lake.registry import run_job
    from retail_lake.runner import JobResult

    result: list[DataFrame] = []

    def job(ctx) -> JobResult:
        log.warning("[%s] sql: running a %s by hand", ctx.run_id, statement.kind)
        with ctx.lake.tagged(ctx.run_id):
            # A command runs when the frame is made; its rows (metrics) are read here.
            df = ctx.spark.sql(query)
            result.append(ctx.spark.createDataFrame(df.collect(), df.schema))
        return JobResult()

    run_job(spark, cfg, "sql", job, params={"statement": query, "kind": statement.kind})
    return result[0]
