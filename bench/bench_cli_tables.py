"""What `retail-lake tables` pays per table: the old scans against the transaction log.

    python bench/bench_cli_tables.py --root /tmp/demo_lake --repeats 3

On an existing lake, in one session, alternating: `scan` reads each table's version from
`history(1)`, its files and last change from `DESCRIBE DETAIL` and its rows with `count()`
(what the command did until stop 23); `log` reads all of them from the table's snapshot
(`Lake.summary`: the files' numRecords statistics). Prints seconds per pass over every table
and the ratio, and checks both give the same numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="an existing lake")
    parser.add_argument("--profile", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
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
    for label, values in times.items():
        print(f"{label}: {', '.join(f'{v:.2f}' for v in values)} s per pass")
    ratio = statistics.median(times["scan"]) / statistics.median(times["log"])
    print(f"{len(names)} tables: the log is {ratio:.1f}x faster than the scans (medians)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
