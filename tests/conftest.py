"""One Spark session for the whole run (test profile: local[2], UI off, 2 shuffle partitions),
Delta configured, a temporary lake root per test where needed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RETAIL_LAKE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """A file of the real data sets, or a skip saying where it was looked for."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (set RETAIL_LAKE_SHARED_DATA)")
    return path


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


@pytest.fixture(scope="session")
def demo_lake(spark, tmp_path_factory):
    """The whole pipeline run once on the bundled demo data (shared by several tests)."""
    from retail_lake.config import load_config
    from retail_lake.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("demo_lake")
    cfg = load_config("test", [f"paths.root={root}"])  # landing "": the bundled demo data
    run_pipeline(cfg)
    return cfg
