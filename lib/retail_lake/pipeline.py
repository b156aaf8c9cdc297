"""Running jobs and the pipeline (the DAG in `pipeline.steps`), with resume.

`run_single` runs one job in a session; `run_pipeline` runs the steps in order under one
`pipeline` run, each step a run of its own whose `parent_run_id` is the pipeline's. With
`resume`, steps that succeeded in the latest pipeline run are skipped when that run failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date

from pyspark.sql import functions as F

from retail_lake.config import Config
from retail_lake.lake import Lake
from retail_lake.ops import JOB_RUNS
from retail_lake.registry import JOBS, TIME_DEPENDENT, UnknownJobError, resolve, run_job
from retail_lake.runner import JobContext, JobResult
from retail_lake.session import build_session

log = logging.getLogger(__name__)


def _params(job: str, run_date: date | None, overrides: Sequence[str]) -> dict[str, str]:
    """The run's parameters for ops.job_runs: every --set item and the run date of a
    time-dependent job (`run_job` redacts secrets before recording them).

    >>> _params("ingest", None, ["forecast.epochs=3"])
    {'set.forecast.epochs': '3'}
    """
    params = {f"set.{k.strip()}": v for k, v in (o.split("=", 1) for o in overrides if "=" in o)}
    if run_date and job in TIME_DEPENDENT:
        params["run_date"] = run_date.isoformat()
    return params


def run_single(
    cfg: Config,
    job: str,
    run_date: date | None = None,
    overrides: Sequence[str] = (),
    parent_run_id: str | None = None,
    spark=None,
) -> JobContext:
    """Runs one job; returns its context (run id, versions read)."""
    fn = resolve(job)
    # Jobs read and write by path (a write registers its table): no table is registered at
    # the start, which would read every table's log.
    spark = spark or build_session(cfg, f"retail-lake {job}", register=False)
    ctx, _ = run_job(
        spark, cfg, job, fn, run_date, _params(job, run_date, overrides), parent_run_id
    )
    return ctx


def steps_to_skip(spark, cfg: Config, steps: Sequence[str]) -> set[str]:
    """Steps that succeeded in the latest pipeline run, if that run failed."""
    lake = Lake(spark, cfg.root)
    if not lake.exists(JOB_RUNS):
        return set()
    runs = lake.read(JOB_RUNS)
    last = (
        runs.where(F.col("job") == "pipeline")
        .orderBy(F.col("started_at").desc())
        .select("run_id", "status")
        .first()
    )
    if last is None or last["status"] == "succeeded":
        return set()
    done = (
        runs.where((F.col("parent_run_id") == last["run_id"]) & (F.col("status") == "succeeded"))
        .select("job")
        .collect()
    )
    skip = {r["job"] for r in done} & set(steps)
    log.info(
        "resuming pipeline %s (%s): skipping %s",
        last["run_id"],
        last["status"],
        ", ".join(s for s in steps if s in skip) or "nothing",
    )
    return skip


def run_pipeline(
    cfg: Config,
    steps: Sequence[str] | None = None,
    resume: bool = False,
    run_date: date | None = None,
    overrides: Sequence[str] = (),
) -> list[str]:
    """Runs the pipeline; returns the steps that ran. Stops at the first failing step."""
    steps = list(steps or cfg.get("pipeline.steps"))
    for s in steps:
        if s not in JOBS:
            raise UnknownJobError(s)
    spark = build_session(cfg, "retail-lake pipeline", register=False)
    skip = steps_to_skip(spark, cfg, steps) if resume else set()
    ran: list[str] = []

    def pipeline(ctx: JobContext) -> JobResult:
        for i, step in enumerate(steps, 1):
            if step in skip:
                log.info("pipeline step %d/%d %s: skipped (succeeded before)", i, len(steps), step)
                continue
            log.info("pipeline step %d/%d: %s", i, len(steps), step)
            run_single(cfg, step, run_date, overrides, parent_run_id=ctx.run_id, spark=spark)
            ran.append(step)
        return JobResult()

    params = {
        "steps": ",".join(steps),
        "resume": str(resume).lower(),
        **_params("pipeline", run_date, overrides),
    }
    run_job(spark, cfg, "pipeline", pipeline, run_date, params)
    return ran
