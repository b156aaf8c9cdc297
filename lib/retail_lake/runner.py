"""The job runner: run ids, ops.job_runs, write-audit-publish, row conservation.

A job is a function `run(ctx: JobContext) -> JobResult`. It reads through `ctx.read` (which
records the Delta version it read), computes its outputs and returns them unwritten. The
runner then audits every output (contract schema, expectation suite, row conservation) and
only when all pass writes them. A failing critical expectation or conservation check
writes nothing, records the quality results, and fails the run with a readable summary.

Example:
    A job of one output. The table it writes needs a contract in `retail_lake.registry`
    (`gold.store_type_daily_sales`, the example of `retail_lake.contracts.TableContract`),
    and a job run by name from the CLI an entry in `retail_lake.registry.JOBS`:

    >>> from pyspark.sql import functions as F
    >>> from retail_lake.registry import run_job
    >>> from retail_lake.runner import JobContext, JobResult, Output
    >>> def run(ctx: JobContext) -> JobResult:
    ...     sales = ctx.read("silver.store_daily_sales")
    ...     stores = ctx.read("silver.stores").select("store", "store_type")
    ...     daily = (
    ...         sales.join(stores, on="store", how="inner")
    ...         .groupBy("store_type", "date")
    ...         .agg(F.sum("sales").alias("sales"))
    ...     )
    ...     return JobResult(
    ...         outputs=[Output("gold.store_type_daily_sales", daily)],
    ...         rows_read={"silver.store_daily_sales": sales.count()},
    ...     )
    >>> ctx, writes = run_job(spark, cfg, "my_job", run)
    >>> writes["gold.store_type_daily_sales"].inserted
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from retail_lake.config import Config
from retail_lake.contracts import Registry, TableContract
from retail_lake.data_docs import DataDocs
from retail_lake.driver_writes import append_rows, driver_table
from retail_lake.lake import Lake, WriteResult, arrow_rows, local_frame, with_metadata
from retail_lake.leases import (
    RUNNING,
    Heartbeat,
    RunConflictError,
    abandoned_row,
    conflict_message,
    decide,
    expired,
    last_sign,
    running_runs,
)
from retail_lake.ops import JOB_RUNS, OPS, QUALITY_RESULTS, UNIT_STATES
from retail_lake.privacy import rotation_pending
from retail_lake.quality import ExpectationResult, gate, load_suite, utc_now, validate
from retail_lake.redaction import redact, redact_text

log = logging.getLogger(__name__)

ROTATE_KEY = "rotate_key"  # the one job that runs while a key rotation is pending

OPS_CONTRACTS = Registry(OPS)
# Config sections that do not shape any table's rows (how Spark runs, Data Docs, the DAG).
NOT_SHAPING = ("paths", "spark", "quality", "pipeline", "runner", "mlflow")


class JobError(RuntimeError):
    """A job failed for a reason its message states (bad input, missing table, ...)."""


class ConservationError(JobError):
    """Rows were lost or invented between a stage's input and its outputs."""


@dataclass(frozen=True)
class Output:
    """A pending write: validated against the table's suite, then written.

    A job returns its outputs unwritten in `JobResult.outputs`; the runner checks each
    against its table's contract and expectation suite and, when every output passes,
    writes them with `Lake.write`.

    Attributes:
        table: the table written, `layer.name`, with a contract in the registry.
        df: the rows, with the contract's columns (the runner adds `_run_id` and
            `_content_hash`).
        mode: merge, replace_where, overwrite or append; default the contract's
            `write_mode`.
        replace_where: the predicate of the rows a `replace_where` write replaces.
        extra_columns: (append only) text columns beyond the contract (bronze schema drift).
        unit: the unit of work (`JobContext.unchanged`) the output belongs to, if any.
        retire: (merge only) a predicate naming the rows of the table this output owns in
            full; those whose keys it no longer holds are deleted in the same commit.

    Example:
        >>> Output("gold.sales_forecasts", forecasts)  # merged on the contract's keys
        >>> Output("gold.store_day_features", features, retire="true")  # deletes rows it lacks
        >>> Output("gold.sales_windows", windows, mode="overwrite", unit="features store_day")
    """

    table: str
    df: DataFrame
    mode: str | None = None  # default: the contract's write_mode
    replace_where: str | None = None
    # Text columns beyond the contract (bronze schema drift a source evolves); append only.
    extra_columns: tuple[str, ...] = ()
    # The unit of work (`JobContext.unchanged`) this output belongs to, if any.
    unit: str | None = None
    # Merge only: a predicate (SQL text or Column) naming the rows of the table this output
    # owns in full; those whose keys it no longer holds are deleted in the same commit.
    retire: str | Column | None = None


