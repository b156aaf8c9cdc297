"""The one Spark session factory: Delta configured, UTC, settings from config.

Local sessions (no metastore URI) keep an in-memory catalog and register every Delta table
found under the root at start, one database per layer, so any number of processes can use
table names at once (Delta's log arbitrates writers). Jobs address tables by path and skip
that (`register=False`: each registration reads the table's log); `retail-lake sql`
registers only the tables its statement names. A cluster profile sets
`spark.metastore_uri` and uses a Hive metastore instead.

`python -m retail_lake.session --resolve-jars` starts a session once so that Ivy downloads
the Delta jars into the configured Ivy folder (setup_cluster.sh calls it at install).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
import sys
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from retail_lake.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold", "ops")
# A table's name in its layer: a plain SQL identifier (also its folder under the layer).
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TableNameError(ValueError):
    """A name that cannot be a lake table: not `<layer>.<identifier>`."""


# With a class archive: one made by another JDK or for other jars is skipped, silently.
CDS_FLAGS = "-Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"


def jvm_options(path: str) -> str:
    """The driver's JVM options that map the archive at `path`, or "" when there is none.

    `-Xshare:auto`: an archive made by another JDK or for other jars is skipped, not an
    error; its warnings are off (nothing a user could act on: `install` remakes it).
    """
    if not path or not os.path.isfile(path):
        return ""
    return f"-XX:SharedArchiveFile={path} {CDS_FLAGS}"


def split_table_name(table: str) -> tuple[str, str]:
    """(layer, name) of `layer.name`, or a TableNameError saying what a name must be.

    >>> split_table_name("silver.stores")
    ('silver', 'stores')
    """
    layer, dot, name = table.partition(".")
    if not dot or layer not in LAYERS or not TABLE_NAME.fullmatch(name):
        raise TableNameError(
            f"{table!r} is not a table name: expected <layer>.<table> with the layer one of "
            f"{', '.join(LAYERS)} and the table of letters, digits and _ (e.g. silver.stores)"
        )
    return layer, name


def delta_package() -> str:
    """The Maven coordinate of the Delta jar matching the installed delta-spark."""
    from importlib.metadata import version

    return f"io.delta:delta-spark_2.13:{version('delta-spark')}"


# Every JVM of a job runs in UTC; JVM options in `spark.conf` are added to this one.
UTC_JVM = "-Duser.timezone=UTC"
JVM_OPTION_KEYS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


def build_session(cfg: Config, app_name: str | None = None, register: bool = True) -> SparkSession:
    """Returns the session for `cfg`, creating it with Delta on first use.

    `register`: give every table under the root its `<layer>.<name>` (notebooks, analysts);
    False for a caller that reads by path or registers what it needs (`register_tables`).

    Under spark-submit the session (and its master and packages) already exists; the
    settings that can still change at run time are applied to it.
    """
    from pyspark.sql import SparkSession

    # pandas-on-Spark asks for this on driver and executors (pyarrow >= 2).
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # Python workers run the driver's interpreter (the venv), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark_cfg = cfg["spark"]
    # The driver starts from the class archive install made, if there is one.
    driver_jvm = " ".join(filter(None, [UTC_JVM, jvm_options(spark_cfg["class_archive"])]))
    builder = (
        SparkSession.builder.appName(app_name or spark_cfg["app_name"])
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(spark_cfg["shuffle_partitions"]))
        .config("spark.databricks.delta.snapshotPartitions", str(spark_cfg["snapshot_partitions"]))
        .config("spark.driver.memory", spark_cfg["driver_memory"])
        .config("spark.ui.enabled", str(spark_cfg["ui_enabled"]).lower())
        .config("spark.ui.showConsoleProgress", str(spark_cfg["console_progress"]).lower())
        .config("spark.jars.ivy", spark_cfg["ivy_dir"])
        .config("spark.driver.extraJavaOptions", driver_jvm)
        .config("spark.executor.extraJavaOptions", UTC_JVM)
        # Delta: allow MERGE schema checks to see comments; keep CDF readable.
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        # PySpark 4 records the Python call site of every Column it builds (five JVM round
        # trips each, a third of the time cleanse spends building its plans) only to quote it
        # in an error; `spark.conf` can turn it back on (bench/RESULTS.md, "building plans").
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")
        # Frames a job caches (typed lines, the ranking of duplicates) are built once and read
        # a few times: compressing their columns cost more than it saved (bench/RESULTS.md,
        # "ingest + cleanse"); spilled blocks still go to disk. A profile's conf may override.
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
    )
    if not _under_spark_submit():
        builder = builder.master(spark_cfg["master"])
    if spark_cfg["metastore_uri"]:
        check_metastore(spark_cfg["metastore_uri"])
        builder = (
            builder.config("spark.sql.catalogImplementation", "hive")
            .config("spark.hadoop.hive.metastore.uris", spark_cfg["metastore_uri"])
            .enableHiveSupport()
        )
    else:
        builder = builder.config("spark.sql.catalogImplementation", "in-memory")
    for key, value in spark_cfg["conf"].items():
        if key in JVM_OPTION_KEYS:  # a profile's JVM options come after the session's
            ours = driver_jvm if key == "spark.driver.extraJavaOptions" else UTC_JVM
            value = f"{ours} {value}"
        builder = builder.config(key, str(value))
    if spark_cfg["delta_jars"]:
        builder = builder.config("spark.jars", ",".join(spark_cfg["delta_jars"]))
    elif not _under_spark_submit():
        builder = builder.config("spark.jars.packages", delta_package())

    spark = _get_or_create(builder, spark_cfg["jvm_log_dir"], spark_cfg["jvm_logs_kept"])
    spark.sparkContext.setLogLevel(spark_cfg["log_level"])
    # Settings a pre-existing (spark-submit) session still accepts at run time.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.shuffle.partitions", str(spark_cfg["shuffle_partitions"]))
    spark.conf.set(
        "spark.databricks.delta.snapshotPartitions", str(spark_cfg["snapshot_partitions"])
    )
    if register and not spark_cfg["metastore_uri"]:
        register_tables(spark, cfg.root)
    return spark


def check_metastore(uri: str, timeout: float = 5.0) -> None:
    """Raises ConfigError unless something answers at one of `uri`'s addresses
    (`thrift://HOST:PORT`, comma-separated as Hive allows), so that a session pointed at a
    metastore that is not running fails at once with what to do, not after Hive's retries
    with a page of JVM trace."""
    addresses = []
    for part in (p.strip() for p in uri.split(",")):
        found = re.fullmatch(r"thrift://(\[[^\]]+\]|[^/:\[\]]+):(\d+)/?", part)
        if found is None:
            raise ConfigError(f"spark.metastore_uri: {part!r} is not thrift://HOST:PORT")
        addresses.append((found[1].strip("[]"), int(found[2])))
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError:
            continue
    raise ConfigError(
        f"spark.metastore_uri is {uri}, but no metastore answers there: start it "
        "(./setup_cluster.sh metastore start, or ./setup_cluster.sh start for a cluster), or "
        "--set spark.metastore_uri= for each session's own catalog"
    )


# The file the JVM this process started writes its output to (None: the console).
jvm_log: str | None = None
_JVM_LOG = re.compile(r"jvm-\d{8}T\d{6}-\d+\.log")


def _get_or_create(builder: SparkSession.Builder, log_dir: str, kept: int) -> SparkSession:
    """`builder.getOrCreate()`; a JVM it starts writes its output to a file in `log_dir`.

    The JVM inherits the process's stdout and stderr when it starts: for that moment both
    point at the file, so whatever the JVM prints for its whole life (Ivy's resolution
    report, Spark's start-up warnings, Delta's VACUUM messages, Python workers' stderr) lands
    there and the console keeps the job's own progress lines. An existing JVM, one started
    by spark-submit, or an empty `log_dir` keeps the console.
    """
    global jvm_log
    from pyspark import SparkContext

    if not log_dir or SparkContext._gateway is not None or _under_spark_submit():
        return builder.getOrCreate()
    os.makedirs(log_dir, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = os.path.join(log_dir, f"jvm-{stamp}-{os.getpid()}.log")
    _prune_logs(log_dir, max(kept - 1, 0))
    sys.stdout.flush()
    sys.stderr.flush()
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = (os.dup(1), os.dup(2))
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        spark = builder.getOrCreate()
    except Exception as exc:  # the reason (no Java, a bad option) is in what the JVM printed
        with open(path, encoding="utf-8", errors="replace") as fh:
            printed = " | ".join(line.strip() for line in fh.readlines()[-5:] if line.strip())
        raise RuntimeError(f"the Spark JVM did not start ({exc}); it printed: {printed}") from exc
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
    jvm_log = path
    log.debug("the JVM writes its output to %s", path)
    return spark


def _prune_logs(log_dir: str, keep: int) -> None:
    """Deletes all but the newest `keep` JVM logs in `log_dir`."""
    # Names start with the UTC start time: sorted by name is oldest first.
    logs = sorted(e.path for e in os.scandir(log_dir) if _JVM_LOG.fullmatch(e.name))
    for path in logs[: max(len(logs) - keep, 0)]:
        with contextlib.suppress(FileNotFoundError):  # another process pruned it first
            os.unlink(path)


def _under_spark_submit() -> bool:
    # spark-submit starts the JVM first and tells the Python driver through these.
    return "PYSPARK_GATEWAY_PORT" in os.environ or "SPARK_SUBMIT_OPTS" in os.environ


def _list_dirs(spark: SparkSession, uri: str) -> list[str]:
    """Child folder names of `uri`, through Hadoop's FileSystem (local, HDFS, S3...)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(conf)
    if not fs.exists(path):
        return []
    return [st.getPath().getName() for st in fs.listStatus(path) if st.isDirectory()]


def register_tables(
    spark: SparkSession, root: str, only: Collection[str] | None = None
) -> list[str]:
    """Registers the Delta tables under `root` as `<layer>.<name>`; returns the names.

    `only`: just these, each a `layer.table` or a whole `layer` (default: every table).
    A named table that does not exist is left out (the query then says it is not found),
    and a catalog entry of that name pointing into another lake is dropped (only the entry:
    the table is external), so a name never answers from another lake.
    """
    registered = []
    for layer in LAYERS:
        layer_uri = f"{root.rstrip('/')}/{layer}"
        names = [n for n in _list_dirs(spark, layer_uri) if not n.startswith(("_", "."))]
        if not names:
            continue
        # Every layer's database exists (SHOW DATABASES), whichever of its tables are named.
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {layer}")
        if only is not None and layer not in only:
            names = [n for n in names if f"{layer}.{n}" in only]
        odd = [n for n in names if not TABLE_NAME.fullmatch(n)]
        if odd:
            log.warning(
                "skipped folder(s) under %s that cannot be tables (a table's folder is named "
                "with letters, digits and _): %s",
                layer_uri,
                ", ".join(repr(n) for n in odd),
            )
            names = [n for n in names if n not in odd]
        for name in names:
            location = f"{layer_uri}/{name}"
            if "_delta_log" not in _list_dirs(spark, location):
                continue
            register_table(spark, f"{layer}.{name}", location)
            registered.append(f"{layer}.{name}")
    for name in sorted(n for n in only or () if "." in n and n not in registered):
        layer, table = name.split(".", 1)
        if spark.catalog.databaseExists(layer):
            elsewhere = _catalog_location(spark, layer, table)
            if elsewhere is not None:
                log.info("%s is not under %s; forgetting its entry for %s", name, root, elsewhere)
                spark.sql(f"DROP TABLE IF EXISTS {name}")
    log.debug("registered %d tables under %s", len(registered), root)
    return registered


def register_table(spark: SparkSession, name: str, location: str) -> None:
    """Makes `name` point at the Delta table at `location` in this session's catalog.

    A name registered earlier to another location (another lake opened in the same session,
    or a metastore entry left by a moved lake) is pointed at `location`; only the catalog
    entry is dropped, never the table it pointed at (it is external).
    """
    layer, table = name.split(".", 1)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {layer}")
    registered = _catalog_location(spark, layer, table)
    if registered is not None and _same_location(registered, location):
        return
    if registered is not None:
        log.info("%s pointed at %s; registering it at %s", name, registered, location)
        spark.sql(f"DROP TABLE IF EXISTS {name}")
    spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{location}'")


def _catalog_location(spark: SparkSession, database: str, table: str) -> str | None:
    """Where the catalog's entry for `database.table` points, or None without an entry."""
    jvm = spark._jvm
    ident = jvm.org.apache.spark.sql.catalyst.TableIdentifier(table, jvm.scala.Some(database))
    catalog = spark._jsparkSession.sessionState().catalog()
    if not catalog.tableExists(ident):
        return None
    return str(catalog.getTableMetadata(ident).location())


def _same_location(a: str, b: str) -> bool:
    def norm(uri: str) -> str:
        for prefix in ("file://", "file:"):
            if uri.startswith(prefix):
                uri = uri[len(prefix) :]
                break
        return uri.rstrip("/")

    return norm(a) == norm(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--resolve-jars",
        action="store_true",
        help="start a session once so Ivy fetches the Delta jars, then stop",
    )
    parser.add_argument("--profile", default="local")
    args = parser.parse_args(argv)
    if not args.resolve_jars:
        parser.print_help()
        return 2
    cfg = load_config(args.profile, ["spark.ui_enabled=false", "spark.master=local[1]"])
    from pyspark.sql import SparkSession

    # No table registration here: only the jars matter.
    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.jars.ivy", cfg.get("spark.ivy_dir"))
        .config("spark.jars.packages", delta_package())
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    jars = spark.sparkContext.getConf().get("spark.jars", "")
    spark.range(1).count()
    spark.stop()
    print(f"Delta jars resolved into {cfg.get('spark.ivy_dir')}: {jars}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
