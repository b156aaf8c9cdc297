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

`retail-lake run maintain` (the pipeline's last step) compacts and vacuums: each table
that changed since its last OPTIMIZE is compacted (Z-ordered by its contract's `zorder_by`,
the columns analysts filter on), retrying when a writer commits to it at the same time,
then vacuumed with its retention, guarded. Before any VACUUM the guard finds the versions
still needed: each published model's training inputs (its latest registered version's
`input_versions` in ops.model_metrics) and the versions pinned in `maintain.keep_versions`.
When a VACUUM would delete a file such a version reads, the table is not vacuumed and the
job fails naming the model and version (`maintain.on_needed_version: refuse`), or that
version's rows are first copied to `<root>/snapshots/<layer>/<table>/version=<v>` (a Delta
table of its own, which no vacuum touches) and the vacuum goes on (`snapshot`). What each
table gained and lost (files, bytes, versions) is kept in ops.job_runs.details as JSON.

    >>> from retail_lake.maintenance import maintain
    >>> ctx, _ = run_job(spark, cfg, "maintain", maintain(["silver.stores"]))
    >>> ctx.details["tables"]["silver.stores"]["vacuum"]["files_deleted"]
    0
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from retail_lake.config import ConfigError
from retail_lake.lake import is_conflict
from retail_lake.ops import MODEL_METRICS
from retail_lake.quality import utc_now
from retail_lake.runner import JobContext, JobError, JobResult

log = logging.getLogger(__name__)

SAFETY_FLOOR_HOURS = 7 * 24  # Delta's retentionDurationCheck


def vacuum(
    tables: Sequence[str] = (), retain_hours: float | None = None, dry_run: bool = False
) -> Callable[[JobContext], JobResult]:
    """The job that vacuums `tables` (default: every table of the registry the lake has),
    guarded as `maintain` is (refusing: a needed version is never cut into).

    Each table's deleted file count is logged and kept in `ctx.state["vacuumed"]`
    (table -> files); with `dry_run` nothing is deleted, the files are only counted.
    """

    def run(ctx: JobContext) -> JobResult:
        done = _maintain(ctx, "vacuum", tables, retain_hours, "refuse", False, dry_run)
        ctx.state["vacuumed"] = {t: d["vacuum"].get("files_deleted", 0) for t, d in done.items()}
        return JobResult()

    return run


def vacuum_tables(
    ctx: JobContext, names: Sequence[str], retain_hours: float | None, dry_run: bool = False
) -> dict[str, int]:
    """Delta's VACUUM on each of `names` (tables that exist), keeping files younger than
    `retain_hours` (None: each table's `retention_days`); each VACUUM commit carries the run
    id. Returns table -> files deleted (with `dry_run`: that would be).

    Unguarded: an erasure or a key rotation must delete the old files whatever reads them
    (`maintain` guards the versions models need)."""
    vacuumed: dict[str, int] = {}
    with _VacuumSettings(ctx, retain_hours):
        for name in names:
            hours = _hours(ctx, name, retain_hours)
            doomed = _doomed(ctx, name, hours)
            if doomed and not dry_run:
                _vacuum(ctx, name, hours)
            vacuumed[name] = len(doomed)
            _log_vacuum(name, len(doomed), sum(doomed.values()), hours, dry_run)
    return vacuumed


@dataclass(frozen=True)
class Need:
    """A version of a table something still reads, and who.

    Example:
        >>> Need("gold.sales_windows", 4, "model rossmann_sales_forecaster version 3")
    """

    table: str
    version: int
    by: str


def needed_versions(ctx: JobContext) -> list[Need]:
    """The versions a VACUUM must keep readable: every input version of each model's latest
    published version (ops.model_metrics rows with a model_version), and the versions pinned
    in `maintain.keep_versions` ({table: [version, ...]}).

    Raises:
        ConfigError: `maintain.keep_versions` is not a mapping of tables to versions.
    """
    needs: list[Need] = []
    if ctx.lake.exists(MODEL_METRICS):
        from pyspark.sql import functions as F

        latest = F.max_by(F.struct("model_version", "input_versions"), "recorded_at")
        published = (
            ctx.lake.read(MODEL_METRICS)
            .where(F.col("model_version").isNotNull() & F.col("input_versions").isNotNull())
            .groupBy("model_name")
            .agg(latest.alias("latest"))
            .collect()
        )
        for row in published:
            by = f"model {row['model_name']} version {row['latest']['model_version']}"
            inputs = row["latest"]["input_versions"]
            needs += [Need(t, int(v), by) for t, v in sorted(inputs.items())]
    pinned = ctx.cfg.get("maintain.keep_versions") or {}
    if not isinstance(pinned, dict):
        raise ConfigError("maintain.keep_versions must map tables to lists of versions")
    for table, versions in sorted(pinned.items()):
        listed = versions if isinstance(versions, list) else [versions]
        try:
            needs += [Need(table, int(v), "maintain.keep_versions") for v in listed]
        except (TypeError, ValueError):
            raise ConfigError(
                f"maintain.keep_versions.{table}: versions must be whole numbers, got {versions!r}"
            ) from None
    return needs


