"""A one-row `retail-lake sql` on a whole lake, end to end, each run a process of its own.

    python bench/bench_cli_sql.py --root /tmp/demo_lake --repeats 3

Variants, alternating, the same query each time (default: one row from silver.stores):
- `all_tables`: the command until stop 28: the driver JVM starts without a class archive and
  every table of the lake is registered before the query (each registration reads the
  table's log);
- `named`: only the tables the statement names are registered;
- `named_archive`: `retail-lake sql` as it is now: and the driver JVM starts from the class
  archive of `python -m retail_lake.class_archive` (`spark.class_archive`).
Prints seconds per command and the ratios to the first, and checks all print the same rows.

`--phases`: inside each process, with and without the class archive (alternating), the
seconds of the session's start, the statement's parsing, the named tables' registration and
the first query.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from bench_cli_tables import alternate  # bench/ is on the path of a bench run
from retail_lake.class_archive import is_current
from retail_lake.config import load_config

# The command as it was: every table registered, then the statement (same printing code).
ALL_TABLES = """
import sys
import retail_lake.session as session
from retail_lake import cli
plain = session.build_session
session.build_session = lambda cfg, *a, **k: plain(cfg)  # register=True: every table
sys.exit(cli.main(sys.argv[1:]))
"""
# What a `retail-lake sql` process spends where: argv = profile, root, query, archive, sets.
PHASES = """
import sys, time
from retail_lake.analyst import classify, tables_named
from retail_lake.config import load_config
from retail_lake.session import build_session, register_tables
profile, root, query, archive, *sets = sys.argv[1:]
cfg = load_config(profile, [f"paths.root={root}", f"spark.class_archive={archive}", *sets])
marks = [time.perf_counter()]
spark = build_session(cfg, register=False)
marks.append(time.perf_counter())
classify(spark, query)
marks.append(time.perf_counter())
register_tables(spark, cfg.root, tables_named(spark, query))
marks.append(time.perf_counter())
spark.sql(query).limit(21).collect()
marks.append(time.perf_counter())
print(" ".join(f"{b - a:.2f}" for a, b in zip(marks, marks[1:])))
"""


def phases(args: argparse.Namespace, archive: str) -> int:
    python = sys.executable
    print("archive  session  parse  register  first_query  (s)")
    for _ in range(args.repeats):
        for label, path in (("off", ""), ("on", archive)):
            command = [python, "-c", PHASES, args.profile, args.root, args.query, path, *args.set]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"phases failed:\n{done.stderr[-3000:]}")
            print(f"{label:8s} {done.stdout.strip()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="an existing lake")
    parser.add_argument("--profile", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query", default="SELECT * FROM silver.stores ORDER BY store LIMIT 1")
    parser.add_argument("--phases", action="store_true", help="time the phases of a process")
    parser.add_argument("--set", action="append", default=[], help="a config override (--phases)")
    args = parser.parse_args(argv)
    cfg = load_config(args.profile, [f"paths.root={args.root}"])
    if not is_current(cfg.get("spark.class_archive")):
        raise SystemExit("no current class archive: run ./setup_cluster.sh install")
    if args.phases:
        return phases(args, cfg.get("spark.class_archive"))
    python = sys.executable
    cli = str(Path(python).parent / "retail-lake")
    common = [args.query, "--profile", args.profile, "--root", args.root]
    no_archive = ["--set", "spark.class_archive="]
    variants = {
        "all_tables": [python, "-c", ALL_TABLES, "sql", *common, *no_archive],
        "named": [cli, "sql", *common, *no_archive],
        "named_archive": [cli, "sql", *common],
    }
    times, printed = alternate(variants, args.repeats)
    if len(set(printed.values())) != 1:
        raise SystemExit(f"the variants print different rows: {printed}")
    print(f"query: {args.query}\n{printed['named_archive']}")
    base = statistics.median(times["all_tables"])
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"{label:14s} {', '.join(f'{v:6.2f}' for v in values)} s per command; "
            f"median {median:.2f} s, {base / median:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