@dataclass(frozen=True)
class Conservation:
    """inputs == sum(outputs): e.g. bronze rows = silver + quarantined + duplicates.

    A job adds one to `JobResult.conservation` for each stage that must neither lose nor
    invent rows; the runner checks them before writing anything and fails the run with a
    `ConservationError` when one does not hold. Each is recorded in ops.job_runs.

    Attributes:
        name: what is conserved, in words (shown when the check fails).
        inputs: counts by name whose sum is the rows in.
        outputs: counts by name whose sum is the rows out.

    Example:
        >>> Conservation(
        ...     "cleanse rossmann_sales: bronze rows = silver + quarantined + duplicates",
        ...     {"bronze_rows": 1017209},
        ...     {"silver_rows": 1017190, "quarantined": 12, "duplicates_removed": 7},
        ... ).holds
        True
    """

    name: str
    inputs: dict[str, int]
    outputs: dict[str, int]

    @property
    def holds(self) -> bool:
        """Whether the inputs' counts sum to the outputs' counts."""
        return sum(self.inputs.values()) == sum(self.outputs.values())

    def as_dict(self) -> dict[str, Any]:
        """The check as ops.job_runs records it (JSON): name, inputs, outputs, holds."""
        return {
            "name": self.name,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "holds": self.holds,
        }


@dataclass
class JobResult:
    """What a job hands back to the runner.

    Attributes:
        outputs: the writes to make, once every output passed its checks.
        conservation: row-count checks that must hold before anything is written.
        rows_read: rows read by table, recorded in ops.job_runs (and what an expectation
            suite may compare an output with).
        after_publish: called with the write results after every output was written (e.g.
            to publish a model version).
        cached: frames the job persisted; the runner unpersists them when the run ends.

    Example:
        The end of the job in the module docstring:

        >>> result = JobResult(
        ...     outputs=[Output("gold.store_type_daily_sales", daily)],
        ...     rows_read={"silver.store_daily_sales": sales.count()},
        ... )
    """

    outputs: list[Output] = field(default_factory=list)
    conservation: list[Conservation] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    # Called after every output was written (e.g. publish a model version).
    after_publish: Callable[[dict[str, WriteResult]], None] | None = None
    # Intermediate frames the job cached; the runner unpersists them when the run ends.
    cached: list[DataFrame] = field(default_factory=list)


@dataclass(frozen=True)
class Components:
    """What jobs look up by name: table contracts, landing formats, cleansers.

    `retail_lake.registry.COMPONENTS` lists them all; the runner imports none of them (it
    knows only its own ops contracts), so nothing below the registry imports a job.

    Example:
        >>> from retail_lake.registry import COMPONENTS
        >>> COMPONENTS.contracts["silver.stores"].keys
        ('store',)
        >>> sorted(COMPONENTS.formats)
        ['csv', 'idx']
    """

    contracts: Registry
    # format name -> reader `(ctx, spec, landing, ingested_at, cached)` (see `ingest.run`)
    formats: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    # `retail_lake.cleansing.Cleanser`s, in the order `cleanse` runs them
    cleansers: tuple[Any, ...] = ()