def snapshot_location(ctx: JobContext, table: str, version: int) -> str:
    """Where `maintain` copies a needed version: `<root>/snapshots/<layer>/<table>/version=<v>`."""
    layer, short = table.split(".", 1)
    return f"{ctx.cfg.root.rstrip('/')}/snapshots/{layer}/{short}/version={version}"


def maintain(
    tables: Sequence[str] = (),
    retain_hours: float | None = None,
    on_needed: str | None = None,
    optimize: bool = True,
) -> Callable[[JobContext], JobResult]:
    """The job that compacts and vacuums `tables` (default: every table the lake has).

    Args:
        tables: table names; default every registered table that exists.
        retain_hours: VACUUM's retention; default each table's `retention_days`.
        on_needed: what to do when a VACUUM would delete files of a needed version
            (`needed_versions`): `refuse` (that table is not vacuumed; the job fails naming
            the model and version once the other tables are done) or `snapshot` (copy that
            version's rows first); default `maintain.on_needed_version`.
        optimize: compact (and Z-order) before vacuuming.

    What happened to each table is in `ctx.details["tables"]` (kept in ops.job_runs).
    """

    def run(ctx: JobContext) -> JobResult:
        mode = on_needed or ctx.cfg.get("maintain.on_needed_version")
        _maintain(ctx, "maintain", tables, retain_hours, mode, optimize, False)
        return JobResult()

    return run


def _maintain(
    ctx: JobContext,
    job: str,
    tables: Sequence[str],
    retain_hours: float | None,
    mode: str,
    optimize: bool,
    dry_run: bool,
) -> dict[str, dict[str, Any]]:
    """Each table compacted (`optimize`) then vacuumed unless that would cut into a needed
    version (`mode`: refuse or snapshot); what happened per table, also in `ctx.details`."""
    names = list(tables) or [c.name for c in ctx.registry if ctx.lake.exists(c.name)]
    unknown = [t for t in names if t not in ctx.registry or not ctx.lake.exists(t)]
    if unknown:
        raise JobError(f"{job}: no such table in {ctx.cfg.root}: {', '.join(unknown)}")
    if mode not in ("refuse", "snapshot"):
        raise ConfigError(f"maintain.on_needed_version must be refuse or snapshot, not {mode!r}")
    needs = needed_versions(ctx)
    attempts = int(ctx.cfg.get("maintain.optimize_attempts"))
    min_files = int(ctx.cfg.get("maintain.min_files"))
    if min_files < 2:
        raise ConfigError(f"maintain.min_files must be 2 or more, not {min_files}")
    done: dict[str, dict[str, Any]] = {}
    ctx.details["tables"] = done
    refused: list[str] = []
    with _VacuumSettings(ctx, retain_hours):
        for name in names:
            entry: dict[str, Any] = {}
            done[name] = entry
            if optimize:
                entry["optimize"] = optimize_table(ctx, name, attempts, min_files)
            hours = _hours(ctx, name, retain_hours)
            doomed = _doomed(ctx, name, hours)
            cut = _cut_into(ctx, name, set(doomed), [n for n in needs if n.table == name])
            if cut and (mode == "refuse" or dry_run):
                refused += [f"{name} version {n.version} ({n.by})" for n in cut]
                entry["vacuum"] = {"refused": [f"version {n.version}: {n.by}" for n in cut]}
                log.error(
                    "%s %s: not vacuumed: %d file(s) older than %g hours are read by %s",
                    job,
                    name,
                    len(doomed),
                    hours,
                    "; ".join(f"version {n.version} ({n.by})" for n in cut),
                )
                continue
            if cut:
                entry["snapshots"] = [_snapshot(ctx, n) for n in cut]
            if doomed and not dry_run:
                _vacuum(ctx, name, hours)
            _log_vacuum(name, len(doomed), sum(doomed.values()), hours, dry_run)
            entry["vacuum"] = {
                "files_deleted": len(doomed),
                "bytes_deleted": sum(doomed.values()),
                "retain_hours": hours,
                "version": ctx.lake.version(name),
                **({"dry_run": True} if dry_run else {}),
            }
    if refused and not dry_run:
        raise JobError(
            f"{job}: VACUUM would delete files that versions still needed read, so these "
            "tables were not vacuumed: "
            + "; ".join(refused)
            + ". Retrain or unpin to release them, vacuum with a longer --retain-hours, or "
            "set maintain.on_needed_version=snapshot to copy those versions first."
        )
    return done


