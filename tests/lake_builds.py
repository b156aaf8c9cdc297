"""Builds the lakes several tests share, in a process of its own: conftest starts it when
collection ends, so the builds run beside the tests that come first (on the CPU time they
leave idle), and the tests that read them run last.

    python tests/lake_builds.py FOLDER SHARED_DATA NAME [NAME ...]

Each NAME is built in turn into FOLDER/NAME/lake; FOLDER/NAME/result.json is written when it
is complete (FOLDER/NAME/failed when it failed, the traceback on stderr):
- `online_retail_real`: the real Online Retail file ingested and cleansed.
- `fashion_real`: all 70,000 real Fashion-MNIST images ingested and cleansed, then both jobs
  re-run with nothing new (their writes recorded).
- `demo`: the whole pipeline on the bundled demo data, twice (the second run finds nothing
  new): every data table's Delta version before and after the second run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from pathlib import Path


def _config(folder: Path, landing: Path | None = None):
    from retail_lake.config import load_config

    overrides = [f"paths.root={folder / 'lake'}"]
    if landing is not None:
        overrides.append(f"paths.landing={landing}")
    return load_config("test", overrides)


def _landing(folder: Path, source: Path) -> Path:
    """A landing folder whose one source folder is a link to `source`."""
    landing = folder / "landing"
    landing.mkdir()
    (landing / source.name).symlink_to(source, target_is_directory=True)
    return landing


def online_retail_real(folder: Path, shared: Path) -> dict:
    from retail_lake.registry import JOBS, run_job

    cfg = _config(folder, _landing(folder, shared / "online_retail"))
    spark = _session(cfg)
    ingest_ctx, _ = run_job(spark, cfg, "ingest", JOBS["ingest"])
    cleanse_ctx, _ = run_job(spark, cfg, "cleanse", JOBS["cleanse"])
    return {"runs": {"ingest": ingest_ctx.run_id, "cleanse": cleanse_ctx.run_id}}


def fashion_real(folder: Path, shared: Path) -> dict:
    from retail_lake.registry import JOBS, run_job

    cfg = _config(folder, _landing(folder, shared / "fashion_mnist"))
    spark = _session(cfg)
    runs, rerun_writes = {}, {}
    for name in ("ingest", "cleanse"):
        ctx, _ = run_job(spark, cfg, name, JOBS[name])
        runs[name] = ctx.run_id
    for name in ("ingest", "cleanse"):
        _, writes = run_job(spark, cfg, name, JOBS[name])
        rerun_writes[name] = {t: dataclasses.asdict(w) for t, w in writes.items()}
    return {"runs": runs, "rerun_writes": rerun_writes}


def demo(folder: Path, shared: Path) -> dict:
    from retail_lake.lake import Lake
    from retail_lake.pipeline import run_pipeline

    cfg = _config(folder)  # landing "": the bundled demo data
    run_pipeline(cfg)
    lake = Lake(_session(cfg), cfg.root)  # the pipeline's session
    before = _data_versions(lake)
    run_pipeline(cfg)
    return {"versions_before": before, "versions_after": _data_versions(lake)}


def _session(cfg):
    from retail_lake.session import build_session

    return build_session(cfg, register=False)


def _data_versions(lake) -> dict[str, int]:
    """Every bronze, silver and gold table's Delta version."""
    from retail_lake.delta_log import table_folders

    tables = table_folders(Path(lake.root))
    return {t: lake.version(t) for t in tables if not t.startswith("ops.")}


BUILDS = {"online_retail_real": online_retail_real, "fashion_real": fashion_real, "demo": demo}


def main(folder: str, shared: str, *names: str) -> int:
    failed = 0
    for name in names:
        target = Path(folder) / name
        target.mkdir(parents=True, exist_ok=True)
        try:
            result = BUILDS[name](target, Path(shared))
        except Exception:
            traceback.print_exc()
            (target / "failed").write_text(traceback.format_exc())
            failed += 1
            continue
        (target / "result.json.tmp").write_text(json.dumps(result, default=str))
        (target / "result.json.tmp").rename(target / "result.json")
        print(f"built {name}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
