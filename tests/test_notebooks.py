"""The analyst notebook runs top to bottom (papermill) against a lake the pipeline built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


def test_lake_tour_notebook(demo_lake, tmp_path):
    import papermill

    png = tmp_path / "store1.png"
    out = tmp_path / "lake_tour.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "lake_tour.ipynb"),
        str(out),
        parameters={"profile": "test", "root": demo_lake.root, "store": 1, "output_png": str(png)},
        cwd=str(NOTEBOOKS.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cells = json.loads(out.read_text())["cells"]
    text = "".join(
        o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
        for c in cells
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )
    assert "store 1: 42 forecast days" in text
    tables = "".join(json.dumps(o.get("data", {})) for c in cells for o in c.get("outputs", []))
    assert "gold.sales_forecasts" in tables and "ops.job_runs" in tables


def test_data_quality_notebook(demo_lake, tmp_path):
    import papermill

    png = tmp_path / "quarantine.png"
    out = tmp_path / "data_quality.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "data_quality.ipynb"),
        str(out),
        parameters={"profile": "test", "root": demo_lake.root, "output_png": str(png)},
        cwd=str(NOTEBOOKS.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cells = json.loads(out.read_text())["cells"]
    text = "".join(
        o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
        for c in cells
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )
    # The demo data: Rossmann's two broken records and the Online Retail sample's rejects.
    assert "from 2 sources" in text
    assert "all hold: True" in text
    tables = "".join(json.dumps(o.get("data", {})) for c in cells for o in c.get("outputs", []))
    assert "bad_debt_adjustment" in tables and "column_count" in tables
    assert "silver.transactions" in tables
