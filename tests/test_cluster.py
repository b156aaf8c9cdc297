"""The Spark standalone cluster of `setup_cluster.sh`: a master and two workers on this host,
each worker in a network namespace of its own (`start --netns`, as root; on loopback
otherwise), so that they reach the master and the driver only over a network, as separate
hosts would. One worker is killed in the middle of a job, which still completes correctly.

`start` also starts the Hive metastore the cluster profile names (Derby, bound to loopback).
A job submitted the way `setup_cluster.sh` prints (the library shipped as the archive
`retail_lake.package` builds, from a directory that is not the checkout, PYTHONPATH cleared)
writes bronze tables and registers them there once; the SQL endpoint started on that
metastore (with --allow-writes) answers for them by name and creates a table of its own;
nobody registered a table twice. `stop` leaves no process behind, the metastore included.

Self-contained: it starts its own cluster on non-default ports, with pid files and logs
under a temporary RETAIL_LAKE_HOME, and the real venv and Ivy cache (no downloads).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import hive_query

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "retail-lake"
VENV = Path(os.environ.get("RETAIL_LAKE_VENV", CACHE / "venv"))
IVY_DIR = Path(os.environ.get("RETAIL_LAKE_IVY_DIR", CACHE / "ivy"))
CLASS_ARCHIVE = Path(os.environ.get("RETAIL_LAKE_CLASS_ARCHIVE", CACHE / "jvm" / "classes.jsa"))
JVM_DIR = Path(os.environ.get("RETAIL_LAKE_JVM_DIR", CACHE / "jvm"))
DEMO_DATA = REPO / "lib" / "retail_lake" / "demo_data"
SALES_FILE = DEMO_DATA / "rossmann" / "train.csv.gz"

# Namespaces need root and iproute2; the test's own subnet, bridge and names.
NETNS = os.geteuid() == 0 and shutil.which("ip") is not None
SUBNET, BRIDGE, PREFIX = "10.213.77", "rltbr0", "rlt-w"
HOST = f"{SUBNET}.1" if NETNS else "127.0.0.1"
PORT, MASTER_UI, WORKER_UI = 17077, 18080, 18081
MASTER = f"spark://{HOST}:{PORT}"
# The metastore listens on loopback only, whatever the master's address.
METASTORE_PORT = 19083
METASTORE = f"thrift://127.0.0.1:{METASTORE_PORT}"
SQL_PORT, CONNECT_PORT = 19010, 19015  # the SQL endpoint's JDBC and Spark Connect
DAEMON_PATTERNS = (
    rf"org\.apache\.spark\.deploy\.master\.Master .*--port {PORT}( |$)",
    rf"org\.apache\.spark\.deploy\.worker\.Worker .*spark://{HOST}:{PORT}( |$)",
    rf"retail_lake\.LoopbackMetastore 127\.0\.0\.1 {METASTORE_PORT}$",
)

# Imports retail_lake before any Spark context exists (as a job does), then asks an executor.
# Then a job whose tasks wait (each marks its start in `marker`) until `marker/go` exists:
# the test kills a worker while both executors hold a task, then lets them go.
PROBE = """\
import json, os, sys, time

import retail_lake
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("retail-lake probe").config("spark.ui.enabled", "false") \\
    .getOrCreate()
executors = spark.sparkContext.parallelize([0, 1], 2).map(
    lambda _: __import__("retail_lake").__file__).collect()
pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
mapped = [line.split()[-1] for line in open(f"/proc/{pid}/maps") if line.rstrip().endswith(".jsa")]
print("PROBE " + json.dumps(
    {"driver": retail_lake.__file__, "executors": executors, "archives": sorted(set(mapped))}),
    flush=True)
marker = sys.argv[1]

