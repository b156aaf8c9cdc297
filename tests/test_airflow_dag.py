"""The pipeline as an Airflow DAG (`retail-lake airflow-dag`, `retail_lake.airflow_dag`).

The dependencies and the committed example are checked in this process; the DAG files are
parsed by Airflow 3 itself, and `airflow dags test` runs a generated DAG for two logical
dates, its task submitting the features job with the project venv's spark-submit. Airflow
lives in a venv of its own (`./setup_cluster.sh install-airflow`, part of `install`).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake import cli
from retail_lake.airflow_dag import expand, upstream
from retail_lake.config import ConfigError, load_config
from retail_lake.lake import Lake
from retail_lake.registry import CONTRACTS, JOB_IO, JOBS, UnknownJobError
from tests.lake_builds import AIRFLOW_DAYS, AIRFLOW_VENV, airflow_env

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "dags" / "retail_lake.py"
DEFAULT_STEPS = load_config("test").get("pipeline.steps")


def test_default_steps_fan_out_after_features_and_forecast_waits_for_its_model():
    assert upstream(DEFAULT_STEPS) == {
        "ingest": (),
        "cleanse": ("ingest",),
        "features": ("cleanse",),
        "score_locations": ("features",),
        "recommend": ("features",),
        "train_forecaster": ("features",),
        "forecast": ("train_forecaster",),
        # The CNN needs only the cleansed images: it trains beside the features.
        "train_image_classifier": ("cleanse",),
        "classify_images": ("train_image_classifier",),
        "maintain": ("score_locations", "recommend", "forecast", "classify_images"),
    }


def test_edges_follow_reads_and_writes_whatever_the_order_of_steps():
    # The classifier's scoring waits for its training (a model, not a table); vacuum, which
    # removes files every table's old versions read, waits for the last writer only
    # (the others are its ancestors already).
    steps = ["ingest", "cleanse", "train_image_classifier", "classify_images", "vacuum"]
    assert upstream(steps) == {
        "ingest": (),
        "cleanse": ("ingest",),
        "train_image_classifier": ("cleanse",),
        "classify_images": ("train_image_classifier",),
        "vacuum": ("classify_images",),
    }
    # Without its trainer in the run, forecast waits for the features it scores.
    assert upstream(["features", "forecast"]) == {"features": (), "forecast": ("features",)}
    # Steps that share nothing run side by side.
    assert upstream(["score_locations", "train_forecaster"]) == {
        "score_locations": (),
        "train_forecaster": (),
    }
    with pytest.raises(UnknownJobError, match="'nope'"):
        upstream(["ingest", "nope"])
    with pytest.raises(ConfigError, match=r"\['ingest'\] are named twice"):
        upstream(["ingest", "cleanse", "ingest"])


def test_every_job_declares_what_it_reads_and_writes_in_names_the_lake_has():
    assert set(JOB_IO) == set(JOBS)
    # and has the spark-submit entry point a task submits
    assert {p.stem for p in (REPO / "jobs").glob("*.py")} == {*JOBS, "pipeline"}
    tables = set(CONTRACTS.names())
    for job, io in JOB_IO.items():
        for name in (*io.reads, *io.writes):
            if name.endswith("*"):
                prefix = name[:-1]
                assert any(t.startswith(prefix) for t in tables), (job, name)
            else:
                assert name in tables or name.startswith("model:") or name == "landing", (
                    job,
                    name,
                )


@pytest.mark.pipeline
def test_what_jobs_declare_covers_what_the_demo_pipeline_runs_read_and_wrote(spark, demo_lake):
    runs = (
        Lake(spark, demo_lake.root)
        .read("ops.job_runs")
        .where((F.col("status") == "succeeded") & (F.col("job") != "pipeline"))
        .collect()
    )
    assert {r["job"] for r in runs} == set(DEFAULT_STEPS)
    written: dict[str, set[str]] = {}
    for run in runs:
        io = JOB_IO[run["job"]]
        read = {t for t in run["versions_read"] or {} if not t.startswith("ops.")}
        wrote = {t for t in run["versions_written"] or {} if not t.startswith("ops.")}
        assert read <= expand(io.reads), (run["job"], read - expand(io.reads))
        assert wrote <= expand(io.writes), (run["job"], wrote - expand(io.writes))
        written.setdefault(run["job"], set()).update(wrote)
    # And no job declares a table it never wrote (patterns and models aside).
    for job in DEFAULT_STEPS:
        tables = {n for n in JOB_IO[job].writes if "*" not in n and not n.startswith("model:")}
        assert tables <= written[job], (job, tables - written[job])


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """`retail-lake ARGS` in this process: (exit status, stdout, stderr)."""
    level = logging.getLogger("retail_lake").level
    try:
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err
    finally:
        logging.getLogger("retail_lake").setLevel(level)


def _generate(capsys, *args: str) -> str:
    """`retail-lake airflow-dag ARGS` in this process; the DAG text it printed."""
    code, out, err = _cli(capsys, "airflow-dag", *args)
    assert code == 0, err
    return out


def test_the_committed_example_dag_is_what_its_command_writes_today(capsys):
    text = EXAMPLE.read_text()
    line = next(li.strip() for li in text.splitlines() if li.strip().startswith("retail-lake "))
    argv = shlex.split(line.removesuffix(" --out FILE"))[1:]
    assert argv[0] == "airflow-dag"
    regenerated = _generate(capsys, *argv[1:], "--no-archive")
    assert regenerated == text, (
        "dags/retail_lake.py is stale: write it again with the command in its docstring "
        "(--out dags/retail_lake.py)"
    )


def test_only_the_time_dependent_jobs_get_the_logical_date_and_paths_are_absolute(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    text = _generate(
        capsys,
        "--no-archive",
        "--profile",
        "test",
        "--root",
        "lake",
        "--set",
        "forecast.epochs=3",
        "--set",
        "airflow.retries=5",
    )
    job_args = f'JOB_ARGS = ["--profile", "test", "--set", "paths.root={tmp_path / "lake"}", '
    assert job_args + '"--set", "forecast.epochs=3"]' in text
    assert "airflow.retries" not in text.split("with DAG(")[1]  # the DAG's own settings
    assert '"retries": 5,' in text
    dated = [s for s in DEFAULT_STEPS if '"--run-date", "{{ ds }}"' in _task(text, s)]
    assert dated == ["features", "recommend"]


def test_a_secret_given_with_set_is_refused_not_written_into_the_dag(capsys, tmp_path):
    out = tmp_path / "dag.py"
    secret = "spark.conf.spark.hadoop.fs.s3a.secret.key=AKIAxyz123"
    code, _, err = _cli(capsys, "airflow-dag", "--no-archive", "--set", secret, "--out", str(out))
    assert code == 2 and "a secret would be written into the DAG file" in err
    assert "AKIAxyz123" not in err and not out.exists()


def _task(text: str, step: str) -> str:
    start = text.index(f'task_id="{step}"')
    return text[start : text.index("**SUBMIT", start)]


# ---------------------------------------------------------------------------- in Airflow
def _airflow_env(tmp_path: Path, dags: Path) -> dict[str, str]:
    try:
        return airflow_env(tmp_path, dags)
    except RuntimeError as exc:
        pytest.fail(str(exc))


# Runs in Airflow's venv: every DAG of a folder as Airflow parses it.
_DESCRIBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
dags = {}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "schedule": str(dag.schedule),
        "tasks": {
            t.task_id: {
                "type": type(t).__name__,
                "upstream": sorted(t.upstream_task_ids),
                "retries": t.retries,
                "application": t.application,
                "args": t.application_args,
                "py_files": t.py_files,
            }
            for t in dag.tasks
        },
    }
errors = {k: str(v)[-500:] for k, v in bag.import_errors.items()}
print(json.dumps({"errors": errors, "dags": dags}))
"""


