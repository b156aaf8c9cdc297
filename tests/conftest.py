"""One Spark session for the whole run (test profile: local[2], UI off, 2 shuffle partitions,
no Data Docs, training in process), Delta configured, a temporary lake root per test where
needed, and the lakes that several tests read, each built once per session.

Markers are applied here as well as in the test files, so the groups stay honest:
- `realdata`: the test (or one of its fixtures) reads `../shared/data` through
  `shared_data()`; found from the source of the test and its fixtures at collection, and
  checked again at run time (a test that reads the real data without the marker fails).
- `pipeline`: the test reads the demo lake, which the whole pipeline builds.
- `slow`: every `realdata`, `pipeline`, `horovod`, `cluster`, `sqlserver` and `notebooks`
  test is also `slow`, so `-m "not slow"` is the inner loop: no real data, no pipeline, no
  Horovod launch, no cluster, no SQL endpoint, no notebook kernel.

Shared lakes are read-only for the tests that use them: a test that must write (a re-run, a
failing job) copies the lake with `copy_lake` or makes its own small one.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# Keys the tests' lakes generate stay in a folder of the session (and child processes').
_KEYS = tempfile.mkdtemp(prefix="retail-lake-test-keys-")
os.environ.setdefault("RETAIL_LAKE_KEY_DIR", _KEYS)
atexit.register(shutil.rmtree, _KEYS, ignore_errors=True)
SHARED_DATA = Path(os.environ.get("RETAIL_LAKE_SHARED_DATA", REPO.parent / "shared" / "data"))

# The test (pytest item) running now, so that shared_data() can check its markers.
_CURRENT: ContextVar[Any] = ContextVar("current_test", default=None)
IMPLIES_SLOW = (
    "realdata",
    "pipeline",
    "horovod",
    "cluster",
    "sqlserver",
    "notebooks",
    "gx",
    "airflow",
)
# The shared lakes' builds (the demo's two pipeline runs, two real files) take 6-10 minutes
# beside other tests.
LAKE_BUILD_TIMEOUT = 1800


def shared_data(*parts: str) -> Path:
    """A file of the real data sets, or a skip saying where it was looked for.

    Only tests marked `realdata` may call it (conftest marks them from their source).
    """
    item = _CURRENT.get()
    if item is not None and item.get_closest_marker("realdata") is None:
        pytest.fail(
            f"{item.nodeid} reads {SHARED_DATA.joinpath(*parts)} but is not marked realdata: "
            "call shared_data() from the test or one of its fixtures"
        )
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (set RETAIL_LAKE_SHARED_DATA)")
    return path


def _reads_shared_data(item: pytest.Item) -> bool:
    """Whether the test function or any fixture it uses calls shared_data()."""
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for defs in info.name2fixturedefs.values():
            funcs.extend(d.func for d in defs)
    for func in funcs:
        if func is None:
            continue
        try:
            source = inspect.getsource(func)
        except (OSError, TypeError):
            continue
        if "shared_data(" in source:
            return True
    return False


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="run the collected tests in a random order drawn from SEED (tests must not "
        "depend on each other's order or side effects)",
    )


def pytest_collection_modifyitems(config, items) -> None:
    seed = config.getoption("--shuffle")
    if seed is not None:
        random.Random(seed).shuffle(items)
    else:
        # The shared lakes' tests last, in the order the lakes are built: their process
        # (started when collection ends) builds them beside the tests that come first. Tests
        # marked airflow (processes of their own: Airflow, spark-submit) after those, when
        # the builds are done: beside a build each took twice as long (222 s against 130).
        items.sort(
            key=lambda i: (
                i.get_closest_marker("airflow") is not None,
                max(map(SHARED_LAKES.index, _shared_lakes(i)), default=-1),
            )
        )
    for item in items:
        if _reads_shared_data(item):
            item.add_marker(pytest.mark.realdata)
        if "demo_lake" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pipeline)
        if any(item.get_closest_marker(m) for m in IMPLIES_SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _current_test(request):
    token = _CURRENT.set(request.node)
    yield
    _CURRENT.reset(token)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def spark(session_root):
    from retail_lake.config import load_config
    from retail_lake.session import build_session

    os.chdir(REPO)
    cfg = load_config("test", [f"paths.root={session_root}"])
    session = build_session(cfg)
    yield session
    session.stop()


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "lake"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cfg(root):
    from retail_lake.config import load_config

    return load_config("test", [f"paths.root={root}"])


@pytest.fixture
def lake(spark, root):
    from retail_lake.lake import Lake

    return Lake(spark, str(root))


@pytest.fixture
def run_cli(spark, capsys):
    """Calls cli.main in this process; returns (exit code, stdout, stderr)."""
    import logging

    from retail_lake import cli

    kept = logging.getLogger("retail_lake").level

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    yield call
    logging.getLogger("retail_lake").setLevel(kept)
    logging.getLogger("SQLQueryContextLogger").disabled = False


def hive_query(connection: Any, sql: str) -> list[tuple]:
    """The rows of `sql` run on a HiveServer2 (PyHive) connection; [] for a statement."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    finally:
        cursor.close()


