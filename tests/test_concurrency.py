"""Two processes use one lake at once: a writer job in a process of its own (`retail-lake run
ingest`) and a reader (this process) that queries the table while the writer's run is in
progress, before and after its commit."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.ingest import landing_dir
from retail_lake.ingest import run as ingest
from retail_lake.lake import Lake
from retail_lake.registry import run_job

CLI = str(Path(sys.executable).parent / "retail-lake")
REPO = Path(__file__).resolve().parents[1]
ROWS = 10937  # the bundled Rossmann demo file's bronze rows
# A line the CLI's logging prints: time, level, a retail_lake logger.
OWN_LINE = re.compile(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) retail_lake[.\w]*: ")


@pytest.mark.slow
def test_a_reader_sees_whole_snapshots_while_a_writer_commits(spark, cfg, tmp_path):
    # The bundled Rossmann demo file only: the other sources add time, not evidence.
    landing = tmp_path / "landing"
    shutil.copytree(Path(landing_dir(cfg)) / "rossmann", landing / "rossmann")
    cfg = load_config("test", [f"paths.root={cfg.root}", f"paths.landing={landing}"])
    run_job(spark, cfg, "ingest", ingest)
    lake = Lake(spark, cfg.root)
    # A new file arrives (the same days a year on: a byte-identical copy would be skipped as
    # a duplicate): the writer process ingests it while this process reads.
    text = gzip.decompress((landing / "rossmann" / "train.csv.gz").read_bytes()).decode()
    later = gzip.compress(text.replace(",2015-", ",2016-").replace(",2014-", ",2015-").encode())
    (landing / "rossmann" / "train_2.csv.gz").write_bytes(later)
    landing_set = f"paths.landing={landing}"
    logs = tmp_path / "logs"
    command = [CLI, "run", "ingest", "--profile", "test", "--root", cfg.root]
    writer = subprocess.Popen(
        [*command, "--set", landing_set, "--set", f"spark.jvm_log_dir={logs}"],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: list[tuple[str | None, int]] = []  # (the writer's run status, rows read)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            alive = writer.poll() is None
            runs = lake.read("ops.job_runs").where(F.col("job") == "ingest")
            statuses = [r["status"] for r in runs.orderBy("started_at").collect()]
            writer_status = statuses[1] if len(statuses) > 1 else None
            seen.append((writer_status, lake.read("bronze.rossmann_sales_raw").count()))
            if not alive:
                break
            # A read every two seconds: reads without a pause compete with the writer's
            # process for the two cores (the test took 143.5 s without the pause, 130.2 s
            # with one second); the writer's run stays 'running' for tens of seconds.
            time.sleep(2)
    finally:
        if writer.poll() is None:
            writer.kill()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err[-3000:]
    # The writer's console holds its own progress lines only; what its JVM printed (Ivy's
    # report, Spark's start-up warnings) is in its log file.
    strays = [line for line in err.splitlines() if not OWN_LINE.match(line)]
    assert strays == [], strays
    assert "ingest succeeded" in err
    (jvm_log,) = logs.glob("jvm-*.log")
    assert "log4j" in jvm_log.read_text()
    # Every read saw a whole snapshot, and never the old one after the new one.
    counts = [n for _, n in seen]
    assert set(counts) <= {ROWS, 2 * ROWS}
    assert counts == sorted(counts)
    # The overlap happened: reads while the writer's run was recorded as running saw the
    # snapshot before its commit, and the last read (the writer done) sees its rows.
    assert ("running", ROWS) in seen, seen
    assert seen[-1] == ("succeeded", 2 * ROWS), seen