@pytest.mark.airflow
def test_airflow_parses_the_example_and_a_generated_dag_with_their_tasks_and_edges(
    tmp_path, capsys
):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "retail_lake.py").write_text(EXAMPLE.read_text())
    (dags / "mine.py").write_text(
        _generate(
            capsys,
            "--no-archive",
            "--root",
            str(tmp_path / "lake"),
            "--set",
            "airflow.dag_id=mine",
            "--set",
            "airflow.schedule=@daily",
        )
    )
    script = tmp_path / "describe.py"
    script.write_text(_DESCRIBE)
    done = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), str(script), str(dags)],
        env=_airflow_env(tmp_path, dags),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert sorted(parsed["dags"]) == ["mine", "retail_lake"]
    expected = {s: sorted(u) for s, u in upstream(DEFAULT_STEPS).items()}
    for dag in parsed["dags"].values():
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False
        assert {t: v["upstream"] for t, v in dag["tasks"].items()} == expected
        for task_id, task in dag["tasks"].items():
            assert task["type"] == "SparkSubmitOperator"
            assert task["application"].endswith(f"/jobs/{task_id}.py")
            assert task["py_files"].endswith("/dist/retail_lake.zip")
            assert task["retries"] == 2
    assert parsed["dags"]["retail_lake"]["schedule"] == "0 3 * * *"
    assert parsed["dags"]["mine"]["schedule"] == "@daily"
    mine = parsed["dags"]["mine"]["tasks"]
    assert mine["features"]["args"][-2:] == ["--run-date", "{{ ds }}"]
    assert "--run-date" not in mine["forecast"]["args"]
    assert f"paths.root={tmp_path / 'lake'}" in mine["ingest"]["args"]