def work(i):
    open(os.path.join(marker, f"started-{i}-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(marker, "go")):
        time.sleep(0.1)
    return sum(range(i * 1000, (i + 1) * 1000))

print("LOSS " + str(spark.sparkContext.parallelize(range(8), 8).map(work).sum()), flush=True)
spark.stop()
"""


def _run(
    cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: int, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{shlex.join(cmd)} exited {proc.returncode}\n--- stdout\n"
            f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


def _cluster_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RETAIL_LAKE_HOME": str(home),  # pid files and logs: this test's own
            "RETAIL_LAKE_VENV": str(VENV),  # the installed stack and its Ivy cache: the real ones
            "RETAIL_LAKE_IVY_DIR": str(IVY_DIR),
            "RETAIL_LAKE_CLASS_ARCHIVE": str(CLASS_ARCHIVE),
            "RETAIL_LAKE_JVM_DIR": str(JVM_DIR),  # the jar of jvm/src: compiled once
            "RETAIL_LAKE_METASTORE_PORT": str(METASTORE_PORT),
            "SPARK_MASTER_HOST": HOST,
            "SPARK_MASTER_PORT": str(PORT),
            "SPARK_MASTER_WEBUI_PORT": str(MASTER_UI),
            "SPARK_WORKER_WEBUI_PORT": str(WORKER_UI),
            "SPARK_WORKER_CORES": "1",
            "SPARK_WORKER_MEMORY": "1g",
            "RETAIL_LAKE_NETNS_SUBNET": SUBNET,
            "RETAIL_LAKE_NETNS_BRIDGE": BRIDGE,
            "RETAIL_LAKE_NETNS_PREFIX": PREFIX,
        }
    )
    return env


START = ("start", "--workers", "2", *(("--netns",) if NETNS else ()))


def _network_leftovers() -> list[str]:
    """The test's namespaces and bridge, if any are left."""
    if not NETNS:
        return []
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [n.split()[0] for n in names.splitlines() if n.startswith(PREFIX)]
    bridge = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, text=True)
    return left + ([BRIDGE] if bridge.returncode == 0 else [])


def _setup_cluster(
    *args: str, env: dict[str, str], check: bool = True, timeout: int = 240
) -> subprocess.CompletedProcess:
    return _run(
        ["bash", str(REPO / "setup_cluster.sh"), *args],
        env=env, cwd=REPO, timeout=timeout, check=check,
    )  # fmt: skip


def _metastore_pid(env: dict[str, str]) -> int:
    return int((Path(env["RETAIL_LAKE_HOME"]) / "metastore" / "metastore.pid").read_text())


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def _metastore_tables(database: Path) -> list[tuple[str, int]]:
    """(database.table, creation time in epoch seconds) of every table the stopped
    metastore's Derby database holds, read with Derby's `ij` from pyspark's jars."""
    from pyspark.find_spark_home import _find_spark_home

    script = database.parent / "tables.sql"
    script.write_text(
        f"CONNECT 'jdbc:derby:{database}';\n"
        "SELECT 'TABLE ' || d.NAME || '.' || t.TBL_NAME || ' ' || TRIM(CHAR(t.CREATE_TIME)) "
        "FROM APP.TBLS t JOIN APP.DBS d ON t.DB_ID = d.DB_ID;\n"
    )
    out = _run(
        ["java", "-cp", os.path.join(_find_spark_home(), "jars", "*"),
         f"-Dderby.system.home={database.parent}", "org.apache.derby.tools.ij", str(script)],
        env=dict(os.environ), cwd=database.parent, timeout=120,
    ).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.startswith("TABLE ")]
    return [(name, int(created)) for _, name, created in rows]


def _pids(cluster_dir: Path) -> dict[str, int]:
    return {f.stem: int(f.read_text().strip()) for f in sorted(cluster_dir.glob("*.pid"))}


def _live_processes() -> list[tuple[int, int, str]]:
    """(pid, session id, command line) of every process that is not a zombie."""
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        pid, sid, stat, *args = line.split(None, 3)
        if not stat.startswith("Z"):
            rows.append((int(pid), int(sid), args[0] if args else ""))
    return rows


def _cluster_leftovers(pids: dict[str, int]) -> list[str]:
    """Processes of the cluster still running: the daemons and their sessions' members."""
    sessions = set(pids.values())
    left = [
        f"{pid} {args[:160]}"
        for pid, sid, args in _live_processes()
        if pid in sessions or sid in sessions
    ]
    for pattern in DAEMON_PATTERNS:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        left += [f"{pid} (matches {pattern})" for pid in found.stdout.split()]
    return left


def _master_state() -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(f"http://{HOST}:{MASTER_UI}/json/", timeout=10) as resp:
        return json.load(resp)


def _printed_submit(start_output: str) -> tuple[dict[str, str], list[str]]:
    """The environment and the spark-submit command (up to the job file) that start printed."""
    lines = start_output.splitlines()
    first = next(i for i, line in enumerate(lines) if "bin/spark-submit " in line)
    text = ""
    for line in lines[first:]:
        text += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            break
    tokens = shlex.split(text)
    env = {}
    while "=" in tokens[0] and not tokens[0].startswith("-"):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    job = next(i for i, t in enumerate(tokens) if t.endswith("jobs/pipeline.py"))
    return env, tokens[:job]


