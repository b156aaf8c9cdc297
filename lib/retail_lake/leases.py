"""Run leases: a run proves it is alive, a dead one is found, two runs of a job never overlap.

A run's 'running' row in `ops.job_runs` carries `heartbeat_at`, renewed every quarter of
`runner.lease_seconds` by a thread of the driver (`Heartbeat`). When a run starts it reads
the other 'running' rows of its job on the same lake (`running_runs`) and `decide`s:

- a row whose heartbeat is older than the lease belongs to a process that ended without
  recording an outcome (killed, lost its host): it is marked `abandoned`;
- of the live runs, the one that started first (then the smaller run id) holds the lease;
  a later one fails at once with `RunConflictError` naming it.

Every run appends its own 'running' row before it reads the others, so of two runs starting
at the same moment each sees the other and exactly one goes on.

Example:
    $ retail-lake runs            # lists recent runs; marks runs whose lease expired
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pyspark.sql import functions as F

from retail_lake.driver_writes import driver_table
from retail_lake.lake import Lake
from retail_lake.ops import JOB_RUNS

log = logging.getLogger(__name__)

RUNNING = "running"
ABANDONED = "abandoned"


class RunConflictError(RuntimeError):
    """Another live run of the same job holds the lake's lease for it."""


@dataclass(frozen=True)
class Decision:
    """What a starting run does about the other 'running' rows of its job."""

    abandoned: tuple[Mapping[str, Any], ...]  # rows whose lease expired
    holder: Mapping[str, Any] | None  # the live run that goes on, when it is not this one


def last_sign(row: Mapping[str, Any]) -> datetime:
    """A run's last sign of life: its heartbeat, or its start for rows without one."""
    return row.get("heartbeat_at") or row["started_at"]


def decide(
    own: Mapping[str, Any], others: Iterable[Mapping[str, Any]], now: datetime, lease_s: float
) -> Decision:
    """Which of `others` (running rows of the same job) are dead, and who holds the lease.

    Example:
        >>> t = datetime(2024, 1, 5, 10, 0, tzinfo=UTC)
        >>> me = {"run_id": "b", "started_at": t, "heartbeat_at": t}
        >>> old = {"run_id": "a", "started_at": t - timedelta(hours=1), "heartbeat_at": None}
        >>> decide(me, [old], now=t, lease_s=120).abandoned[0]["run_id"]
        'a'
    """
    others = [r for r in others if r["run_id"] != own["run_id"]]
    dead = tuple(r for r in others if expired(r, now, lease_s))
    live = [r for r in others if not expired(r, now, lease_s)]
    first = min([own, *live], key=lambda r: (r["started_at"], r["run_id"]))
    return Decision(dead, None if first is own else first)


def expired(row: Mapping[str, Any], now: datetime, lease_s: float) -> bool:
    """Whether a 'running' row's lease ran out: no sign of life for `lease_s` seconds."""
    return last_sign(row) < now - timedelta(seconds=lease_s)


def running_runs(lake: Lake, job: str | None = None) -> list[dict[str, Any]]:
    """The 'running' rows of `ops.job_runs` (of `job`, or of every job), as dicts."""
    where = {"status": RUNNING} if job is None else {"status": RUNNING, "job": job}
    return ops_rows(lake, JOB_RUNS, where)


def ops_rows(
    lake: Lake, table: str, where: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The rows of an ops table whose columns equal `where`'s values, as dicts.

    Read by the driver with delta-rs on a local lake (no Spark job), else by Spark.
    """
    if not lake.exists(table):
        return []
    where = where or {}
    found = driver_table(lake.location(table))
    if found is not None:
        import pyarrow.compute as pc

        wanted = None
        for column, value in where.items():
            test = pc.field(column) == value
            wanted = test if wanted is None else wanted & test
        rows = found.to_pyarrow_dataset().to_table(filter=wanted).to_pylist()
        return [_python(r) for r in rows]
    frame = lake.read(table)
    for column, value in where.items():
        frame = frame.where(F.col(column) == value)
    return [_python(r.asDict(recursive=True)) for r in frame.collect()]


def _python(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with maps as dicts (Arrow gives lists of pairs) and timestamps as aware UTC
    datetimes (Spark gives naive local ones, delta-rs aware UTC ones)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
            value = dict(value)
        if isinstance(value, datetime):
            value = value.astimezone(UTC)
        out[key] = value
    return out


def abandoned_row(row: Mapping[str, Any], now: datetime, lease_s: float) -> dict[str, Any]:
    """`row` (a dead run's 'running' row) recorded as abandoned."""
    since = last_sign(row)
    return {
        **row,
        "status": ABANDONED,
        "ended_at": now,
        "duration_s": round((since - row["started_at"]).total_seconds(), 3),
        "error": f"abandoned: no heartbeat since {since:%Y-%m-%d %H:%M:%S} UTC (lease "
        f"{lease_s:g} s): its process ended without recording an outcome (killed, or its host "
        "was lost)",
    }


def conflict_message(own_job: str, holder: Mapping[str, Any]) -> str:
    """The error of a run refused because `holder` runs the same job on the lake."""
    return (
        f"another run of {own_job} is running on this lake: {holder['run_id']} (host "
        f"{holder.get('host') or '?'}, started {holder['started_at']:%Y-%m-%d %H:%M:%S} UTC, "
        f"last heartbeat {last_sign(holder):%H:%M:%S} UTC). Wait for it to end; a run that was "
        "killed is marked abandoned once its lease (runner.lease_seconds) expires"
    )


class Heartbeat:
    """Renews a run's lease every `interval_s` by calling `beat(now)` on a daemon thread.

    Example:
        >>> with Heartbeat(lambda now: write_heartbeat(now), interval_s=30):
        ...     do_the_work()
    """

    def __init__(
        self, beat: Callable[[datetime], None], interval_s: float, clock: Callable[[], datetime]
    ) -> None:
        self._beat = beat
        self._interval = max(interval_s, 0.5)
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="retail-lake-heartbeat", daemon=True
        )

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat(self._clock())
            except Exception as exc:  # a missed beat is retried at the next one
                log.warning("heartbeat not recorded: %s", exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