@pytest.mark.airflow
def test_airflow_runs_the_features_task_for_two_logical_dates(spark, airflow_backfill):
    # `airflow dags test` for each day, one after the other (a backfill), ran in the builds'
    # process (conftest's `airflow_backfill`, tests/lake_builds.py) beside the other tests.
    days = list(AIRFLOW_DAYS)
    assert [r["day"] for r in airflow_backfill.dags_test] == [d.isoformat() for d in days]
    for run in airflow_backfill.dags_test:
        out = run["output"]
        assert run["returncode"] == 0, out[-4000:]
        assert "features succeeded" in out, out[-4000:]
        assert "state=success" in out, out[-4000:]

    root = airflow_backfill.cfg.root
    lake = Lake(spark, str(root))
    runs = (
        lake.read("ops.job_runs")
        .where((F.col("job") == "features") & F.col("run_date").isNotNull())
        .orderBy("started_at")
        .collect()
    )
    assert [(r["run_date"], r["status"]) for r in runs] == [(d, "succeeded") for d in days]
    customers = []
    for run, day in zip(runs, days, strict=True):
        assert run["parameters"]["run_date"] == day.isoformat()
        version = run["versions_written"]["gold.customer_features"]
        features = lake.read("gold.customer_features", version=version)
        got = features.agg(
            F.collect_set("as_of_date").alias("as_of"),
            F.max("last_purchase_at").alias("last"),
            F.count(F.lit(1)).alias("n"),
        ).first()
        # The snapshot is the logical date: nothing bought after it is counted.
        assert got["as_of"] == [day]
        assert got["last"] < datetime.combine(day + timedelta(days=1), datetime.min.time())
        customers.append(got["n"])
        # Exactly the known customers who bought a product by that day.
        silver = lake.read("silver.transactions")
        bought = silver.where(
            F.col("is_product")
            & F.col("customer_token").isNotNull()
            & (F.col("invoice_day") <= F.lit(day))
        )
        assert got["n"] == bought.select("customer_token").distinct().count()
    assert customers[0] < customers[1]
