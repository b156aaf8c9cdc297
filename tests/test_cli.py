"""The `retail-lake` command: tables, history and one-line errors, called in process
(`cli.main([...])`, the same code the console script runs, on the test session), and once as
a user runs it, in a process of its own, for its exit codes."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from retail_lake import cli

CLI = str(Path(sys.executable).parent / "retail-lake")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_cli(spark, capsys):
    """Calls cli.main in this process; returns (exit code, stdout, stderr)."""
    kept = logging.getLogger("retail_lake").level

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    yield call
    logging.getLogger("retail_lake").setLevel(kept)
    logging.getLogger("SQLQueryContextLogger").disabled = False


def test_tables_and_history_describe_the_lake(demo_lake, run_cli):
    common = ("--profile", "test", "--root", demo_lake.root)
    code, out, err = run_cli("tables", *common)
    assert code == 0, err[-2000:]
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["silver.store_daily_sales"][1:4] == ["silver", "1", "10936"]
    assert lines["gold.sales_forecasts"][3] == str(12 * 42 + 11 * 42)
    assert {
        "bronze.rossmann_sales_raw",
        "ops.job_runs",
        "ops.quality_results",
        "ops.model_metrics",
        "silver.quarantine",
    } <= set(lines)
    code, out, err = run_cli("history", "silver.store_daily_sales", *common)
    assert code == 0, err[-2000:]
    rows = [line.split()[:4] for line in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "0"]
    assert [r[3] for r in rows] == ["MERGE", "CREATE"]  # version, date, time, operation
    assert "numTargetRowsInserted=10936" in out


def test_history_names_the_run_of_each_commit(spark, tmp_path, run_cli):
    from retail_lake.lake import Lake
    from retail_lake.tables import REGISTRY

    lake = Lake(spark, str(tmp_path))
    schema = (
        "store int, store_type string, assortment string, competition_distance_m double, "
        "competition_open_since date, promo2 boolean, promo2_since date, "
        "promo2_months array<int>, _source_file string, _line_number bigint"
    )
    for run_id, store_type in (("run-a", "a"), ("run-b", "b")):
        row = (1, store_type, "a", 100.0, None, False, None, [], "store.csv", 2)
        lake.write(spark.createDataFrame([row], schema), REGISTRY["silver.stores"], run_id)
    code, out, err = run_cli(
        "history", "silver.stores", "--profile", "test", "--root", str(tmp_path)
    )
    assert code == 0, err[-2000:]
    rows = [line.split() for line in out.splitlines()[2:]]
    # version, date, time, operation (CREATE TABLE is two words), run id: newest first; the
    # table's creation carries none.
    run_ids = [next(t for t in r[4:6] if t == "-" or t.startswith("run-")) for r in rows]
    assert [(r[0], r[3], run_id) for r, run_id in zip(rows, run_ids, strict=True)] == [
        ("2", "MERGE", "run-b"),
        ("1", "MERGE", "run-a"),
        ("0", "CREATE", "-"),
    ]


def test_a_failing_query_is_one_line_with_exit_status_1(tmp_path, run_cli):
    code, _, err = run_cli(
        "sql", "SELECT * FROM silver.nope", "--profile", "test", "--root", str(tmp_path)
    )
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: [TABLE_OR_VIEW_NOT_FOUND]")
    assert "Traceback" not in err


@pytest.mark.slow
def test_the_console_script_exits_with_one_line_errors(tmp_path):
    """The installed `retail-lake` script in a process of its own: exit 2 for a config
    error, 1 for a failed command, one line each (neither starts a JVM)."""

    def cli_process(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], cwd=REPO, text=True, capture_output=True, timeout=300)

    bad_key = cli_process("run", "ingest", "--profile", "test", "--set", "spark.mastr=x")
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip().startswith(
        "config error: --set spark.mastr: unknown key 'spark.mastr' (known here: app_name,"
    )
    assert len(bad_key.stderr.strip().splitlines()) == 1
    unknown = cli_process("run", "nope", "--profile", "test", "--root", str(tmp_path))
    assert unknown.returncode == 1
    assert "unknown job 'nope' (jobs: ingest, cleanse, features" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1 and "Traceback" not in unknown.stderr
