"""The analysts' SQL endpoint (`setup_cluster.sh sql-server`), queried with real clients.

One read-only server for the module (one JVM), over a small lake: `gold.store_sales` with its
Change Data Feed on and three versions (three rows written; store 2's sales updated; store 3
deleted) and `silver.stores` (column-mapped, as silver is). Clients: `beeline` (shipped with
pyspark) and PyHive over JDBC / HiveServer2, and a Spark Connect client in a process of its
own (a Connect session switches the whole Python process to Connect mode, which the suite's
classic session must not see). Every write they try is refused with the guard's message, and
the lake's files are the same afterwards. A server started with --allow-writes (on a Hive
metastore) creates a table and inserts into it in tests/test_cluster.py.

Self-contained: the servers run on free ports with their pid files and logs in a temporary
RETAIL_LAKE_SQL_SERVER_DIR, from the real venv and Ivy cache (no downloads), and are stopped
at the end, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyhive.exc import OperationalError

from tests.conftest import hive_query

pytestmark = [pytest.mark.sqlserver, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "setup_cluster.sh"
HOST = "127.0.0.1"
START_TIMEOUT = 300
MESSAGE = "would change the lake; restart the endpoint with --allow-writes"

SALES = "gold.store_sales"
# Its versions: 0 created empty (as a job creates its table), 1 these rows written, 2 store
# 2's sales updated, 3 store 3 deleted. (store, name, sales):
VERSION_1 = [(1, "a", 100), (2, "b", 200), (3, "c", 300)]
CURRENT = [(1, "a", 100), (2, "b", 250)]
# table_changes(gold.store_sales, 2): (store, sales, change type, commit version).
CHANGES = [
    (2, 200, "update_preimage", 2),
    (2, 250, "update_postimage", 2),
    (3, 300, "delete", 3),
]
CHANGES_QUERY = (
    f"SELECT store, sales, _change_type, _commit_version FROM table_changes('{SALES}', 2) "
    "ORDER BY _commit_version, store, _change_type DESC"
)


@dataclass
class Endpoint:
    root: Path
    server_dir: Path
    port: int
    connect_port: int

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RETAIL_LAKE_SQL_SERVER_DIR": str(self.server_dir),
            "RETAIL_LAKE_SQL_HOST": HOST,
            "RETAIL_LAKE_SQL_PORT": str(self.port),
            "RETAIL_LAKE_CONNECT_PORT": str(self.connect_port),
        }

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:hive2://{HOST}:{self.port}"

    def sql_server(self, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SETUP), "sql-server", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """Live processes of the session `sid` leads (the server's JVM and its Python driver)."""
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,sid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    return [
        int(pid)
        for pid, s, stat in (line.split() for line in out.splitlines())
        if int(s) == sid and not stat.startswith("Z")
    ]


def _start(root: Path, server_dir: Path, *options: str) -> Endpoint:
    endpoint = Endpoint(root, server_dir, _free_port(), _free_port())
    try:
        done = endpoint.sql_server("start", "--root", str(root), *options, timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        endpoint.sql_server("stop")
        pytest.fail(f"sql-server start did not return within {START_TIMEOUT} s")
    if done.returncode != 0:
        endpoint.sql_server("stop")
        pytest.fail(f"sql-server start failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return endpoint


def _stop(endpoint: Endpoint) -> None:
    """Stops the server and checks that nothing of it is left."""
    pid_file = endpoint.server_dir / "server.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    done = endpoint.sql_server("stop")
    assert done.returncode == 0, done.stderr
    if pid is not None:
        assert _session_pids(pid) == [], "processes of the SQL endpoint are still running"
    for port in (endpoint.port, endpoint.connect_port):
        with socket.socket() as sock:
            assert sock.connect_ex((HOST, port)) != 0, f"{HOST}:{port} still accepts connections"


def _write_lake(spark, root: Path) -> None:
    """The two tables, created with their layers' Delta properties as the jobs create them
    (gold: Change Data Feed, reader version 1; silver: column mapping too), then written."""
    from delta.tables import DeltaTable

    from retail_lake.contracts import LAYER_PROPERTIES

    def create(layer: str, name: str, schema: str) -> str:
        path = str(root / layer / name)
        properties = ", ".join(f"'{k}' = '{v}'" for k, v in LAYER_PROPERTIES[layer].items())
        spark.sql(
            f"CREATE TABLE delta.`{path}` ({schema}) USING delta TBLPROPERTIES ({properties})"
        )
        return path

    sales = create("gold", "store_sales", "store int, name string, sales bigint")
    spark.createDataFrame(VERSION_1, "store int, name string, sales bigint").write.format(
        "delta"
    ).mode("append").save(sales)
    DeltaTable.forPath(spark, sales).update("store = 2", {"sales": "250"})
    DeltaTable.forPath(spark, sales).delete("store = 3")
    stores = create("silver", "stores", "store int, city string")
    spark.createDataFrame([(1, "Berlin")], "store int, city string").write.format("delta").mode(
        "append"
    ).save(stores)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`: (size, modification time in ns) by relative path."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sql-endpoint") / "lake"
    _write_lake(spark, root)
    return root


@pytest.fixture(scope="module")
def lake_files(lake) -> dict[str, tuple[int, int]]:
    return _tree(lake)


@pytest.fixture(scope="module")
def endpoint(lake, lake_files, tmp_path_factory):
    server = _start(lake, tmp_path_factory.mktemp("sql-server"))
    try:
        yield server
    finally:
        _stop(server)
    # Neither the registration at start nor anything a test sent changed a file of the lake.
    assert _tree(lake) == lake_files


@pytest.fixture(scope="module")
def hive(endpoint):
    """A PyHive connection (HiveServer2, SASL PLAIN without a password, as beeline)."""
    from pyhive import hive

    connection = hive.connect(host=HOST, port=endpoint.port, username="analyst")
    yield connection
    connection.close()


def _beeline(endpoint: Endpoint, sql: str) -> subprocess.CompletedProcess:
    from pyspark.find_spark_home import _find_spark_home

    return subprocess.run(
        [
            os.path.join(_find_spark_home(), "bin", "beeline"),
            "-u",
            endpoint.jdbc_url,
            "--silent=true",
            "--showHeader=true",
            "--outputformat=csv2",
            "-e",
            sql,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# beeline prints its prompt before the first line of the result.
PROMPT = re.compile(r"^\d+: jdbc:hive2://\S+> ?")


def test_beeline_reads_a_gold_table(endpoint):
    done = _beeline(endpoint, f"SELECT store, name, sales FROM {SALES} ORDER BY store")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [PROMPT.sub("", line) for line in done.stdout.splitlines()]
    assert [line for line in lines if line] == ["store,name,sales", "1,a,100", "2,b,250"]


def test_beeline_is_refused_a_drop(endpoint, hive):
    done = _beeline(endpoint, f"DROP TABLE {SALES}")
    assert done.returncode != 0
    assert f"read-only endpoint: DropTable {MESSAGE}" in done.stdout + done.stderr
    assert hive_query(hive, f"SELECT * FROM {SALES} ORDER BY store") == CURRENT


def test_pyhive_reads_the_current_version_an_old_one_and_the_changes(hive):
    assert hive_query(hive, f"SELECT store, name, sales FROM {SALES} ORDER BY store") == CURRENT
    old = f"SELECT store, name, sales FROM {SALES} VERSION AS OF %d ORDER BY store"
    assert hive_query(hive, old % 0) == []
    assert hive_query(hive, old % 1) == VERSION_1
    assert hive_query(hive, CHANGES_QUERY) == CHANGES


def test_tables_are_registered_by_layer_and_paths_work_too(hive, lake):
    assert hive_query(hive, "SHOW DATABASES") == [("default",), ("gold",), ("silver",)]
    assert hive_query(hive, "SHOW TABLES IN gold") == [("gold", "store_sales", False)]
    by_path = f"SELECT store, city FROM delta.`{lake}/silver/stores`"
    assert hive_query(hive, by_path) == [(1, "Berlin")]


# Statements that only read, or change only the caller's own session, and what they return.
READS = {
    "DESCRIBE gold.store_sales": [
        ("store", "int", None),
        ("name", "string", None),
        ("sales", "bigint", None),
    ],
    "SHOW COLUMNS IN gold.store_sales": [("store",), ("name",), ("sales",)],
    "SHOW TBLPROPERTIES gold.store_sales ('delta.enableChangeDataFeed')": [
        ("delta.enableChangeDataFeed", "true")
    ],
    "SET spark.sql.shuffle.partitions": [("spark.sql.shuffle.partitions", "8")],
    "SHOW CURRENT NAMESPACE": [("spark_catalog", "default")],
}


@pytest.mark.parametrize("sql", list(READS))
def test_statements_that_only_read_are_answered(hive, sql):
    assert hive_query(hive, sql) == READS[sql]


def test_history_use_and_temporary_views_are_allowed(endpoint):
    from pyhive import hive

    connection = hive.connect(host=HOST, port=endpoint.port, username="analyst")
    try:
        history = hive_query(connection, f"DESCRIBE HISTORY {SALES}")
        assert [(row[0], row[4]) for row in history] == [
            (3, "DELETE"),
            (2, "UPDATE"),
            (1, "WRITE"),
            (0, "CREATE TABLE"),
        ]
        hive_query(connection, "USE gold")
        hive_query(
            connection,
            "CREATE TEMPORARY VIEW big AS SELECT store FROM store_sales WHERE sales > 200",
        )
        assert hive_query(connection, "SELECT store FROM big") == [(2,)]
    finally:
        connection.close()


# Statements that would change the lake, and the command the guard names.
WRITES = {
    f"DROP TABLE {SALES}": "DropTable",
    f"INSERT INTO {SALES} VALUES (9, 'z', 1)": "AppendData",
    f"DELETE FROM {SALES} WHERE store = 1": "DeleteCommand",
    f"UPDATE {SALES} SET sales = 0": "UpdateCommand",
    f"MERGE INTO {SALES} t USING {SALES} s ON t.store = s.store WHEN MATCHED THEN DELETE": (
        "MergeIntoCommand"
    ),
    "CREATE TABLE gold.other (a int) USING delta": "CreateTable",
    "CREATE TABLE gold.other USING delta AS SELECT 1 AS a": "CreateTableAsSelect",
    "CREATE VIEW gold.other AS SELECT 1 AS a": "CreateViewCommand (PersistedView)",
    f"ALTER TABLE {SALES} ADD COLUMNS (x int)": "AddColumns",
    f"TRUNCATE TABLE {SALES}": "TruncateTable",
    f"OPTIMIZE {SALES}": "OptimizeTableCommand",
    f"VACUUM {SALES} RETAIN 0 HOURS": "VacuumTableCommand",
    f"RESTORE TABLE {SALES} TO VERSION AS OF 0": "RestoreTableCommand",
    "CREATE DATABASE scratch": "CreateNamespace",
    "DROP DATABASE gold CASCADE": "DropNamespace",
    # The cache is shared by every session: it would serve the others stale rows.
    f"CACHE TABLE {SALES}": "CacheTable",
}


@pytest.mark.parametrize("sql", list(WRITES))
def test_writes_are_refused_over_jdbc_and_change_nothing(hive, lake, lake_files, sql):
    with pytest.raises(
        OperationalError, match=re.escape(f"read-only endpoint: {WRITES[sql]} {MESSAGE}")
    ):
        hive_query(hive, sql)
    assert hive_query(hive, f"SELECT store, name, sales FROM {SALES} ORDER BY store") == CURRENT
    assert _tree(lake) == lake_files


def test_a_client_cannot_set_writes_on(endpoint, lake, lake_files):
    from pyhive import hive

    connection = hive.connect(host=HOST, port=endpoint.port, username="analyst")
    try:
        hive_query(connection, "SET spark.retail_lake.sql.allow_writes=true")
        with pytest.raises(OperationalError, match=f"read-only endpoint: DeleteCommand {MESSAGE}"):
            hive_query(connection, f"DELETE FROM {SALES}")
    finally:
        connection.close()
    assert _tree(lake) == lake_files


# Run by the Connect client's own interpreter: prints what it read and what it was refused.
CONNECT_CLIENT = """\
import json, sys
from pyspark.sql import SparkSession

url, root = sys.argv[1], sys.argv[2]
spark = SparkSession.builder.remote(url).getOrCreate()
out = {
    "table": [list(r) for r in spark.table("gold.store_sales").orderBy("store").collect()],
    "path": [list(r) for r in spark.read.format("delta")
             .load(root + "/gold/store_sales").orderBy("store").collect()],
    "old": [list(r) for r in spark.read.option("versionAsOf", 1)
            .table("gold.store_sales").orderBy("store").collect()],
    "refused": {},
}
spark.conf.set("spark.retail_lake.sql.allow_writes", "true")  # a session setting: no effect
attempts = {
    "sql_drop": lambda: spark.sql("DROP TABLE gold.store_sales"),
    "save_overwrite": lambda: spark.range(3).write.format("delta").mode("overwrite")
        .save(root + "/gold/store_sales"),
    "save_as_table": lambda: spark.range(3).write.format("delta").saveAsTable("gold.other"),
    "write_to_append": lambda: spark.createDataFrame([(9, "z", 1)], "store int, name string, "
        "sales bigint").writeTo("gold.store_sales").append(),
}
for name, attempt in attempts.items():
    try:
        attempt()
        out["refused"][name] = None
    except Exception as error:
        out["refused"][name] = [type(error).__name__, str(error).splitlines()[0]]
spark.stop()
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def connect_client(endpoint) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CONNECT_CLIENT,
            f"sc://{HOST}:{endpoint.connect_port}",
            str(endpoint.root),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_spark_connect_reads_a_table_by_name_by_path_and_at_a_version(connect_client):
    assert [tuple(r) for r in connect_client["table"]] == CURRENT
    assert [tuple(r) for r in connect_client["path"]] == CURRENT
    assert [tuple(r) for r in connect_client["old"]] == VERSION_1


def test_spark_connect_writes_are_refused(connect_client, lake, lake_files, hive):
    refused = {
        name: (kind, re.sub(r" \(setup_cluster\.sh .*", "", message))
        for name, (kind, message) in connect_client["refused"].items()
    }
    assert refused == {
        "sql_drop": ("AnalysisException", f"read-only endpoint: DropTable {MESSAGE}"),
        "save_overwrite": (
            "AnalysisException",
            f"read-only endpoint: SaveIntoDataSourceCommand {MESSAGE}",
        ),
        "save_as_table": (
            "AnalysisException",
            f"read-only endpoint: CreateTableAsSelect {MESSAGE}",
        ),
        "write_to_append": ("AnalysisException", f"read-only endpoint: AppendData {MESSAGE}"),
    }
    assert hive_query(hive, f"SELECT store, name, sales FROM {SALES} ORDER BY store") == CURRENT
    assert _tree(lake) == lake_files


def test_status_and_a_second_start(endpoint):
    status = endpoint.sql_server("status")
    assert status.returncode == 0, status.stderr
    assert f"jdbc:hive2://{HOST}:{endpoint.port}" in status.stdout
    assert f"sc://{HOST}:{endpoint.connect_port}" in status.stdout
    assert "read-only" in status.stdout
    pid = (endpoint.server_dir / "server.pid").read_text()
    again = endpoint.sql_server("start", "--root", str(endpoint.root))
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert (endpoint.server_dir / "server.pid").read_text() == pid
    other = endpoint.sql_server("start", "--root", str(endpoint.root), "--allow-writes")
    assert other.returncode != 0
    assert "an endpoint with other settings is running" in other.stderr
