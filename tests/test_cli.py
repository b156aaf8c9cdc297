"""The `retail-lake` command: tables, history and one-line errors, called in process
(`cli.main([...])`, the same code the console script runs, on the test session), and once as
a user runs it, in a process of its own, for its exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "retail-lake")
REPO = Path(__file__).resolve().parents[1]
STORES_SCHEMA = (
    "store int, store_type string, assortment string, competition_distance_m double, "
    "competition_open_since date, promo2 boolean, promo2_since date, "
    "promo2_months array<int>, _source_file string, _line_number bigint"
)


def stores_lake(spark, root: Path, stores: int):
    from retail_lake.lake import Lake
    from retail_lake.registry import CONTRACTS

    lake = Lake(spark, str(root))
    rows = [(i, "a", "a", 100.0, None, False, None, [], "store.csv", i + 1) for i in range(stores)]
    lake.write(spark.createDataFrame(rows, STORES_SCHEMA), CONTRACTS["silver.stores"], "run-a")
    return lake


def test_tables_and_history_describe_the_lake(demo_lake, run_cli):
    common = ("--profile", "test", "--root", demo_lake.root)
    code, out, err = run_cli("tables", *common)
    assert code == 0, err[-2000:]
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    # Version 1: two files, fewer than maintain.min_files: the pipeline's maintain left it.
    assert lines["silver.store_daily_sales"][1:4] == ["silver", "1", "10936"]
    assert lines["gold.sales_forecasts"][3] == str(12 * 42 + 11 * 42)
    assert {
        "bronze.rossmann_sales_raw",
        "ops.job_runs",
        "ops.quality_results",
        "ops.model_metrics",
        "silver.quarantine",
    } <= set(lines)
    # Read without Spark (delta-rs), the same as Spark's own reading of every log.
    code, by_spark, err = run_cli("tables", "--spark", *common)
    assert code == 0, err[-2000:]
    assert out == by_spark
    code, out, err = run_cli("history", "silver.store_daily_sales", *common)
    assert code == 0, err[-2000:]
    rows = [line.split()[:4] for line in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "0"]
    assert [r[3] for r in rows] == ["MERGE", "CREATE"]  # version, date, time, op
    assert "numTargetRowsInserted=10936" in out


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_history_names_the_run_of_each_commit(spark, tmp_path, run_cli):
    from retail_lake.lake import Lake
    from retail_lake.registry import CONTRACTS

    lake = Lake(spark, str(tmp_path))
    for run_id, store_type in (("run-a", "a"), ("run-b", "b")):
        row = (1, store_type, "a", 100.0, None, False, None, [], "store.csv", 2)
        lake.write(spark.createDataFrame([row], STORES_SCHEMA), CONTRACTS["silver.stores"], run_id)
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


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_tables_counts_by_a_scan_only_what_file_statistics_cannot(spark, tmp_path, run_cli):
    from retail_lake.delta_log import read_lake

    lake = stores_lake(spark, tmp_path, 3)
    path = lake.location("silver.stores")
    assert read_lake(str(tmp_path))["silver.stores"].rows == 3
    # A delete marked in a deletion vector leaves the file's numRecords at 3: Spark counts.
    spark.sql(
        f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = true)"
    )
    spark.sql(f"DELETE FROM delta.`{path}` WHERE store = 1")
    assert read_lake(str(tmp_path)) == {"silver.stores": None}
    code, out, err = run_cli("tables", "--profile", "test", "--root", str(tmp_path))
    assert code == 0, err[-2000:]
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["silver.stores"][1:4] == ["silver", str(lake.version("silver.stores")), "2"]


def test_a_failing_query_is_one_line_with_exit_status_1(tmp_path, run_cli):
    code, _, err = run_cli(
        "sql", "SELECT * FROM silver.nope", "--profile", "test", "--root", str(tmp_path)
    )
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: [TABLE_OR_VIEW_NOT_FOUND]")
    assert "Traceback" not in err


@pytest.mark.slow
def test_the_console_script_exits_with_one_line_errors(spark, tmp_path):
    """The installed `retail-lake` script in a process of its own: exit 2 for a config
    error, 1 for a failed command, one line each (neither starts a JVM); `tables` on a local
    lake runs where no Java can be found."""

    def cli_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [CLI, *args], cwd=REPO, text=True, capture_output=True, timeout=300, env=env
        )

    root = tmp_path / "lake"
    stores_lake(spark, root, 4)
    no_java = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    no_java["PATH"] = str(Path(sys.executable).parent)  # the venv's scripts, no java
    listed = cli_process("tables", "--profile", "test", "--root", str(root), env=no_java)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.splitlines()[2].split()[:4] == ["silver.stores", "silver", "1", "4"]
    # The same command through Spark cannot start here (no java, no shell on the PATH): the
    # listing above really started no JVM.
    by_spark = cli_process("tables", "--spark", "--root", str(root), env=no_java)
    assert by_spark.returncode == 1
    # The reason is on the one error line, though what the JVM's launcher printed went to
    # its log file.
    assert len(by_spark.stderr.strip().splitlines()) == 1, by_spark.stderr
    assert "the Spark JVM did not start" in by_spark.stderr
    assert "No such file or directory" in by_spark.stderr, by_spark.stderr

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


def test_only_the_newest_jvm_logs_are_kept(tmp_path):
    from retail_lake.session import _prune_logs

    names = [f"jvm-20261203T0{h}0000-{100 + h}.log" for h in range(1, 6)]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.log").write_text("not a JVM log")
    _prune_logs(str(tmp_path), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [*names[3:], "notes.log"]
    _prune_logs(str(tmp_path), 0)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.log"]