def _expected_sales_rows() -> tuple[int, int]:
    """(well-formed data lines, structurally broken lines) of the bundled sales file."""
    with gzip.open(SALES_FILE, "rt", encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    width = len(next(csv.reader([lines[0]])))
    good = sum(1 for line in lines[1:] if len(next(csv.reader([line]))) == width)
    return good, len(lines) - 1 - good


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A master and two workers (1 core, 1g each); stopped at the end even if a test failed."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("java not found: the standalone cluster needs Java 17+ (JAVA_HOME or PATH)")
    if not (VENV / "bin" / "spark-submit").exists():
        pytest.skip(f"no installed stack at {VENV}: run ./setup_cluster.sh install")
    if not list((IVY_DIR / "jars").glob("io.delta_delta-spark_2.13-*.jar")):
        pytest.skip(f"the Delta jars are not in {IVY_DIR}: run ./setup_cluster.sh install")
    home = tmp_path_factory.mktemp("retail-lake-home")
    env = _cluster_env(home)
    cluster_dir = home / "cluster"
    try:
        started = _setup_cluster(*START, env=env)
        yield {
            "env": env,
            "dir": cluster_dir,
            "output": started.stdout + started.stderr,
            "pids": _pids(cluster_dir),
        }
    finally:
        pids = list(_pids(cluster_dir).values())
        with contextlib.suppress(OSError, ValueError):
            pids.append(_metastore_pid(env))
        _setup_cluster("sql-server", "stop", env=env, check=False)  # if a test left it
        _setup_cluster("stop", env=env, check=False)
        for pid in pids:  # only if stop failed: never leave the JVMs running
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_job_runs_on_cluster_from_archive_and_stop_leaves_nothing(cluster, tmp_path):
    env, cluster_dir = cluster["env"], cluster["dir"]
    pids = cluster["pids"]
    assert set(pids) == {"master", "worker-1", "worker-2"}
    assert _master_state()["aliveworkers"] == 2

    # start is idempotent: the same daemons stay.
    again = _setup_cluster(*START, env=env)
    assert "already running" in again.stderr
    assert _pids(cluster_dir) == pids
    status = _setup_cluster("status", env=env).stdout
    assert f"master {MASTER}: 2 worker(s) alive" in status
    # The metastore, on loopback only (the master's address does not answer on its port).
    assert f"metastore: running (pid {_metastore_pid(env)}) at {METASTORE}" in status
    assert _port_open("127.0.0.1", METASTORE_PORT)
    if NETNS:
        assert not _port_open(HOST, METASTORE_PORT)
    assert f"--set spark.metastore_uri={METASTORE}" in cluster["output"]

    # The archive: the package as installed plus the checkout's conf as retail_lake/_conf.
    work = tmp_path / "elsewhere"  # not the checkout: no conf/, no lib/ on any path
    work.mkdir()
    archive = Path(
        _run(
            [
                str(VENV / "bin" / "python"),
                "-m",
                "retail_lake.package",
                "--out",
                str(tmp_path / "dist" / "retail_lake.zip"),
            ],
            env=env,
            cwd=work,
            timeout=120,
        ).stdout.strip()
    )
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert {
            "retail_lake/__init__.py",
            "retail_lake/cli.py",
            "retail_lake/_conf/base.yaml",
            "retail_lake/_conf/profiles/cluster.yaml",
        } <= names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    submit_env, submit = _printed_submit(cluster["output"])
    assert submit[submit.index("--master") + 1] == MASTER
    submit[submit.index("--py-files") + 1] = str(archive)
    job_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "RETAIL_LAKE_CONF_DIR", "RETAIL_LAKE_ROOT")
    }
    job_env.update(submit_env)
    # No RETAIL_LAKE_CONF_DIR and no conf/ in the working folder: the configuration is the
    # archive's own `retail_lake/_conf`.

    if NETNS:  # each worker in a network namespace of its own, at its own address
        mine = os.readlink("/proc/self/ns/net")
        spaces = {os.readlink(f"/proc/{pids[w]}/ns/net") for w in ("worker-1", "worker-2")}
        assert len(spaces) == 2 and mine not in spaces
        hosts = sorted(w["host"] for w in _master_state()["workers"])
        assert hosts == [f"{SUBNET}.2", f"{SUBNET}.3"]
        assert f"spark.driver.host={HOST}" in submit  # the driver listens on the bridge

    # Driver and executors import retail_lake from the archive, not the editable checkout;
    # then a worker is lost in the middle of a job (its JVM and executor killed, as a machine
    # that dies), and the job completes on the other with the right result.
    (work / "probe.py").write_text(PROBE)
    marker = tmp_path / "marker"
    marker.mkdir()
    proc = subprocess.Popen(
        [*submit, "probe.py", str(marker)], env=job_env, cwd=work, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while len(list(marker.glob("started-*"))) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the tasks did not start"
            time.sleep(0.2)
        os.killpg(pids["worker-1"], signal.SIGKILL)
        (marker / "go").touch()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]
    assert f"LOSS {sum(range(8000))}" in out.splitlines()
    line = next(x for x in out.splitlines() if x.startswith("PROBE "))
    found = json.loads(line.removeprefix("PROBE "))
    for path in [found["driver"], *found["executors"]]:
        assert Path(path).parts[-3:] == ("retail_lake.zip", "retail_lake", "__init__.py"), path
        assert not path.startswith(str(REPO)), path
    assert found["driver"] == f"{archive}/retail_lake/__init__.py"
    assert len(found["executors"]) == 2
    # The printed command starts the driver from install's class archive, when there is one.
    if CLASS_ARCHIVE.is_file():
        assert str(CLASS_ARCHIVE.resolve()) in found["archives"]
    else:
        assert "--driver-java-options" not in submit

    # The ingest job, submitted as printed, with the job file outside the checkout too
    # (on the Rossmann demo files: the other sources add time, not evidence).
    lake = tmp_path / "lake"
    rossmann_only = tmp_path / "landing"
    rossmann_only.mkdir()
    (rossmann_only / "rossmann").symlink_to(DEMO_DATA / "rossmann", target_is_directory=True)
    shutil.copy(REPO / "jobs" / "ingest.py", work / "ingest.py")
    ingest = _run(
        [
            *submit,
            "ingest.py",
            "--profile",
            "cluster",
            "--set",
            f"spark.master={MASTER}",
            "--set",
            f"paths.root={lake}",
            "--set",
            f"paths.landing={rossmann_only}",
            "--set",
            "spark.shuffle_partitions=2",
            "--set",
            f"spark.metastore_uri={METASTORE}",
            # the profile's 2g executors do not fit the test's 1g workers
            "--set",
            "spark.conf.spark.executor.memory=1g",
        ],
        env=job_env,
        cwd=work,
        timeout=600,
    )
    # spark-submit passes the Python driver's stderr (the job's log) on to its stdout.
    assert "ingest succeeded" in ingest.stdout + ingest.stderr
    apps = {a["name"]: a for a in _master_state()["completedapps"]}
    assert apps["retail-lake ingest"]["state"] == "FINISHED"
    assert apps["retail-lake probe"]["state"] == "FINISHED"

    ingested = time.time()

    # The SQL endpoint on the cluster's metastore: the job's tables answer by name (the
    # endpoint finds them registered); with --allow-writes it creates a table of its own.
    good, broken = _expected_sales_rows()
    endpoint_env = {
        **env,
        "RETAIL_LAKE_SQL_PORT": str(SQL_PORT),
        "RETAIL_LAKE_CONNECT_PORT": str(CONNECT_PORT),
    }
    started = _setup_cluster(
        "sql-server", "start", "--root", str(lake), "--metastore", METASTORE, "--allow-writes",
        env=endpoint_env, timeout=300,
    )  # fmt: skip
    try:
        assert f"catalog:       Hive metastore {METASTORE}" in started.stdout
        from pyhive import hive

        connection = hive.connect(host="127.0.0.1", port=SQL_PORT, username="analyst")
        try:
            # Another process (the endpoint) reads the job's tables by name.
            query = (
                "SELECT (SELECT count(*) FROM bronze.rossmann_sales_raw) AS bronze, "
                "(SELECT count(*) FROM silver.quarantine WHERE source = 'rossmann_sales' "
                "AND stage = 'ingest') AS quarantined, "
                "(SELECT count(*) FROM ops.job_runs WHERE job = 'ingest' "
                "AND status = 'succeeded' AND profile = 'cluster') AS runs"
            )
            assert hive_query(connection, query) == [(good, broken, 1)]
            # Started with --allow-writes, it creates a table of its own (registered there).
            notes = tmp_path / "notes"
            hive_query(connection, "CREATE TABLE default.analyst_notes (note STRING) USING DELTA "
                                   f"LOCATION '{notes}'")  # fmt: skip
            hive_query(connection, "INSERT INTO default.analyst_notes VALUES ('checked')")
            assert hive_query(connection, "SELECT note FROM default.analyst_notes") == [
                ("checked",)
            ]
        finally:
            connection.close()
    finally:
        _setup_cluster("sql-server", "stop", env=endpoint_env, check=False)

    # stop: nothing of the cluster is left, executors and Python workers included.
    stopped = _setup_cluster("stop", env=env)
    assert "nothing of" in stopped.stderr
    assert _cluster_leftovers(pids) == []
    assert "metastore stopped" in stopped.stderr
    assert not _port_open("127.0.0.1", METASTORE_PORT)

    # Each table registered once, by the job that created it before it finished (the
    # endpoint's start registered none again); the endpoint's own table after.
    registered = _metastore_tables(Path(env["RETAIL_LAKE_HOME"]) / "metastore" / "metastore_db")
    names = [name for name, _ in registered]
    assert len(names) == len(set(names)), names
    assert {"bronze.rossmann_sales_raw", "silver.quarantine", "ops.job_runs"} <= set(names)
    for name, created in registered:
        if name == "default.analyst_notes":
            assert created > ingested
        else:
            assert created <= ingested, name
    assert _network_leftovers() == []
    assert not list(cluster_dir.glob("*.pid"))
    assert "no cluster started" in _setup_cluster("status", env=env).stdout