@dataclass
class JobContext:
    """What a running job may use.

    The runner builds it for each run and passes it to the job function; a job reads its
    inputs through `read` (which records the Delta version read), looks up contracts in
    `registry` and settings in `cfg`.

    Attributes:
        spark: the session.
        cfg: the run's configuration.
        lake: the lake under `cfg.root`.
        job: the job's name, as recorded in ops.job_runs.
        run_id: this run's id (on every row and commit it writes).
        run_date: the logical run date / as-of snapshot (`--run-date`), if given.
        parent_run_id: the pipeline run this job runs under, if any.
        components: the contracts, landing formats and cleansers jobs look up.
        versions_read: table -> the Delta version `read` read.
        units: unit -> its state this run (see `unchanged`).
        details: what the run did beyond its outputs, recorded in ops.job_runs.details.

    Example:
        >>> ctx.job, ctx.run_id
        ('cleanse', 'cleanse-20240105T101500-1a2b3c4d')
        >>> ctx.registry["silver.stores"].keys
        ('store',)
        >>> ctx.cfg.get("runner.skip_unchanged")
        True
    """

    spark: SparkSession
    cfg: Config
    lake: Lake
    job: str
    run_id: str
    run_date: date | None
    parent_run_id: str | None = None
    components: Components = field(default_factory=lambda: Components(OPS_CONTRACTS))
    versions_read: dict[str, int] = field(default_factory=dict)
    # unit -> (status, fingerprint, output versions of an unchanged unit): see `unchanged`.
    units: dict[str, tuple[str, str, dict[str, int]]] = field(default_factory=dict)
    _last_units: dict[str, Any] | None = None
    # What the job's own functions share during this run (e.g. ingest's file ledger rows).
    state: dict[str, Any] = field(default_factory=dict)
    # What the run did beyond its outputs (e.g. maintain's files and bytes per table), kept
    # as JSON in ops.job_runs.details whether the run succeeds or fails.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        """The table contracts (`components.contracts`)."""
        return self.components.contracts

    def read(self, table: str, version: int | None = None) -> DataFrame:
        """Reads `table` at `version` (default: latest) and records the version read.

        The version is pinned when the read is made, so a later commit by another writer
        does not change what the job sees; ops.job_runs records it in `versions_read`.

        Raises:
            ContractError: the table does not exist yet.

        Example:
            >>> sales = ctx.read("silver.store_daily_sales")
            >>> ctx.versions_read
            {'silver.store_daily_sales': 4}
        """
        pinned = self.lake.version(table) if version is None else version
        self.versions_read[table] = pinned
        return self.lake.read(table, pinned)

    def data_versions_read(self) -> dict[str, int]:
        """`versions_read` with each version taken back to the last that changed the
        table's rows (`Lake.data_version`): what a training fingerprint hashes, so a model is
        not trained again because `maintain` compacted its inputs."""
        return {t: self.lake.data_version(t, v) for t, v in sorted(self.versions_read.items())}

    def unchanged(
        self,
        unit: str,
        inputs: Iterable[str],
        extra: Mapping[str, Any] | None = None,
        dated: bool = True,
    ) -> bool:
        """Whether `unit` (one source of cleanse, one group of feature tables) can be skipped.

        True when `runner.skip_unchanged` is on and, since the unit's last successful run,
        nothing that shapes its rows changed: the versions of its `inputs`, the configuration
        (all but `NOT_SHAPING`) and any `extra` settings, the run date (when `dated`) and the
        code, and no one wrote to the tables it produced (their versions are the ones recorded
        then).
        Either way the unit is recorded; when the run succeeds the runner writes its state to
        ops.unit_states ('built' with the versions its outputs (`Output.unit`) have after the
        writes, or 'unchanged').

        Args:
            unit: the unit's name, unique within the job.
            inputs: the tables the unit reads.
            extra: further settings that shape its rows (a model version, a key id).
            dated: whether the run date shapes its rows (False: a run for another day
                skips the unit too; a scheduler's daily runs rebuild only what is dated).

        Example:
            >>> def run(ctx: JobContext) -> JobResult:
            ...     if ctx.unchanged("forecast", ["gold.sales_windows"], {"model_version": "3"}):
            ...         return JobResult()  # recorded as 'unchanged' in ops.unit_states
            ...     forecasts = score(ctx.read("gold.sales_windows"))
            ...     return JobResult([Output("gold.sales_forecasts", forecasts, unit="forecast")])
        """
        shaping = {k: v for k, v in self.cfg.data.items() if k not in NOT_SHAPING}
        blob = json.dumps(
            {
                "job": self.job,
                "unit": unit,
                "inputs": {t: self._version_or_none(t) for t in sorted(set(inputs))},
                "settings": shaping,
                "extra": dict(extra or {}),
                "run_date": self.run_date if dated else None,
                "code": code_fingerprint(),
            },
            sort_keys=True,
            default=str,
        )
        fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:20]
        last = self._last_unit_states().get(unit)
        skip = (
            bool(self.cfg.get("runner.skip_unchanged"))
            and last is not None
            and last["fingerprint"] == fingerprint
            and all(self._version_or_none(t) == v for t, v in last["output_versions"].items())
        )
        if skip:
            log.info(
                "[%s] %s: inputs, settings and code unchanged since run %s; skipped (set "
                "runner.skip_unchanged=false to rebuild)",
                self.run_id,
                unit,
                last["run_id"],
            )
            self.units[unit] = ("unchanged", fingerprint, dict(last["output_versions"]))
        else:
            self.units[unit] = ("built", fingerprint, {})
        return skip

    def _version_or_none(self, table: str) -> int | None:
        """The table's data version (`Lake.data_version`: compactions by `maintain` do not
        count), None when it does not exist yet."""
        return self.lake.data_version(table) if self.lake.exists(table) else None

    def _last_unit_states(self) -> dict[str, Any]:
        """unit -> the latest recorded state of this job's units (read once per run)."""
        if self._last_units is None:
            self._last_units = {}
            if self.lake.exists(UNIT_STATES):
                rows = (
                    self.lake.read(UNIT_STATES)
                    .where(F.col("job") == self.job)
                    .orderBy(F.col("recorded_at"))
                    .collect()
                )
                self._last_units = {r["unit"]: r.asDict() for r in rows}
        return self._last_units


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the package's code and bundled settings (suites, conf), not its demo data."""
    digest = hashlib.sha256()

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            name = f"{prefix}/{child.name}"
            if child.is_dir():
                if child.name not in ("demo_data", "__pycache__"):
                    walk(child, name)
            elif child.name.endswith((".py", ".yaml", ".yml", ".json")):
                digest.update(name.encode())
                digest.update(child.read_bytes())

    walk(resources.files("retail_lake"), "retail_lake")
    return digest.hexdigest()[:20]


