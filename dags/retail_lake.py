"""retail-lake's pipeline as an Airflow DAG: one spark-submit task per job.

Generated; do not edit: change the config or the command and write it again with

    retail-lake airflow-dag --profile cluster --root /data/retail-lake --set airflow.project_dir=/opt/retail-lake --set airflow.home=/opt/retail-lake/cache --out FILE

Each task submits `jobs/<job>.py` from PROJECT with the library as --py-files
(`python -m retail_lake.package --out ARCHIVE` builds it; `retail-lake airflow-dag`
does for its own checkout) through the Spark connection CONN_ID, whose host is the
master (local[2], spark://host with its port, yarn, k8s://...), with the venv's
spark-submit.
Time-dependent jobs (features, recommend) get --run-date {{ ds }}:
Airflow 3's logical date, the run's own day for a daily cron schedule; backfilling a
day rebuilds its Online Retail snapshot. One run at a time (one writer per lake).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG

PROJECT = "/opt/retail-lake"
PYTHON = "/opt/retail-lake/cache/venv/bin/python"
ARCHIVE = "/opt/retail-lake/dist/retail_lake.zip"
CONN_ID = "retail_lake_spark"
JOB_ARGS = ["--profile", "cluster", "--set", "paths.root=/data/retail-lake"]
SUBMIT = {
    "conn_id": CONN_ID,
    "py_files": ARCHIVE,
    "packages": "io.delta:delta-spark_2.13:4.0.1",
    "conf": {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.jars.ivy": "/opt/retail-lake/cache/ivy",
        "spark.driver.memory": "2g",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -XX:SharedArchiveFile=/opt/retail-lake/cache/jvm/classes.jsa -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.log.level": "WARN",
    },
    # spark-submit from the venv; PySpark's Python on the driver and the executors.
    "env_vars": {
        "PATH": os.path.dirname(PYTHON) + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
        "PYSPARK_PYTHON": PYTHON,
    },
}

with DAG(
    dag_id="retail_lake",
    schedule="0 3 * * *",
    start_date=datetime(2010, 12, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
    },
    tags=["retail-lake"],
    doc_md=__doc__,
):
    ingest = SparkSubmitOperator(
        task_id="ingest",
        name="retail-lake ingest",
        application=f"{PROJECT}/jobs/ingest.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )
    cleanse = SparkSubmitOperator(
        task_id="cleanse",
        name="retail-lake cleanse",
        application=f"{PROJECT}/jobs/cleanse.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )
    features = SparkSubmitOperator(
        task_id="features",
        name="retail-lake features",
        application=f"{PROJECT}/jobs/features.py",
        application_args=[*JOB_ARGS, "--run-date", "{{ ds }}"],
        **SUBMIT,
    )
    score_locations = SparkSubmitOperator(
        task_id="score_locations",
        name="retail-lake score_locations",
        application=f"{PROJECT}/jobs/score_locations.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )
    recommend = SparkSubmitOperator(
        task_id="recommend",
        name="retail-lake recommend",
        application=f"{PROJECT}/jobs/recommend.py",
        application_args=[*JOB_ARGS, "--run-date", "{{ ds }}"],
        **SUBMIT,
    )
    train_forecaster = SparkSubmitOperator(
        task_id="train_forecaster",
        name="retail-lake train_forecaster",
        application=f"{PROJECT}/jobs/train_forecaster.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )
    forecast = SparkSubmitOperator(
        task_id="forecast",
        name="retail-lake forecast",
        application=f"{PROJECT}/jobs/forecast.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )
    train_image_classifier = SparkSubmitOperator(
        task_id="train_image_classifier",
        name="retail-lake train_image_classifier",
        application=f"{PROJECT}/jobs/train_image_classifier.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )
    classify_images = SparkSubmitOperator(
        task_id="classify_images",
        name="retail-lake classify_images",
        application=f"{PROJECT}/jobs/classify_images.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )
    maintain = SparkSubmitOperator(
        task_id="maintain",
        name="retail-lake maintain",
        application=f"{PROJECT}/jobs/maintain.py",
        application_args=JOB_ARGS,
        **SUBMIT,
    )

    ingest >> cleanse
    cleanse >> [features, train_image_classifier]
    features >> [score_locations, recommend, train_forecaster]
    train_forecaster >> forecast
    train_image_classifier >> classify_images
    score_locations >> maintain
    recommend >> maintain
    forecast >> maintain
    classify_images >> maintain
