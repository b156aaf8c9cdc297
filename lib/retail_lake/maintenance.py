"""Vacuum: the files a table no longer references, deleted once older than its retention.

Delta keeps every file a table ever referenced until VACUUM deletes it: the rows a merge
replaced, a retracted landing file's bronze rows, the change feed's pre-images
(`_change_data`). `retail-lake vacuum` runs Delta's VACUUM on every table of the lake (or
those named) in one recorded run (`ops.job_runs`, job `vacuum`; each table's VACUUM commits
carry its run id), each table keeping its contract's retention (`retention_days`: bronze 90,
silver and gold 30, ops 365; time travel reaches that far back). `--retain-hours` overrides
it; under Delta's 7-day safety floor it must be asked for explicitly, since a reader or
writer still on an older version would then fail.

Example:
    From a shell::

        retail-lake vacuum                                 # every table, its own retention
        retail-lake vacuum --table silver.transactions --retain-hours 0 --dry-run

    From Python:

    >>> from retail_lake.maintenance import vacuum
    >>> from retail_lake.registry import run_job
    >>> ctx, _ = run_job(spark, cfg, "vacuum", vacuum(["silver.stores"], retain_hours=0))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from retail_lake.runner import JobContext, JobError, JobResult

log = logging.getLogger(__name__)

SAFETY_FLOOR_HOURS = 7 * 24  # Delta's retentionDurationCheck


def vacuum(
    tables: Sequence[str] = (), retain_hours: float | None = None, dry_run: bool = False
) -> Callable[[JobContext], JobResult]:
    """The job that vacuums `tables` (default: every table of the registry the lake has).

    Each table's deleted file count is logged and kept in `ctx.state["vacuumed"]`
    (table -> files); with `dry_run` nothing is deleted, the files are only counted.
    """

    def run(ctx: JobContext) -> JobResult:
        names = list(tables) or [c.name for c in ctx.registry if ctx.lake.exists(c.name)]
        unknown = [t for t in names if t not in ctx.registry or not ctx.lake.exists(t)]
        if unknown:
            raise JobError(f"vacuum: no such table in {ctx.cfg.root}: {', '.join(unknown)}")
        ctx.state["vacuumed"] = vacuum_tables(ctx, names, retain_hours, dry_run)
        return JobResult()

    return run


def vacuum_tables(
    ctx: JobContext, names: Sequence[str], retain_hours: float | None, dry_run: bool = False
) -> dict[str, int]:
    """Delta's VACUUM on each of `names` (tables that exist), keeping files younger than
    `retain_hours` (None: each table's `retention_days`); each VACUUM commit carries the run
    id. Returns table -> files deleted (with `dry_run`: that would be)."""
    conf = ctx.spark.conf
    # VACUUM lists the table's folders with this many tasks: Spark's default (10,000)
    # made a 3-file table take 40 s here; a few per core took 0.8 s.
    listing = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = {key: conf.get(key, None) for key in (listing, check)}
    vacuumed: dict[str, int] = {}
    try:
        conf.set(listing, str(max(8, 4 * ctx.spark.sparkContext.defaultParallelism)))
        if retain_hours is not None and retain_hours < SAFETY_FLOOR_HOURS:
            conf.set(check, "false")  # asked for explicitly
        for name in names:
            hours = retain_hours
            if hours is None:
                hours = ctx.registry[name].retention_days * 24
            path = ctx.lake.location(name).replace("`", "``")
            statement = f"VACUUM delta.`{path}` RETAIN {float(hours)} HOURS"
            listed = ctx.spark.sql(f"{statement} DRY RUN").collect()
            files = _files(ctx, [r["path"] for r in listed])
            if files and not dry_run:
                with ctx.lake.tagged(ctx.run_id):
                    ctx.spark.sql(statement).collect()
            vacuumed[name] = files
            log.info(
                "vacuum %s: %d file(s) older than %g hours %s",
                name,
                files,
                hours,
                "would be deleted (dry run)" if dry_run else "deleted",
            )
    finally:
        for key, value in before.items():
            if value is None:
                conf.unset(key)
            else:
                conf.set(key, value)
    return vacuumed


def _files(ctx: JobContext, paths: list[str]) -> int:
    """How many of VACUUM's candidates are files (it also lists folders, removed if empty)."""
    jvm = ctx.spark.sparkContext._jvm
    conf = ctx.spark.sparkContext._jsc.hadoopConfiguration()
    count = 0
    for p in paths:
        path = jvm.org.apache.hadoop.fs.Path(p)
        count += bool(path.getFileSystem(conf).isFile(path))
    return count
