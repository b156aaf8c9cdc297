"""The analysts' SQL endpoint: a Spark Thrift Server (HiveServer2, JDBC) and Spark Connect.

`setup_cluster.sh sql-server start` runs this file with `spark-submit` (the one place that
knows the jars, ports and settings; see its header), which makes one driver JVM serve both:

- **JDBC / HiveServer2** on `RETAIL_LAKE_SQL_PORT` (10000): beeline, BI tools, PyHive;
- **Spark Connect** on `RETAIL_LAKE_CONNECT_PORT` (15002), from the Connect plugin.

At start every Delta table under the lake's root is registered as `<layer>.<name>` in the
server's catalog (in memory, shared by every client session, rebuilt at each start), so
analysts write `SELECT * FROM gold.customer_features`; a path works as well
(``SELECT * FROM delta.`/srv/lake/gold/customer_features` ``). A table created in the lake
after the start is seen after a restart (`sql-server stop`, then `start`), or by path.

**Read-only.** A check rule in every session refuses any command that would change the lake
(INSERT, UPDATE, DELETE, MERGE, DROP, CREATE, ALTER, OPTIMIZE, VACUUM, RESTORE, a DataFrame
write over Connect) before it runs; it is the Spark SQL extension `retail_lake.ReadOnlySql`
(`jvm/src/retail_lake/ReadOnlySql.java`), allowed only the commands listed in
`ENDPOINT_READ_ONLY_COMMANDS`. `start --allow-writes` turns it off for that server's life
(a static Spark setting, which a client's SET cannot change). The tables are registered in a
session the guard exempts, before the JDBC server accepts connections. It guards against
accidents, not against a user set on harm: a Connect client runs Python code on the server
(UDFs), so the endpoint's OS user should only be able to read the lake.

    ./setup_cluster.sh sql-server start --root ./lake
    beeline -u jdbc:hive2://127.0.0.1:10000 -e 'SELECT * FROM gold.customer_features LIMIT 5'
    ./setup_cluster.sh sql-server stop
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from retail_lake.analyst import READ_ONLY_COMMANDS

log = logging.getLogger("retail_lake.sql_endpoint")

# The guard's settings (static: read from the SparkContext's SparkConf).
ALLOW_WRITES_KEY = "spark.retail_lake.sql.allow_writes"
READ_ONLY_COMMANDS_KEY = "spark.retail_lake.sql.read_only_commands"
GUARD_CLASS = "retail_lake.ReadOnlySql"

# What `retail-lake sql` lets through (parsed plans), the same commands as the analyzer
# resolves them (the guard sees analyzed plans), and what changes only the caller's own
# session: SET / RESET (a session setting; the guard's own setting is static), USE, and a
# temporary view (only a local one: `ReadOnlySql` refuses a persistent CREATE VIEW). CACHE
# is left out: the cache is shared by every session and would serve others stale rows.
ENDPOINT_READ_ONLY_COMMANDS = READ_ONLY_COMMANDS | {
    "DescribeColumnCommand",
    "DescribeDatabaseCommand",
    "DescribeFunctionCommand",
    "DescribeTableCommand",
    "ShowCatalogsCommand",
    "ShowColumnsCommand",
    "ShowCreateTableAsSerdeCommand",
    "ShowCreateTableCommand",
    "ShowCurrentNamespace",
    "ShowCurrentNamespaceCommand",
    "ShowDeltaTableColumnsCommand",
    "ShowFunctionsCommand",
    "ShowNamespacesCommand",
    "ShowPartitionsCommand",
    "ShowTablePropertiesCommand",
    "ShowTablesCommand",
    "ShowViewsCommand",
    # The caller's own session.
    "CreateTempViewUsing",
    "CreateViewCommand",
    "DropTempViewCommand",
    "ResetCommand",
    "SetCatalogAndNamespace",
    "SetCatalogCommand",
    "SetCommand",
    "SetNamespaceCommand",
}


def register_lake(spark, root: str) -> list[str]:
    """Registers every Delta table under `root` as `<layer>.<name>`; returns the names.

    The registration runs in a session of its own that the guard lets through (its CREATE
    DATABASE / CREATE TABLE ... LOCATION are commands); the catalog is shared, so every
    client session sees the tables.
    """
    from retail_lake.session import register_tables

    registrar = spark.newSession()
    guard = spark._jvm.retail_lake.ReadOnlySql
    guard.exempt(registrar._jsparkSession)
    try:
        return register_tables(registrar, root)
    finally:
        guard.unexempt(registrar._jsparkSession)


def warm_up(spark, host: str, port: str) -> None:
    """Opens one JDBC session and runs a query, the way a client does.

    The first session of a Thrift server creates its Hive session state (an in-memory Derby
    metastore: about 10 s); done here, `start` returns once a client is answered at once.
    """
    jvm = spark._jvm
    connection = jvm.java.sql.DriverManager.getConnection(
        f"jdbc:hive2://{host}:{port}/default", "retail-lake", ""
    )
    try:
        statement = connection.createStatement()
        statement.executeQuery("SELECT 1").close()
        statement.close()
    finally:
        connection.close()


def serve(root: str, ready_file: str | None = None) -> None:
    """Starts the session (Connect comes up with it), registers the lake, opens JDBC, waits.

    `ready_file` is written once a JDBC client would be answered at once.
    """
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.appName("retail-lake sql endpoint")
        .config(READ_ONLY_COMMANDS_KEY, ",".join(sorted(ENDPOINT_READ_ONLY_COMMANDS)))
        .getOrCreate()
    )
    conf = spark.sparkContext.getConf()
    extensions = conf.get("spark.sql.extensions", "")
    if GUARD_CLASS not in extensions.split(","):
        raise RuntimeError(
            f"spark.sql.extensions is {extensions!r}: the endpoint needs {GUARD_CLASS} "
            "(start it with ./setup_cluster.sh sql-server start)"
        )
    names = register_lake(spark, root)
    log.warning("registered %d table(s) under %s: %s", len(names), root, ", ".join(names))
    jvm = spark._jvm
    jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithSparkSession(
        spark._jsparkSession, True
    )
    host = conf.get("spark.hadoop.hive.server2.thrift.bind.host", "127.0.0.1")
    port = conf.get("spark.hadoop.hive.server2.thrift.port", "10000")
    warm_up(spark, host, port)
    writes = conf.get(ALLOW_WRITES_KEY, "false") == "true"
    log.warning(
        "serving %s %s: JDBC jdbc:hive2://%s:%s, Spark Connect sc://%s:%s",
        root,
        "with writes allowed" if writes else "read-only",
        host,
        port,
        conf.get("spark.connect.grpc.binding.address", "?"),
        conf.get("spark.connect.grpc.binding.port", "15002"),
    )
    if ready_file:
        with open(ready_file, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the lake's root (bronze/ silver/ ...)")
    parser.add_argument("--ready-file", help="written once clients are answered")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    serve(args.root, args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
