"""Run leases: a run's heartbeat, a second run of the same job refused, a killed run abandoned.

The two-process test runs a job in a process of its own that holds its lease until this
process has tried to run the same job, then kills it (SIGKILL: no outcome recorded) and
checks that the next run marks it abandoned and goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake.config import ConfigError, load_config
from retail_lake.leases import RunConflictError, decide
from retail_lake.registry import run_job
from retail_lake.runner import JobResult, job_runs

REPO = Path(__file__).resolve().parents[1]
T = datetime(2024, 1, 5, 10, 0, tzinfo=UTC)


def _row(run_id: str, started: datetime, heartbeat: datetime | None) -> dict:
    return {"run_id": run_id, "started_at": started, "heartbeat_at": heartbeat}


def test_a_run_whose_heartbeat_is_older_than_the_lease_is_dead():
    me = _row("hold-3", T, T)
    stale = _row("hold-1", T - timedelta(minutes=10), T - timedelta(seconds=121))
    fresh = _row("hold-2", T - timedelta(minutes=10), T - timedelta(seconds=119))
    no_heartbeat = _row("hold-0", T - timedelta(minutes=5), None)  # an older release's row
    decision = decide(me, [stale, fresh, no_heartbeat, me], T, lease_s=120)
    assert [r["run_id"] for r in decision.abandoned] == ["hold-1", "hold-0"]
    assert decision.holder is fresh  # alive and started first: it goes on, not this run


def test_of_two_runs_started_at_once_exactly_one_goes_on():
    a, b = _row("hold-a", T, T), _row("hold-b", T, T)
    assert decide(a, [a, b], T, 120).holder is None  # a: the smaller run id
    assert decide(b, [a, b], T, 120).holder is a
    assert decide(a, [], T, 120) == decide(a, [a], T, 120)  # alone: it holds the lease


def test_the_lease_must_be_at_least_a_second(root):
    with pytest.raises(ConfigError, match="runner.lease_seconds must be at least 1"):
        load_config("test", [f"paths.root={root}", "runner.lease_seconds=0"])


HOLDER = """
import sys, time
from pathlib import Path
from retail_lake.config import load_config
from retail_lake.registry import run_job
from retail_lake.runner import JobResult
from retail_lake.session import build_session

root, folder = sys.argv[1], Path(sys.argv[2])
cfg = load_config("test", [f"paths.root={root}", "runner.lease_seconds=4"])
spark = build_session(cfg, "lease holder")

def hold(ctx):
    (folder / "run_id").write_text(ctx.run_id)
    time.sleep(600)  # killed long before
    return JobResult()

run_job(spark, cfg, "hold", hold)
"""


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_killed_run_is_abandoned(spark, root, tmp_path):
    cfg = load_config("test", [f"paths.root={root}", "runner.lease_seconds=4"])
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    holder = subprocess.Popen(
        [sys.executable, str(script), str(root), str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def row(run_id):
        return job_runs(spark, cfg).where(F.col("run_id") == run_id).first()

    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "run_id").exists():
            assert holder.poll() is None, holder.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the holder never started its job"
            time.sleep(0.5)
        held = (tmp_path / "run_id").read_text()

        # Its heartbeat is renewed while it runs (every lease / 4 = 1 s).
        first = row(held)["heartbeat_at"]
        time.sleep(3)
        assert row(held)["heartbeat_at"] > first

        # The same job in this process: refused at once, naming the run that holds it,
        # and recorded as failed; nothing of the job ran.
        ran = []
        with pytest.raises(RunConflictError, match=f"another run of hold is running.*{held}"):
            run_job(spark, cfg, "hold", lambda ctx: ran.append(ctx) or JobResult())
        assert ran == []
        refused = (
            job_runs(spark, cfg)
            .where((F.col("job") == "hold") & (F.col("run_id") != held))
            .collect()
        )
        assert [(r["status"], held in r["error"]) for r in refused] == [("failed", True)]
        # Another job is not held up by it.
        other, _ = run_job(spark, cfg, "other", lambda ctx: JobResult())
        assert row(other.run_id)["status"] == "succeeded"
        assert row(held)["status"] == "running"
    finally:
        holder.kill()  # SIGKILL: the holder records nothing
        holder.communicate(timeout=60)

    # Once its lease has expired the next run of the job marks it abandoned and goes on.
    time.sleep(4 + 1)
    after, _ = run_job(spark, cfg, "hold", lambda ctx: JobResult())
    killed = row(held)
    assert killed["status"] == "abandoned"
    assert killed["error"].startswith("abandoned: no heartbeat since")
    assert killed["ended_at"] is not None
    assert row(after.run_id)["status"] == "succeeded"


def test_a_journal_an_older_release_made_gains_the_heartbeat_column(spark, cfg):
    """ops.job_runs without `heartbeat_at` (made before leases): the first run adds the
    column (nullable, with its comment); the old rows keep null there."""
    from retail_lake.contracts import TableContract
    from retail_lake.driver_writes import create_table
    from retail_lake.lake import Lake
    from retail_lake.ops import OPS

    (contract,) = [c for c in OPS if c.name == "ops.job_runs"]
    old = TableContract(
        name=contract.name,
        description=contract.description,
        columns=tuple(c for c in contract.columns if c.name != "heartbeat_at"),
        keys=contract.keys,
        write_mode=contract.write_mode,
        source=contract.source,
    )
    lake = Lake(spark, cfg.root)
    location = lake.location(contract.name)
    if not create_table(location, old.spark_schema().json(), old.delta_properties, "old"):
        pytest.skip("deltalake is not installed: the journal is made by Spark")
    ctx, _ = run_job(spark, cfg, "load", lambda ctx: JobResult())
    run = job_runs(spark, cfg).where(F.col("run_id") == ctx.run_id).first()
    assert run["status"] == "succeeded" and run["heartbeat_at"] >= run["started_at"]
    comments = {
        r["col_name"]: r["comment"]
        for r in spark.sql(f"DESCRIBE TABLE delta.`{location}`").collect()
    }
    assert comments["heartbeat_at"].startswith("last sign of life of the run")


def test_runs_lists_runs_and_records_a_dead_one_as_abandoned(spark, root, run_cli):
    """A 'running' row whose process is gone (its heartbeat ten minutes old, as a killed
    run leaves it): `retail-lake runs` records it as abandoned and lists it."""
    from retail_lake.lake import Lake
    from retail_lake.ops import JOB_RUNS, OPS
    from retail_lake.runner import _ops_write

    (contract,) = [c for c in OPS if c.name == JOB_RUNS]
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    dead = {c: None for c in contract.column_names}
    dead.update(
        run_id="cleanse-dead",
        job="cleanse",
        status="running",
        profile="test",
        started_at=long_ago - timedelta(minutes=1),
        heartbeat_at=long_ago,
    )
    _ops_write(Lake(spark, str(root)), JOB_RUNS, [dead], "cleanse-dead")
    code, out, err = run_cli("runs", "--profile", "test", "--root", str(root))
    assert code == 0, err
    assert "cleanse-dead: its lease expired: recorded as abandoned" in err
    (line,) = [ln for ln in out.splitlines() if "cleanse-dead" in ln]
    assert "abandoned" in line and "no heartbeat since" in line
    # Recorded once: a second look finds nothing left to expire.
    code, out, err = run_cli("runs", "--profile", "test", "--root", str(root))
    assert code == 0 and "recorded as abandoned" not in err