def new_run_id(job: str) -> str:
    """A new run id: the job, the UTC time and a random suffix.

    Example:
        >>> new_run_id("cleanse")
        'cleanse-20240105T101500-1a2b3c4d'
    """
    return f"{job}-{datetime.utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- ops tables
# Ops tables whose columns were checked against their contract in this process.
_CURRENT_SCHEMA: set[str] = set()


def _add_missing_columns(lake: Lake, contract: TableContract, driver: Any | None) -> bool:
    """Adds the contract's columns an ops table made by an older release lacks (nullable,
    at the end, with their comments); whether it added any."""
    location = lake.location(contract.name)
    if driver is not None:
        present = {f.name for f in driver.schema().fields}
    else:
        present = set(lake.spark.read.format("delta").load(location).columns)
    missing = [c for c in contract.columns if c.name not in present]
    if not missing:
        return False
    lake.add_columns(contract, missing)
    return True


def append_ops_rows(lake: Lake, table: str, rows: list[dict[str, Any]], run_id: str) -> None:
    """Appends a few rows to an ops table (`ops.OPS`) as the run journal is written: by the
    driver with delta-rs on a local lake, else by Spark; each commit tagged with `run_id`."""
    _ops_write(lake, table, rows, run_id)


def _ops_write(
    lake: Lake,
    table: str,
    rows: list[dict[str, Any]],
    run_id: str,
    replace_run: bool = False,
    attempts: int = 8,
) -> None:
    """Appends ops records, retrying Delta write conflicts.

    `replace_run`: the rows replace the table's rows of `run_id` (the outcome of a run
    replacing its 'running' row).

    On a local lake the driver commits the rows itself with delta-rs (no Spark job: about
    15 ms a commit against 0.4-2 s); otherwise (a remote root, or an ops table created with
    column mapping by an older release) Spark writes them, the overwrite restricted to the
    run id reading only the file its 'running' row went to (Delta skips the others by their
    statistics).
    """
    if not rows:
        return
    if replace_run and not re.fullmatch(r"[\w.:-]+", run_id):
        raise JobError(f"unexpected characters in run id {run_id!r}")
    contract = OPS_CONTRACTS[table]
    lake.ensure(contract)
    location = lake.location(table)
    schema = contract.spark_schema()
    driver = driver_table(location)
    if location not in _CURRENT_SCHEMA and _add_missing_columns(lake, contract, driver):
        driver = driver_table(location)
    _CURRENT_SCHEMA.add(location)
    for attempt in range(1, attempts + 1):
        try:
            if driver is not None:
                append_rows(driver, arrow_rows(rows, schema), run_id, replace_run)
            elif replace_run:
                (
                    local_frame(lake.spark, rows, schema)
                    .write.format("delta")
                    .mode("overwrite")
                    .option("replaceWhere", f"run_id = '{run_id}'")
                    .option("userMetadata", run_id)
                    .save(location)
                )
            else:
                writer = local_frame(lake.spark, rows, schema).write.format("delta")
                writer.mode("append").option("userMetadata", run_id).save(location)
            return
        except Exception as exc:  # Delta's (py4j) and delta-rs's conflict exceptions
            text = type(exc).__name__ + str(exc)[:500]
            if not ("Concurrent" in text or "CommitFailed" in text) or attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
            log.debug("retrying %s write after a concurrent commit (%d)", table, attempt)
            if driver is not None:
                driver = driver_table(location)


