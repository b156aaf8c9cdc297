"""The analyst notebooks run top to bottom (papermill) against a lake the pipeline built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


def execute(name: str, tmp_path: Path, **parameters) -> tuple[str, str]:
    """Runs a notebook; returns (its printed text, its rich outputs as JSON text)."""
    import papermill

    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        parameters=parameters,
        cwd=str(NOTEBOOKS.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    cells = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    text = "".join(
        o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
        for o in outputs
    )
    return text, "".join(json.dumps(o.get("data", {})) for o in outputs)


def test_lake_tour_notebook(demo_lake, tmp_path):
    png = tmp_path / "store1.png"
    text, tables = execute(
        "lake_tour", tmp_path, profile="test", root=demo_lake.root, store=1, output_png=str(png)
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "store 1: 42 forecast days" in text
    assert "gold.sales_forecasts" in tables and "ops.job_runs" in tables


def test_data_quality_notebook(demo_lake, tmp_path):
    png = tmp_path / "quarantine.png"
    text, tables = execute(
        "data_quality", tmp_path, profile="test", root=demo_lake.root, output_png=str(png)
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The demo data: Rossmann's two broken records and the Online Retail sample's rejects.
    assert "15 quarantined records from 2 sources" in text
    assert "all hold: True" in text
    assert "bad_debt_adjustment" in tables and "column_count" in tables
    assert "silver.transactions" in tables
