"""The `retail-lake` command as a user runs it: tables, history, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "retail-lake")
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=REPO, text=True, capture_output=True, timeout=600)


def test_tables_and_history_describe_the_lake(demo_lake):
    common = ("--profile", "test", "--root", demo_lake.root)
    tables = cli("tables", *common)
    assert tables.returncode == 0, tables.stderr[-2000:]
    lines = {line.split()[0]: line.split() for line in tables.stdout.splitlines()[2:]}
    assert lines["silver.store_daily_sales"][1:4] == ["silver", "1", "10936"]
    assert lines["gold.sales_forecasts"][3] == str(12 * 42 + 11 * 42)
    assert {
        "bronze.rossmann_sales_raw",
        "ops.job_runs",
        "ops.quality_results",
        "ops.model_metrics",
        "silver.quarantine",
    } <= set(lines)
    history = cli("history", "silver.store_daily_sales", *common)
    assert history.returncode == 0, history.stderr[-2000:]
    rows = [line.split()[:4] for line in history.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "0"]
    assert [r[3] for r in rows] == ["MERGE", "CREATE"]  # version, date, time, operation
    assert "numTargetRowsInserted=10936" in history.stdout


def test_errors_are_one_line_with_a_non_zero_exit(tmp_path):
    missing = cli("sql", "SELECT * FROM silver.nope", "--profile", "test", "--root", str(tmp_path))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("error: [TABLE_OR_VIEW_NOT_FOUND]")
    assert "Traceback" not in missing.stderr
    bad_key = cli("run", "ingest", "--profile", "test", "--set", "spark.mastr=x")
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip().startswith(
        "config error: --set spark.mastr: unknown key 'spark.mastr' (known here: app_name,"
    )
    assert len(bad_key.stderr.strip().splitlines()) == 1
    unknown = cli("run", "nope", "--profile", "test", "--root", str(tmp_path))
    assert unknown.returncode == 1
    assert "unknown job 'nope' (jobs: ingest, cleanse, features" in unknown.stderr