def _run_row(
    ctx: JobContext, status: str, started: datetime, params: dict[str, str], **extra: Any
) -> dict[str, Any]:
    row = {c: None for c in OPS_CONTRACTS[JOB_RUNS].column_names}
    row.update(
        {
            "run_id": ctx.run_id,
            "job": ctx.job,
            "parent_run_id": ctx.parent_run_id,
            "status": status,
            "profile": ctx.cfg.profile,
            "run_date": ctx.run_date,
            "started_at": started,
            "parameters": params,
            "host": socket.gethostname(),
            "spark_app_id": ctx.spark.sparkContext.applicationId,
        }
    )
    row.update(extra)
    return row


def _claim_lease(lake: Lake, running: dict[str, Any], lease_s: float) -> None:
    """Marks the job's runs whose lease expired as abandoned; fails when another live run
    of the job holds the lease (`leases.decide`)."""
    now = utc_now()
    decision = decide(running, running_runs(lake, running["job"]), now, lease_s)
    for dead in decision.abandoned:
        log.warning(
            "%s: run %s left no heartbeat since %s: recorded as abandoned",
            running["job"],
            dead["run_id"],
            last_sign(dead),
        )
        _ops_write(lake, JOB_RUNS, [abandoned_row(dead, now, lease_s)], dead["run_id"], True)
    if decision.holder is not None:
        raise RunConflictError(conflict_message(running["job"], decision.holder))


def expire_leases(lake: Lake, lease_s: float) -> list[str]:
    """Records every run of the lake whose lease expired as abandoned; their run ids."""
    now = utc_now()
    dead = [r for r in running_runs(lake) if expired(r, now, lease_s)]
    for row in dead:
        _ops_write(lake, JOB_RUNS, [abandoned_row(row, now, lease_s)], row["run_id"], True)
    return [r["run_id"] for r in dead]


