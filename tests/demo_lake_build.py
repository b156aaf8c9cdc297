"""Builds the demo lake the tests share, in a process of its own (conftest starts it at the
beginning of a session whose tests need it, so it runs beside the tests that come first).

    python tests/demo_lake_build.py ROOT RESULT.json

The whole pipeline on the bundled demo data (test profile), twice: the second run finds
nothing new. RESULT.json holds every data table's Delta version before and after the
second run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def data_versions(lake) -> dict[str, int]:
    """Every bronze, silver and gold table's Delta version."""
    names = []
    for layer in ("bronze", "silver", "gold"):
        folder = Path(lake.root) / layer
        names += [f"{layer}.{p.name}" for p in sorted(folder.iterdir()) if p.is_dir()]
    return {t: lake.version(t) for t in names if lake.exists(t)}


def main(root: str, result: str) -> int:
    from retail_lake.config import load_config
    from retail_lake.lake import Lake
    from retail_lake.pipeline import run_pipeline
    from retail_lake.session import build_session

    cfg = load_config("test", [f"paths.root={root}"])  # landing "": the bundled demo data
    run_pipeline(cfg)
    lake = Lake(build_session(cfg, register=False), cfg.root)  # the pipeline's session
    before = data_versions(lake)
    run_pipeline(cfg)
    after = data_versions(lake)
    Path(result).write_text(json.dumps({"versions_before": before, "versions_after": after}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
