"""JVM options of the test profile, side by side: a subset of the suite under each set of
options, alternating, with the wall time and where the test JVM's CPU went.

    python bench/bench_jvm_options.py --rounds 2 \\
        --variant "profile=" \\
        --variant "c2x4=-XX:Tier4InvocationThreshold=20000 -XX:Tier4CompileThreshold=60000 \\
            -XX:Tier4BackEdgeThreshold=160000" \\
        -- tests/test_runner.py tests/test_lake.py -m "not slow"

Each variant is NAME=OPTIONS: the test profile's `spark.driver.extraJavaOptions` replaced by
OPTIONS (empty: none, Spark's defaults), in a copy of `conf/` that the run reads through
`RETAIL_LAKE_CONF_DIR`. Everything after `--` goes to pytest (`./setup_cluster.sh test`). At
the end of each run a pytest plugin (`bench/cpu_split.py`) reads the test JVM's threads from
/proc: CPU seconds of the JIT's compilers, the garbage collector, the driver's threads (py4j,
planning) and the executors' task threads (the ones already ended included), and
`jstat -compiler` (methods compiled, JIT seconds). Printed as one table; the JIT and GC
columns are seconds of CPU, not of wall.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KEY = "spark.driver.extraJavaOptions"


def conf_with(options: str, folder: Path) -> Path:
    """A copy of conf/ whose test profile runs the JVM with `options` (empty: none)."""
    shutil.copytree(REPO / "conf", folder)
    profile = folder / "profiles" / "test.yaml"
    data = yaml.safe_load(profile.read_text())
    conf = data.setdefault("spark", {}).setdefault("conf", {})
    if options.strip():
        conf[KEY] = options.strip()
    else:
        conf.pop(KEY, None)
    profile.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def run(name: str, options: str, pytest_args: list[str], work: Path) -> dict:
    conf = conf_with(options, work / f"conf_{name}")
    split = work / f"cpu_{name}.json"
    env = dict(os.environ)
    env.update(
        {
            "RETAIL_LAKE_CONF_DIR": str(conf),
            "CPU_SPLIT_OUT": str(split),
            "PYTHONPATH": str(REPO / "bench"),  # setup_cluster.sh puts lib/ before it
        }
    )
    cmd = [str(REPO / "setup_cluster.sh"), "test", "-p", "cpu_split", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "-q", *pytest_args], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name}: pytest exited {proc.returncode}\n{proc.stdout[-3000:]}")
    return {"name": name, "wall": wall, **json.loads(split.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME=JVM OPTIONS")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    variants = [v.split("=", 1) for v in args.variant]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_jvm_") as tmp:
        for r in range(args.rounds):
            for name, options in variants:
                rows.append(run(name, options, args.pytest_args, Path(tmp) / f"round{r}"))
                row = rows[-1]
                print(
                    f"{name:>12} round {r + 1}: wall {row['wall']:7.1f} s | JVM CPU "
                    f"{row['jvm_cpu']:6.0f} s: C2 {row['cpu'].get('jit_c2', 0):5.0f}, C1 "
                    f"{row['cpu'].get('jit_c1', 0):4.0f}, GC {row['cpu'].get('gc', 0):4.0f}, "
                    f"driver {row['cpu'].get('driver', 0):5.0f}, tasks "
                    f"{row['cpu'].get('tasks', 0):5.0f} | compiled {row['compiled']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