# ----------------------------------------------------------------------------- running
def run_job(
    spark: SparkSession,
    cfg: Config,
    job: str,
    fn: Callable[[JobContext], JobResult],
    run_date: date | None = None,
    params: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    *,
    components: Components,
) -> tuple[JobContext, dict[str, WriteResult]]:
    """Runs one job under the runner's rules; returns its context and write results.

    Records the run in ops.job_runs ('running', then 'succeeded' or 'failed'), calls `fn`,
    audits its outputs (contract, expectation suite, row conservation) and only when all
    pass writes them; the quality results go to ops.quality_results.

    Args:
        spark: a session with Delta configured.
        cfg: the configuration (`cfg.root` is the lake).
        job: the job's name, as recorded in ops.job_runs.
        fn: the job function, `run(ctx: JobContext) -> JobResult`.
        run_date: the logical run date / as-of snapshot of time-dependent jobs.
        params: parameters recorded with the run (secrets redacted).
        parent_run_id: the pipeline run this job runs under, if any.
        components: the contracts, formats and cleansers the job may look up (callers pass
            `retail_lake.registry.COMPONENTS`, or use `retail_lake.registry.run_job`, which
            adds the bronze contracts of sources declared in the config alone).

    Returns:
        The run's `JobContext` (run id, versions read) and a `WriteResult` per table written.

    Raises:
        ConservationError: a conservation check failed; nothing was written.
        QualityGateError: a critical expectation failed; nothing was written.
        Exception: whatever the job raised, after recording the failure in ops.job_runs.

    Example:
        >>> from retail_lake.registry import COMPONENTS, JOBS
        >>> from retail_lake.runner import run_job
        >>> ctx, writes = run_job(spark, cfg, "cleanse", JOBS["cleanse"], components=COMPONENTS)
        >>> ctx.run_id, {table: w.rows_changed for table, w in writes.items()}
    """
    lake = Lake(spark, cfg.root)
    ctx = JobContext(spark, cfg, lake, job, new_run_id(job), run_date, parent_run_id, components)
    # Recorded as given, less secrets (a --set Spark credential, a URI's password).
    params = redact({k: str(v) for k, v in (params or {}).items()})
    started = utc_now()
    clock = time.monotonic()
    log.info(
        "[%s] %s started (profile %s, root %s)", ctx.run_id, job, cfg.profile, redact_text(cfg.root)
    )
    # A new run id: appending the 'running' row is enough (and cheaper than a MERGE).
    running = _run_row(ctx, RUNNING, started, params, heartbeat_at=started)
    _ops_write(lake, JOB_RUNS, [running], ctx.run_id)
    lease_s = float(cfg.get("runner.lease_seconds"))

    def beat(now: datetime) -> None:
        _ops_write(lake, JOB_RUNS, [{**running, "heartbeat_at": now}], ctx.run_id, True)

    quality: list[ExpectationResult] = []
    result: JobResult | None = None
    persisted: list[DataFrame] = []
    try:
        _claim_lease(lake, running, lease_s)
        pending = rotation_pending(cfg)
        if pending and job != ROTATE_KEY:  # its tables hold both keys' tokens
            raise JobError(
                f"a rotation of the pseudonymisation key (run {pending['run_id']}) has not "
                "finished: run `retail-lake privacy rotate-key` again to finish it first"
            )
        with Heartbeat(beat, lease_s / 4, utc_now):
            result = fn(ctx)
            quality = _audit(ctx, result, persisted)
            writes = _publish(ctx, result)
            if result.after_publish:
                result.after_publish(writes)
            _record_units(ctx, result)
    except Exception as exc:
        if not quality and hasattr(exc, "results"):
            quality = exc.results  # QualityGateError carries them
        _record_quality(lake, ctx.run_id, quality)
        _ops_write(
            lake,
            JOB_RUNS,
            [
                _run_row(
                    ctx,
                    "failed",
                    started,
                    params,
                    ended_at=utc_now(),
                    duration_s=round(time.monotonic() - clock, 3),
                    rows_read=(result.rows_read if result else None) or None,
                    versions_read=ctx.versions_read or None,
                    conservation=_conservation_json(result),
                    error=redact_text(f"{type(exc).__name__}: {exc}")[:4000],
                    details=_details_json(ctx),
                    heartbeat_at=utc_now(),
                )
            ],
            ctx.run_id,
            replace_run=True,
        )
        log.error(
            "[%s] %s failed after %.1fs: %s",
            ctx.run_id,
            job,
            time.monotonic() - clock,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        raise
    finally:
        for df in [*persisted, *(result.cached if result else [])]:
            df.unpersist()
    _record_quality(lake, ctx.run_id, quality)
    _ops_write(
        lake,
        JOB_RUNS,
        [
            _run_row(
                ctx,
                "succeeded",
                started,
                params,
                ended_at=utc_now(),
                duration_s=round(time.monotonic() - clock, 3),
                rows_read=result.rows_read or None,
                rows_written={t: w.rows_changed for t, w in writes.items()} or None,
                versions_read=ctx.versions_read or None,
                versions_written={t: w.version for t, w in writes.items() if w.version is not None}
                or None,
                conservation=_conservation_json(result),
                details=_details_json(ctx),
                heartbeat_at=utc_now(),
            )
        ],
        ctx.run_id,
        replace_run=True,
    )
    log.info("[%s] %s succeeded in %.1fs", ctx.run_id, job, time.monotonic() - clock)
    return ctx, writes


def _details_json(ctx: JobContext) -> str | None:
    return json.dumps(ctx.details, sort_keys=True, default=str) if ctx.details else None


def _conservation_json(result: JobResult | None) -> str | None:
    if not result or not result.conservation:
        return None
    return json.dumps([c.as_dict() for c in result.conservation], sort_keys=True)


def _audit(
    ctx: JobContext, result: JobResult, persisted: list[DataFrame]
) -> list[ExpectationResult]:
    """Checks conservation and every output's suite before anything is written.

    Each output is persisted (validated, then written) and added to `persisted`.
    """
    broken = [c for c in result.conservation if not c.holds]
    if broken:
        lines = [f"  - {c.name}: inputs {c.inputs} != outputs {c.outputs}" for c in broken]
        raise ConservationError("row conservation failed; nothing was written\n" + "\n".join(lines))
    results: list[ExpectationResult] = []
    # Each validation, passed or failed, also renders into <root>/data_docs (never raises).
    docs = DataDocs.for_run(ctx.cfg, ctx.run_id) if result.outputs else None
    for out in result.outputs:
        contract = ctx.registry[out.table]
        # The contract check (columns, types) runs here, before any write.
        rows = with_metadata(out.df, contract, ctx.run_id, out.extra_columns)
        out.df.persist(StorageLevel.MEMORY_AND_DISK)
        persisted.append(out.df)
        specs = [spec.resolved(result.rows_read) for spec in load_suite(contract)]
        log.info("[%s] validating %s against %d expectations", ctx.run_id, out.table, len(specs))
        results.extend(validate(rows, contract, specs, docs, engine=ctx.cfg.get("quality.engine")))
    gate(results)
    return results


def _publish(ctx: JobContext, result: JobResult) -> dict[str, WriteResult]:
    writes: dict[str, WriteResult] = {}
    for out in result.outputs:
        contract = ctx.registry[out.table]
        writes[out.table] = ctx.lake.write(
            out.df,
            contract,
            ctx.run_id,
            out.mode,
            out.replace_where,
            out.extra_columns,
            retire=out.retire,
            verify=bool(ctx.cfg.get("runner.verify_content")),
        )
    return writes


def _record_units(ctx: JobContext, result: JobResult) -> None:
    """ops.unit_states: each unit the run considered, with its outputs' versions now."""
    if not ctx.units:
        return
    produced: dict[str, set[str]] = {}
    for out in result.outputs:
        if out.unit:
            if out.unit not in ctx.units:
                raise JobError(f"output {out.table} names unit {out.unit!r}, never checked")
            produced.setdefault(out.unit, set()).add(out.table)
    at = utc_now()
    rows = []
    for unit, (status, fingerprint, kept) in sorted(ctx.units.items()):
        tables = kept if status == "unchanged" else produced.get(unit, set())
        rows.append(
            {
                "run_id": ctx.run_id,
                "job": ctx.job,
                "unit": unit,
                "status": status,
                "fingerprint": fingerprint,
                "output_versions": {t: ctx.lake.data_version(t) for t in sorted(tables)},
                "recorded_at": at,
            }
        )
    _ops_write(ctx.lake, UNIT_STATES, rows, ctx.run_id)


def _record_quality(lake: Lake, run_id: str, results: list[ExpectationResult]) -> None:
    at = utc_now()
    _ops_write(lake, QUALITY_RESULTS, [r.as_row(run_id, at) for r in results], run_id)


def job_runs(spark: SparkSession, cfg: Config) -> DataFrame:
    """ops.job_runs as a DataFrame (empty schema when no run was recorded yet).

    One row per run, oldest first, with its status, parameters, rows and versions read and
    written, conservation checks and error.

    Example:
        >>> from retail_lake.runner import job_runs
        >>> runs = job_runs(spark, cfg).where("status = 'failed'")
        >>> runs.select("run_id", "job", "error").show(truncate=False)
    """
    lake = Lake(spark, cfg.root)
    if not lake.exists(JOB_RUNS):
        return local_frame(spark, [], OPS_CONTRACTS[JOB_RUNS].spark_schema())
    return lake.read(JOB_RUNS).orderBy(F.col("started_at"))
