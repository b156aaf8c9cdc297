"""What `retail-lake tables` pays per table: the old scans against the transaction log.

    python bench/bench_cli_tables.py --root /tmp/demo_lake --repeats 3
    python bench/bench_cli_tables.py --root /tmp/demo_lake --repeats 3 --cli

On an existing lake, in one session, alternating: `scan` reads each table's version from
`history(1)`, its files and last change from `DESCRIBE DETAIL` and its rows with `count()`
(what the command did until stop 23); `log` reads all of them from the table's snapshot
(`Lake.summary`: the files' numRecords statistics). Prints seconds per pass over every table
and the ratio, and checks both give the same numbers.

`--cli`: the command end to end, as a user runs it, each run a process of its own,
alternating: `log` is `retail-lake tables` (a local lake's logs read with delta-rs, no JVM),
`spark` is `retail-lake tables --spark` (a session, every table registered, each log read by
Delta: the command until stop 26, and a remote root's path). Checks both print the same.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.session import build_session, register_tables


def scan(spark, lake: Lake, name: str) -> tuple[int, int, int]:
    last = lake.history(name, 1).first()
    detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
    return int(last["version"]), spark.table(name).count(), int(detail["numFiles"])


def from_log(lake: Lake, name: str) -> tuple[int, int, int]:
    info = lake.summary(name)
    return info.version, info.rows, info.files


def report(times: dict[str, list[float]], slow: str, fast: str, what: str) -> None:
    for label, values in times.items():
        print(f"{label}: {', '.join(f'{v:.2f}' for v in values)} s per {what}")
    ratio = statistics.median(times[slow]) / statistics.median(times[fast])
    print(f"{fast} is {ratio:.1f}x faster than {slow} (medians)")


def alternate(
    commands: dict[str, list[str]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Runs each command `repeats` times, in turn, each a process of its own: the seconds of
    every run and the last output of each (a failing command stops the bench)."""
    times: dict[str, list[float]] = {label: [] for label in commands}
    printed: dict[str, str] = {}
    for _ in range(repeats):
        for label, command in commands.items():
            began = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            times[label].append(time.perf_counter() - began)
            if done.returncode != 0:
                raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
            printed[label] = done.stdout
    return times, printed


def end_to_end(args: argparse.Namespace) -> int:
    cli = str(Path(sys.executable).parent / "retail-lake")
    command = [cli, "tables", "--profile", args.profile, "--root", args.root]
    times, printed = alternate({"spark": [*command, "--spark"], "log": command}, args.repeats)
    if printed["log"] != printed["spark"]:
        raise SystemExit(f"the two readings differ:\n{printed['log']}\n{printed['spark']}")
    print(f"{len(printed['log'].splitlines()) - 2} tables, the same output both ways")
    report(times, "spark", "log", "command")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="an existing lake")
    parser.add_argument("--profile", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="the command end to end")
    args = parser.parse_args(argv)
    if args.cli:
        return end_to_end(args)
    cfg = load_config(args.profile, [f"paths.root={args.root}"])
    spark = build_session(cfg)
    lake = Lake(spark, cfg.root)
    started = time.perf_counter()
    names = register_tables(spark, cfg.root)
    print(f"registered {len(names)} tables in {time.perf_counter() - started:.1f}s")
    times: dict[str, list[float]] = {"scan": [], "log": []}
    for _ in range(args.repeats):
        for label in ("scan", "log"):
            began = time.perf_counter()
            got = {
                n: (scan(spark, lake, n) if label == "scan" else from_log(lake, n)) for n in names
            }
            times[label].append(time.perf_counter() - began)
            if label == "scan":
                expected = got
            elif got != expected:
                diff = {n: (expected[n], got[n]) for n in names if got[n] != expected[n]}
                raise SystemExit(f"the log and the scans disagree: {diff}")
    print(f"{len(names)} tables")
    report(times, "scan", "log", "pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
