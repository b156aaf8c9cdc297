"""Two processes use table names at once: a writer job and a `retail-lake sql` reader."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retail_lake.config import load_config
from retail_lake.ingest import landing_dir
from retail_lake.ingest import run as ingest
from retail_lake.lake import Lake
from retail_lake.runner import run_job

CLI = str(Path(sys.executable).parent / "retail-lake")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_writer_and_sql_reader_at_the_same_time(spark, cfg, tmp_path):
    # The bundled Rossmann demo file only (10,937 bronze rows): the other sources add time,
    # not evidence.
    landing = tmp_path / "landing"
    shutil.copytree(Path(landing_dir(cfg)) / "rossmann", landing / "rossmann")
    cfg = load_config("test", [f"paths.root={cfg.root}", f"paths.landing={landing}"])
    run_job(spark, cfg, "ingest", ingest)
    # A new file arrives: the writer ingests it while the reader queries the table by name.
    shutil.copy(landing / "rossmann" / "train.csv.gz", landing / "rossmann" / "train_2.csv.gz")
    common = ["--profile", "test", "--root", cfg.root]
    writer = subprocess.Popen(
        [CLI, "run", "ingest", *common, "--set", f"paths.landing={landing}"],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader = subprocess.Popen(
        [CLI, "sql", "SELECT count(*) AS n FROM bronze.rossmann_sales_raw", *common],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    w_out, w_err = writer.communicate(timeout=600)
    r_out, r_err = reader.communicate(timeout=600)
    assert writer.returncode == 0, w_err[-3000:]
    assert reader.returncode == 0, r_err[-3000:]
    seen = int(r_out.strip().splitlines()[-1])
    assert seen in (10937, 2 * 10937)  # a consistent snapshot, before or after the commit
    assert Lake(spark, cfg.root).read("bronze.rossmann_sales_raw").count() == 2 * 10937
