"""Taking a landed file back out of the lake: `retail-lake landing retract FILE`.

A file landed by mistake (the wrong day's export, a test file, a corrupt copy) is retracted
in one recorded run (`ops.job_runs`, job `retract`): its rows leave its source's bronze table
and its broken lines leave `silver.quarantine`, in one commit each, and the ledger
(`ops.landed_files`) records it as `retracted`. Cleanse then rebuilds the source's silver
tables from bronze (a row no longer produced is retired, and the change feed shows the
deletes); features and the models follow on their next run, which sees their inputs changed.

While the same bytes stay in the landing folder under that name, ingest skips them; a
corrected file landed under the name (other bytes) is ingested again.

Example:
    From a shell::

        retail-lake landing retract online_retail/2011-12-09.csv

    From Python:

    >>> from retail_lake.landing import retract
    >>> from retail_lake.registry import run_job
    >>> ctx, writes = run_job(spark, cfg, "retract", retract("online_retail/2011-12-09.csv"),
    ...                       params={"file": "online_retail/2011-12-09.csv"})
    >>> writes["bronze.online_retail_raw"].deleted
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pyspark.sql import functions as F

from retail_lake.ingest import INGESTED, RETRACTED
from retail_lake.leases import ops_rows
from retail_lake.ops import LANDED_FILES
from retail_lake.quarantine import QUARANTINE
from retail_lake.runner import JobContext, JobError, JobResult, Output, append_ops_rows

log = logging.getLogger(__name__)


class RetractError(JobError):
    """The file cannot be retracted (not landed, or nothing of it is in the lake)."""


def landed_row(ctx: JobContext, file: str) -> dict:
    """The ledger's latest row of `file`, which must be an ingested file.

    Raises:
        RetractError: the ledger has no such file, or its latest row is not `ingested`.
    """
    rows = sorted(
        (r for r in ops_rows(ctx.lake, LANDED_FILES) if r["file"] == file),
        key=lambda r: r["recorded_at"],
    )
    if not rows:
        raise RetractError(
            f"{file} is not in the landing ledger (ops.landed_files) of {ctx.cfg.root}: name "
            "it as ingest recorded it, relative to the landing folder (e.g. "
            'online_retail/online_retail.csv.gz; `retail-lake sql "SELECT file, status FROM '
            'ops.landed_files"` lists them)'
        )
    last = rows[-1]
    if last["status"] != INGESTED:
        raise RetractError(
            f"{file} is recorded as {last['status']} (run {last['run_id']}): none of its rows "
            "are in bronze, nothing to retract"
        )
    return last


def retract(file: str) -> Callable[[JobContext], JobResult]:
    """The job that takes landing file `file` (as `ops.landed_files` names it) back out.

    Its source's bronze rows (`_source_file = file`) are replaced by none, its ingest-stage
    quarantine rows are retired, and the ledger gains a `retracted` row once both are
    committed. Cleanse is not run here (`retail-lake landing retract` runs it next).
    """

    def run(ctx: JobContext) -> JobResult:
        row = landed_row(ctx, file)
        source = row["source"]
        table = ctx.cfg.get(f"sources.{source}.table") if source in ctx.cfg.sources else None
        if table is None or not ctx.lake.exists(table):
            raise RetractError(f"{file}: source {source} has no bronze table under this config")
        bronze = ctx.read(table)
        mine = F.col("_source_file") == F.lit(file)
        rows = bronze.where(mine).count()
        result = JobResult(rows_read={table: rows})
        declared = [c for c in ctx.registry[table].column_names if c in bronze.columns]
        # No rows where the file's were: one atomic replaceWhere commit deletes them (the
        # columns a drifting source added stay in the table's schema).
        predicate = "_source_file = '" + file.replace("\\", "\\\\").replace("'", "\\'") + "'"
        no_rows = bronze.where(F.lit(False)).select(*declared)
        result.outputs.append(Output(table, no_rows, mode="replace_where", replace_where=predicate))
        if ctx.lake.exists(QUARANTINE):
            owned = (F.col("stage") == "ingest") & (F.col("source") == source) & mine
            no_lines = ctx.read(QUARANTINE).where(F.lit(False)).drop("_run_id", "_content_hash")
            result.outputs.insert(0, Output(QUARANTINE, no_lines, mode="merge", retire=owned))
        ledger = {**row, "status": RETRACTED, "duplicate_of": None, "run_id": ctx.run_id}

        def record(writes) -> None:
            ledger["recorded_at"] = datetime.now(UTC)
            append_ops_rows(ctx.lake, LANDED_FILES, [ledger], ctx.run_id)
            gone = writes.get(QUARANTINE)
            log.info(
                "retracted %s (source %s): %d bronze rows, %s quarantined lines",
                file,
                source,
                rows,
                "no" if gone is None or gone.skipped else gone.deleted,
            )

        result.after_publish = record
        return result

    return run
