"""Erasing one person from the lake: `retail-lake privacy erase --customer ID`.

A data subject's request to be forgotten (GDPR art. 17) is carried out in one recorded run
(`ops.job_runs`, job `erase`) that finds the person only by their token (the HMAC of their
id with the lake's key, computed in the driver):

1. Their rows leave every table: the bronze rows whose personal column (a source's
   `personal_columns`) tokenises to theirs, the rows whose pseudonym column (`Col.pseudonym`:
   silver transactions, returns and customers, the customer features, interactions, index
   and recommendations) holds it, and the quarantined records whose payload holds it; each
   table in one MERGE commit tagged with the run id. The token reaches those MERGEs as a row
   of a one-row frame, never as a literal, so no commit's recorded predicate and no query
   plan holds it. A quality result or a Data Docs page that quoted the token (a failed
   expectation's unexpected values) has it replaced by `<erased>`.
2. What depends on them is rebuilt (`rebuild`, given by the caller: the CLI runs the
   `features` job as a child run, so product features no longer count them); the
   recommender's model forgets them when it retrains on its next run.
3. Every table that can hold them is vacuumed with `privacy.erasure_retain_hours` (default
   0): the data files of older versions and the change feed's `_change_data` files, which
   still hold their rows, are deleted. Pseudonym columns never have Delta statistics, so the
   transaction log holds no token either.
4. `ops.erasures` gets a row: the rows deleted and files vacuumed per table, the operator's
   request reference, the key id; never the id or the token. The run's parameters hold the
   reference only.

A run that stops part way is completed by running the same command again (deleting what is
already gone deletes nothing; the vacuum and the record follow).

Example:
    From a shell::

        retail-lake privacy erase --customer 17850 --request DSR-2026-0042

    From Python:

    >>> from retail_lake.erasure import erase
    >>> from retail_lake.registry import run_job
    >>> ctx, _ = run_job(spark, cfg, "erase", erase("17850", request="DSR-2026-0042"),
    ...                  params={"request": "DSR-2026-0042"})
    >>> ctx.state["erasure"]["rows_deleted"]["silver.transactions"]
    312
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import reduce
from operator import or_
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from retail_lake.contracts import TableContract
from retail_lake.ingest import bronze_name
from retail_lake.maintenance import vacuum_tables
from retail_lake.ops import ERASURES, QUALITY_RESULTS
from retail_lake.privacy import Pseudonymiser, key_id, load_key, local_path, token
from retail_lake.quarantine import QUARANTINE
from retail_lake.runner import JobContext, JobError, JobResult, append_ops_rows

log = logging.getLogger(__name__)

ERASED = "<erased>"
TOKEN = "_erased_token"  # the source row's column


class ErasureError(JobError):
    """The erasure cannot be carried out (no identifier given, no table that holds people)."""


def erase(
    customer_id: str,
    request: str | None = None,
    rebuild: Callable[[JobContext], None] | None = None,
) -> Callable[[JobContext], JobResult]:
    """The job that erases the customer `customer_id` (as the source files write it).

    `request`: the operator's reference for the request, recorded; `rebuild(ctx)` runs what
    depends on the erased rows after they are deleted and before the vacuum. The counts
    are in `ctx.state["erasure"]` (rows_deleted, values_redacted, files_vacuumed per table).
    """

    def run(ctx: JobContext) -> JobResult:
        if not customer_id or not customer_id.strip():
            raise ErasureError("erase: give the customer id as the source files write it")
        key = load_key(ctx.cfg)
        pseudonymise = Pseudonymiser(key)
        # The token is the only thing about the person that reaches Spark: a one-row frame
        # (data, not literals), with the key's pads to tokenise bronze's raw ids alike.
        sought = pseudonymise.keyed(
            ctx.spark.createDataFrame([(token(customer_id, key),)], f"{TOKEN} string")
        )
        deleted: dict[str, int] = {}
        for table, condition in _holders(ctx, pseudonymise):
            result = ctx.lake.delete_matching(table, sought, condition, ctx.run_id)
            deleted[table] = result.deleted
            log.info("erase %s: %d row(s) deleted", table, result.deleted)
        redacted = _redact_results(ctx, sought)
        redacted.update(_redact_files(ctx, token(customer_id, key)))
        if rebuild is not None:
            rebuild(ctx)
        hours = float(ctx.cfg.get("privacy.erasure_retain_hours"))
        vacuumed = vacuum_tables(ctx, [t for t in deleted if ctx.lake.exists(t)], hours)
        record = {
            "run_id": ctx.run_id,
            "request": request,
            "key_id": key_id(key),
            "rows_deleted": deleted,
            "values_redacted": redacted,
            "files_vacuumed": vacuumed,
            "retain_hours": hours,
            "erased_at": datetime.now(UTC),
        }
        append_ops_rows(ctx.lake, ERASURES, [record], ctx.run_id)
        ctx.state["erasure"] = record
        log.info(
            "erased one customer: %d row(s) from %d table(s), %d old file(s) vacuumed",
            sum(deleted.values()),
            sum(1 for n in deleted.values() if n),
            sum(vacuumed.values()),
        )
        return JobResult()

    return run


def personal_bronze(ctx: JobContext) -> dict[str, list[str]]:
    """The bronze tables the lake has that hold raw personal ids, with those columns (a
    source's `personal_columns`, by their bronze names)."""
    found: dict[str, list[str]] = {}
    for name in ctx.cfg.sources:
        spec = ctx.cfg.get(f"sources.{name}")
        personal = [bronze_name(c) for c in spec.get("personal_columns") or []]
        if personal and ctx.lake.exists(spec.get("table")):
            found[spec.get("table")] = personal
    return found


def pseudonym_tables(ctx: JobContext) -> list[TableContract]:
    """The contracts of the tables the lake has with a pseudonym column (`Col.pseudonym`)."""
    return [c for c in ctx.registry if c.pseudonyms and ctx.lake.exists(c.name)]


def _holders(ctx: JobContext, pseudonymise: Pseudonymiser) -> list[tuple[str, Column]]:
    """(table, condition) for every table of the lake that can hold a person: the condition
    matches a row of theirs against the sought row `s`."""
    sought = F.col(f"s.{TOKEN}")
    found = [  # bronze: the raw id, tokenised as cleanse does
        (table, reduce(or_, [pseudonymise(F.col(f"t.{c}")) == sought for c in columns]))
        for table, columns in personal_bronze(ctx).items()
    ]
    found += [
        (c.name, reduce(or_, [F.col(f"t.{p}") == sought for p in c.pseudonyms]))
        for c in pseudonym_tables(ctx)
    ]
    if ctx.lake.exists(QUARANTINE):  # a payload holds the tokens of the fields it masked
        found.append((QUARANTINE, F.instr(F.col("t.payload"), sought) > 0))
    if not found:
        raise ErasureError(f"erase: no table under {ctx.cfg.root} holds personal data")
    return found


def _redact_results(ctx: JobContext, sought: DataFrame) -> dict[str, int]:
    """Quality results that quote the token (a failed expectation's unexpected values)
    keep their row, the token replaced by `<erased>`."""
    if not ctx.lake.exists(QUALITY_RESULTS):
        return {}
    quoting = F.instr(F.col("t.observed"), F.col(f"s.{TOKEN}")) > 0
    results = ctx.lake.read(QUALITY_RESULTS).alias("t")
    found = results.join(F.broadcast(sought.alias("s")), quoting, "left_semi").count()
    if found:
        redacted = F.replace(F.col("t.observed"), F.col(f"s.{TOKEN}"), F.lit(ERASED))
        with ctx.lake.tagged(ctx.run_id):
            (
                ctx.lake.delta_table(QUALITY_RESULTS)
                .alias("t")
                .merge(sought.alias("s"), quoting)
                .whenMatchedUpdate(set={"observed": redacted})
                .execute()
            )
        log.info("erase %s: the token redacted in %d row(s)", QUALITY_RESULTS, found)
    return {QUALITY_RESULTS: found}


def _redact_files(ctx: JobContext, value: str) -> dict[str, int]:
    """The token replaced by `<erased>` in the text files under the root's `data_docs`
    (validation pages and results that quoted unexpected values). A remote root has none."""
    local = local_path(ctx.cfg.root)
    folder = None if local is None else local / "data_docs"
    if folder is None or not folder.is_dir():
        return {}
    needle = value.encode()
    changed = 0
    for path in (p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if needle in data:
            _rewrite(path, data.replace(needle, ERASED.encode()))
            changed += 1
    if changed:
        log.info("erase data_docs: the token redacted in %d file(s)", changed)
    return {"data_docs": changed}


def _rewrite(path: Path, data: bytes) -> None:
    """Replaces `path`'s bytes through a file beside it (a crash leaves the old or the new)."""
    tmp = path.with_name(f".{path.name}.erasing")
    tmp.write_bytes(data)
    tmp.replace(path)