# Operations that change no row: a table whose commits since its last OPTIMIZE are only
# these is not compacted again.
_NO_DATA_CHANGE = frozenset({"VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "OPTIMIZE"})


def optimize_table(
    ctx: JobContext, name: str, attempts: int = 5, min_files: int = 2
) -> dict[str, Any]:
    """OPTIMIZE `name` (ZORDER BY its contract's `zorder_by`) unless nothing was written to
    it since its last OPTIMIZE or it has fewer than `min_files` files (rewriting a whole
    table to spare a reader two or three file opens costs more than it saves). A writer
    committing to the table meanwhile is Delta's conflict error: the OPTIMIZE is tried
    again, up to `attempts` times, on the new version.

    Returns what it did: files and bytes removed and added, the version it committed, the
    Z-order columns, the attempts; or why it skipped."""
    contract = ctx.registry[name]
    files, _ = ctx.lake.file_count_and_creation(name)  # from the log by delta-rs: no job
    if files < min_files:
        log.info("maintain %s: %d file(s), fewer than %d: left as it is", name, files, min_files)
        return {"skipped": f"{files} file(s), fewer than {min_files}"}
    ops = [op for _, op in ctx.lake.operations(name, 20)]
    since = next((i for i, op in enumerate(ops) if op not in _NO_DATA_CHANGE - {"OPTIMIZE"}), None)
    if since is not None and ops[since] == "OPTIMIZE":
        log.info("maintain %s: nothing written since its last OPTIMIZE", name)
        return {"skipped": "nothing written since the last OPTIMIZE"}
    path = ctx.lake.location(name).replace("`", "``")
    statement = f"OPTIMIZE delta.`{path}`"
    if contract.zorder_by:
        _collect_stats(ctx, name)
        statement += " ZORDER BY (" + ", ".join(f"`{c}`" for c in contract.zorder_by) + ")"
    for attempt in range(1, attempts + 1):
        try:
            with ctx.lake.tagged(ctx.run_id):
                metrics = ctx.spark.sql(statement).first()["metrics"]
            break
        except Exception as exc:  # Delta's conflicts come through py4j
            if not is_conflict(exc) or attempt == attempts:
                raise
            wait = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.info(
                "maintain %s: a writer committed during OPTIMIZE (%s); again in %.1fs",
                name,
                type(exc).__name__,
                wait,
            )
            time.sleep(wait)
    done = {
        "files_removed": int(metrics["numFilesRemoved"]),
        "files_added": int(metrics["numFilesAdded"]),
        "bytes_removed": int(metrics["filesRemoved"]["totalSize"] or 0),
        "bytes_added": int(metrics["filesAdded"]["totalSize"] or 0),
        "zorder_by": list(contract.zorder_by),
        "attempts": attempt,
        "version": ctx.lake.version(name),
    }
    log.info(
        "maintain %s: OPTIMIZE%s %d file(s) -> %d (%d -> %d bytes)",
        name,
        f" ZORDER BY {', '.join(contract.zorder_by)}" if contract.zorder_by else "",
        done["files_removed"],
        done["files_added"],
        done["bytes_removed"],
        done["bytes_added"],
    )
    return done


def _collect_stats(ctx: JobContext, name: str) -> None:
    """Sets the table's statistics columns to its contract's (which hold the Z-order
    columns: Delta refuses to Z-order by a column without them) on a table created before."""
    key = "delta.dataSkippingStatsColumns"
    want = ctx.registry[name].delta_properties.get(key)
    path = ctx.lake.location(name).replace("`", "``")
    has = ctx.spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"].get(key)
    if want and has != want:
        log.info("maintain %s: statistics on %s (the Z-order columns among them)", name, want)
        with ctx.lake.tagged(ctx.run_id):
            ctx.spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{key}' = '{want}')")


class _VacuumSettings:
    """VACUUM's listing parallelism, and Delta's retention check lifted when a retention
    under its 7-day floor was asked for explicitly; restored afterwards."""

    # VACUUM lists the table's folders with this many tasks: Spark's default (10,000)
    # made a 3-file table take 40 s here; a few per core took 0.8 s.
    LISTING = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"

    def __init__(self, ctx: JobContext, retain_hours: float | None) -> None:
        self.ctx, self.retain_hours = ctx, retain_hours

    def __enter__(self) -> None:
        conf = self.ctx.spark.conf
        self.before = {k: conf.get(k, None) for k in (self.LISTING, self.CHECK)}
        conf.set(self.LISTING, str(max(8, 4 * self.ctx.spark.sparkContext.defaultParallelism)))
        if self.retain_hours is not None and self.retain_hours < SAFETY_FLOOR_HOURS:
            conf.set(self.CHECK, "false")  # asked for explicitly

    def __exit__(self, *exc: object) -> None:
        conf = self.ctx.spark.conf
        for key, value in self.before.items():
            if value is None:
                conf.unset(key)
            else:
                conf.set(key, value)


def _hours(ctx: JobContext, name: str, retain_hours: float | None) -> float:
    if retain_hours is not None:
        return float(retain_hours)
    return float(ctx.registry[name].retention_days * 24)


def _statement(ctx: JobContext, name: str, hours: float) -> str:
    path = ctx.lake.location(name).replace("`", "``")
    return f"VACUUM delta.`{path}` RETAIN {float(hours)} HOURS"


def _doomed(ctx: JobContext, name: str, hours: float) -> dict[str, int]:
    """The files (normalised path -> bytes) a VACUUM of `name` with `hours` would delete
    (VACUUM's dry run also lists folders, removed if empty: left out). Nothing when the
    table is younger than `hours`: no file under it can be older (no dry run needed)."""
    _, created = ctx.lake.file_count_and_creation(name)
    if created is not None and created > utc_now() - timedelta(hours=hours):
        return {}
    listed = ctx.spark.sql(f"{_statement(ctx, name, hours)} DRY RUN").collect()
    jvm = ctx.spark.sparkContext._jvm
    conf = ctx.spark.sparkContext._jsc.hadoopConfiguration()
    files: dict[str, int] = {}
    for row in listed:
        path = jvm.org.apache.hadoop.fs.Path(row["path"])
        fs = path.getFileSystem(conf)
        if fs.isFile(path):
            files[_normal(row["path"])] = int(fs.getFileStatus(path).getLen())
    return files


def _vacuum(ctx: JobContext, name: str, hours: float) -> None:
    with ctx.lake.tagged(ctx.run_id):
        ctx.spark.sql(_statement(ctx, name, hours)).collect()


def _log_vacuum(name: str, files: int, size: int, hours: float, dry_run: bool) -> None:
    log.info(
        "vacuum %s: %d file(s) (%d bytes) older than %g hours %s",
        name,
        files,
        size,
        hours,
        "would be deleted (dry run)" if dry_run else "deleted",
    )


def _normal(path: str) -> str:
    """A file's path as VACUUM and a snapshot's file list both name it: scheme, host and the
    decoded path (Delta percent-encodes partition values in one and not the other)."""
    parts = urlparse(path)
    clean = str(PurePosixPath("/" + unquote(parts.path).lstrip("/")))
    return f"{parts.scheme or 'file'}://{parts.netloc}{clean}"


def _cut_into(ctx: JobContext, name: str, doomed: set[str], needs: Iterable[Need]) -> list[Need]:
    """The needs whose version reads a file in `doomed`, and no snapshot of it was made."""
    if not doomed:
        return []
    current = ctx.lake.version(name)
    cut = []
    for need in sorted(needs, key=lambda n: n.version):
        if need.version >= current or _is_delta(ctx, snapshot_location(ctx, name, need.version)):
            continue
        files = ctx.lake.read(name, need.version).inputFiles()
        if doomed.intersection(_normal(f) for f in files):
            cut.append(need)
    return cut


def _is_delta(ctx: JobContext, where: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(ctx.spark, where)


def _snapshot(ctx: JobContext, need: Need) -> dict[str, Any]:
    """Copies version `need.version` of its table to `snapshot_location` (one commit)."""
    where = snapshot_location(ctx, need.table, need.version)
    rows = ctx.lake.read(need.table, need.version)
    with ctx.lake.tagged(ctx.run_id):
        rows.write.format("delta").mode("errorifexists").save(where)
    count = ctx.spark.read.format("delta").load(where).count()
    log.info(
        "maintain %s: version %d (%s) copied to %s (%d rows) before the vacuum",
        need.table,
        need.version,
        need.by,
        where,
        count,
    )
    return {"version": need.version, "needed_by": need.by, "location": where, "rows": count}
