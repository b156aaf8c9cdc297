"""A class archive for the driver's JVM (application class-data sharing, JDK 17's AppCDS).

A Spark driver loads thousands of classes from the jars of Spark, Delta and their
dependencies before its first answer: reading and verifying them is much of a session's
start. `./setup_cluster.sh install` runs a small session once (a table created, merged,
validated and queried through the runner) whose JVM writes every class it loaded to an
archive (`-XX:ArchiveClassesAtExit`); every later driver maps that archive instead
(`-XX:SharedArchiveFile`, added by `session.build_session` when `spark.class_archive` names
a file that exists). Measured: a one-row `retail-lake sql` about 4 s sooner
(bench/RESULTS.md, "a one-row `retail-lake sql`").

The archive only holds for the JDK and the jars it was made with; a stale one is skipped by
the JVM itself (`-Xshare:auto`, its messages off) and `install` remakes it, comparing the
stamp written beside it.

    python -m retail_lake.class_archive            # make it if missing or stale
    python -m retail_lake.class_archive --force
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version

from retail_lake.config import Config, load_config
from retail_lake.registry import run_job
from retail_lake.runner import JobResult, Output
from retail_lake.session import build_session
from retail_lake.sources.rossmann.tables import STORE, STORES

log = logging.getLogger(__name__)


def stamp() -> str:
    """What an archive is valid for: the JDK (`java -version`), pyspark and delta-spark."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else "java"
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=True)
    return (
        f"{' '.join(done.stderr.split())}\npyspark {version('pyspark')}\n"
        f"delta-spark {version('delta-spark')}\n"
    )


def is_current(path: str) -> bool:
    """Whether the archive at `path` exists and was made for this JDK and these jars."""
    try:
        with open(f"{path}.stamp", encoding="utf-8") as fh:
            return os.path.isfile(path) and fh.read() == stamp()
    except OSError:
        return False


def make(cfg: Config, path: str) -> str:
    """Writes the archive to `path` from a small session run on a temporary lake."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial"
    if os.path.exists(partial):
        os.remove(partial)
    with tempfile.TemporaryDirectory(prefix="retail-lake-classes-") as work:
        # A process of its own: the JVM writes the archive when it exits.
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "retail_lake.class_archive",
                "--workload",
                work,
                partial,
                "--profile",
                cfg.profile,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0 or not os.path.isfile(partial):
        raise RuntimeError(
            f"the class archive was not written (exit code {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )
    os.replace(partial, path)
    with open(f"{path}.stamp", "w", encoding="utf-8") as fh:
        fh.write(stamp())
    return path


def _workload(work: str, partial: str, profile: str) -> None:
    """A session whose JVM archives its classes at exit: a table created, a first load, a
    merge, the suite and the ops rows (through the runner), a query and a window."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cfg = load_config(
        profile,
        [
            f"paths.root={work}/lake",
            "spark.class_archive=",
            "spark.master=local[2]",
            "spark.ui_enabled=false",
            "spark.log_level=ERROR",
            # Its messages (classes it cannot archive: signed jars, generated ones) are off.
            "spark.conf.spark.driver.extraJavaOptions=-Xlog:cds=off -Xlog:cds+dynamic=off "
            f"-XX:ArchiveClassesAtExit={partial}",
        ],
    )
    spark = build_session(cfg, "retail-lake class archive")
    schema = (
        "store int, store_type string, assortment string, competition_distance_m double, "
        "competition_open_since date, promo2 boolean, promo2_since date, "
        "promo2_months array<int>, _source_file string, _line_number bigint"
    )
    for changed in (False, True):
        distance = 100.0 + changed
        rows = [(i, "a", "b", distance, None, i % 2 == 0, None, [], "f", i) for i in range(1, 11)]
        table = spark.createDataFrame(rows, schema)
        outputs = [Output(STORES, table)]
        run_job(spark, cfg, "class_archive", lambda ctx, o=outputs: JobResult(o))
    spark.sql(f"SELECT store_type, count(*) AS n FROM {STORES} GROUP BY store_type").collect()
    ranked = (
        spark.read.format("delta")
        .load(f"{work}/lake/silver/stores")
        .withColumn("r", F.row_number().over(Window.orderBy(STORE)))
    )
    ranked.where("r < 3").toPandas()
    jvm = spark.sparkContext._gateway.proc  # the JVM pyspark started
    spark.stop()
    jvm.stdin.close()  # the gateway exits when its stdin closes; the archive is written then
    jvm.wait(timeout=300)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--force", action="store_true", help="remake it even if current")
    parser.add_argument("--workload", nargs=2, metavar=("WORK", "PARTIAL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        _workload(*args.workload, args.profile)
        return 0
    cfg = load_config(args.profile)
    path = cfg.get("spark.class_archive")
    if not path:
        print("spark.class_archive is empty: no class archive")
        return 0
    if is_current(path) and not args.force:
        print(f"class archive current: {path}")
        return 0
    make(cfg, path)
    print(f"class archive written: {path} ({os.path.getsize(path) // 2**20} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