def copy_lake(source: str | Path, target: Path) -> Path:
    """A private copy of a shared lake to write to (Delta logs hold relative paths, so the
    copy is a lake of its own). MLflow's store is left out: it names the source's artifact
    folder, so the copy starts a store of its own."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("mlflow"))
    return target


@dataclass
class DemoLake:
    """The demo lake after two pipeline runs, and what the second run changed.

    `versions_before` / `versions_after`: every data table's Delta version before and after
    the second run; `unit_states`: (pipeline run, sorted (unit, status)) for both runs.
    """

    cfg: Any
    versions_before: dict[str, int] = field(default_factory=dict)
    versions_after: dict[str, int] = field(default_factory=dict)
    pipeline_runs: list[dict[str, Any]] = field(default_factory=list)
    unit_states: list[list[tuple[str, str]]] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.cfg.root


def _shared_lakes(item: pytest.Item) -> list[str]:
    """The shared lakes (tests/lake_builds.py) the test reads, in the order they are built."""
    names = getattr(item, "fixturenames", ())
    module = getattr(getattr(item, "module", None), "__name__", "")
    needs = {
        "online_retail_real": module.endswith("test_online_retail_real"),
        "fashion_real": "real_fashion_lake" in names,
        "demo": "demo_lake" in names,
        "rossmann_real": "real_rossmann_lake" in names,
        "geography_real": "real_geography_lake" in names,
        "airflow_backfill": "airflow_backfill" in names,
    }
    return [lake for lake in SHARED_LAKES if needs[lake]]


# The shared lakes in the order tests/lake_builds.py builds them, and the real data each
# reads (none: the bundled demo data).
SHARED_LAKES = (
    "online_retail_real",
    "fashion_real",
    "demo",
    "rossmann_real",
    "geography_real",
    "airflow_backfill",
)
SHARED_LAKE_SOURCES = {
    "online_retail_real": ("online_retail",),
    "fashion_real": ("fashion_mnist",),
    "demo": (),
    "rossmann_real": ("rossmann",),
    "geography_real": ("geonames_cities", "starbucks_stores"),
    "airflow_backfill": (),
}


@dataclass
class _LakeBuilds:
    """The process building the shared lakes (tests/lake_builds.py) and its folder."""

    process: subprocess.Popen
    folder: Path

    def wait(self, name: str) -> tuple[Path, dict]:
        """(the lake's root, its build's result) once built; fails the test if it cannot be."""
        target = self.folder / name
        deadline = time.monotonic() + LAKE_BUILD_TIMEOUT
        while not (target / "result.json").exists():
            if (target / "failed").exists() or self.process.poll() is not None:
                if (target / "result.json").exists():
                    break
                log = (self.folder / "build.log").read_text(errors="replace")
                pytest.fail(f"building the {name} lake failed:\n{log[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the {name} lake was not built in {LAKE_BUILD_TIMEOUT} s")
            time.sleep(0.5)
        return target / "lake", json.loads((target / "result.json").read_text())


_BUILDS: list[_LakeBuilds] = []


def pytest_collection_finish(session) -> None:
    """Starts building the shared lakes the selected tests read (real data that is there)."""
    needed = {lake for item in session.items for lake in _shared_lakes(item)}
    names = [
        lake
        for lake in SHARED_LAKES
        if lake in needed and all((SHARED_DATA / d).exists() for d in SHARED_LAKE_SOURCES[lake])
    ]
    if not names:
        return
    folder = Path(tempfile.mkdtemp(prefix="retail-lake-shared-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    script = REPO / "tests" / "lake_builds.py"
    with open(folder / "build.log", "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(script), str(folder), str(SHARED_DATA), *names],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _BUILDS.append(_LakeBuilds(process, folder))


def pytest_sessionfinish(session, exitstatus) -> None:
    for build in _BUILDS:  # a run stopped early (-x, ^C) leaves no build behind
        if build.process.poll() is None:
            os.killpg(build.process.pid, signal.SIGKILL)
            build.process.wait()


def shared_lake(name: str) -> tuple[Path, dict]:
    """The root and build result of a shared lake (tests/lake_builds.py)."""
    if not _BUILDS:
        pytest.fail(f"the {name} lake's build was not started (pytest_collection_finish)")
    return _BUILDS[0].wait(name)


@pytest.fixture(scope="session")
def demo_lake(spark) -> DemoLake:
    """The whole pipeline run twice on the bundled demo data, shared read-only.

    Built in a process of its own from the start of the session (tests/lake_builds.py):
    the second run (nothing new landed) happens there, not in a test, so every test sees the
    same lake whatever the order: versions and unit states of both runs are recorded.
    """
    from retail_lake.config import load_config
    from retail_lake.lake import Lake
    from retail_lake.runner import job_runs

    root, versions = shared_lake("demo")
    cfg = load_config("test", [f"paths.root={root}"])
    lake = Lake(spark, cfg.root)
    demo = DemoLake(cfg, **versions)
    runs = job_runs(spark, cfg)
    demo.pipeline_runs = [r.asDict() for r in runs.where("job = 'pipeline'").collect()]
    steps = runs.select("run_id", "parent_run_id")
    states = lake.read("ops.unit_states").join(steps, "run_id").collect()
    demo.unit_states = [
        sorted((s["unit"], s["status"]) for s in states if s["parent_run_id"] == r["run_id"])
        for r in demo.pipeline_runs
    ]
    return demo


@dataclass
class RealLake:
    """A lake built once from real files: its config, and what its fixture ran."""

    cfg: Any
    runs: dict[str, Any] = field(default_factory=dict)  # job -> run id
    rerun_writes: dict[str, dict] = field(default_factory=dict)  # job -> writes of a re-run

    @property
    def root(self) -> str:
        return self.cfg.root


@pytest.fixture(scope="session")
def real_fashion_lake(spark) -> RealLake:
    """All 70,000 real Fashion-MNIST images ingested and cleansed once, then both jobs
    re-run with nothing new (their writes recorded); shared read-only. Built in a process
    of its own from the start of the session (tests/lake_builds.py)."""
    from tests.lake_builds import config

    shared_data("fashion_mnist")  # a skip when the real data is not there
    root, built = shared_lake("fashion_real")
    return RealLake(config(root.parent), runs=built["runs"], rerun_writes=built["rerun_writes"])


@pytest.fixture(scope="session")
def real_rossmann_lake(spark) -> RealLake:
    """The real Rossmann files through the forecasting pipeline (ingest, cleanse, features,
    train_forecaster, forecast; 10 stores, 3 epochs: `lake_builds.ROSSMANN_REAL`), shared
    read-only. Built in a process of its own from the start of the session."""
    from tests.lake_builds import ROSSMANN_REAL, config

    shared_data("rossmann", "train.csv.gz")  # a skip when the real data is not there
    shared_data("rossmann", "store.csv.gz")
    root, _ = shared_lake("rossmann_real")
    return RealLake(config(root.parent, *ROSSMANN_REAL))


@dataclass
class GeographyLake(RealLake):
    """The real geography lake and what its re-runs did (`lake_builds.geography_real`)."""

    again: dict[str, dict] = field(default_factory=dict)  # job -> its re-run's facts


@pytest.fixture(scope="session")
def real_geography_lake(spark) -> GeographyLake:
    """The real GeoNames and Starbucks files ingested and cleansed (cleanse re-run with
    nothing new), then features and score_locations on four countries (score_locations
    re-run): `lake_builds.geography_real`. Shared read-only; built in a process of its own."""
    from tests.lake_builds import config

    shared_data("geonames_cities")  # a skip when the real data is not there
    shared_data("starbucks_stores")
    root, built = shared_lake("geography_real")
    return GeographyLake(config(root.parent), runs=built["runs"], again=built["again"])


@dataclass
class AirflowBackfill:
    """A small Online Retail lake whose features step `airflow dags test` ran for each of
    `lake_builds.AIRFLOW_DAYS` (`dags_test`: each run's day, exit code and output)."""

    cfg: Any
    dags_test: list[dict[str, Any]]


@pytest.fixture(scope="session")
def airflow_backfill(spark) -> AirflowBackfill:
    """`lake_builds.airflow_backfill`, run in the builds' process from the start of the
    session (Airflow and each task's spark-submit are processes of their own)."""
    from tests.lake_builds import config

    root, built = shared_lake("airflow_backfill")
    return AirflowBackfill(config(root.parent), built["dags_test"])
