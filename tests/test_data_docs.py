"""Great Expectations Data Docs under <root>/data_docs: a page per validation, kept across runs."""

from __future__ import annotations

import html
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from retail_lake.config import load_config
from retail_lake.data_docs import DataDocs
from retail_lake.quality import QualityGateError
from retail_lake.registry import run_job
from retail_lake.runner import JobResult, Output, job_runs

STORES_SCHEMA = (
    "store int, store_type string, assortment string, competition_distance_m "
    "double, competition_open_since date, promo2 boolean, promo2_since date, "
    "promo2_months array<int>, _source_file string, _line_number bigint"
)
GOOD = [
    (1, "a", "a", 100.0, None, False, None, [], "f", 2),
    (2, "b", "c", None, None, True, None, [1, 4], "f", 3),
]
BAD = [
    (1, "a", "a", 100.0, None, False, None, [], "f", 2),
    (2, "z", "c", -5.0, None, True, None, [1, 4], "f", 3),
]

# One validation row of the index page's table (GX embeds the rows as a JS literal).
INDEX_ROW = re.compile(
    r"'run_name': '(?P<run>[^']*)'.*?"
    r"'_expectation_suite_name_sort': '(?P<suite>[^']*)', "
    r"'_table_row_link_path': '(?P<link>validations/[^']*)', "
    r"'_validation_success_text': '(?P<status>\w+)'",
    re.S,
)


def stores_job(spark, rows):
    def job(ctx):
        return JobResult(
            outputs=[Output("silver.stores", spark.createDataFrame(rows, STORES_SCHEMA))]
        )

    return job


def text(path: Path) -> str:
    """The visible text of an HTML page: no scripts or styles, tags dropped, spaces folded."""
    page = path.read_text(encoding="utf-8")
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def index_rows(site: Path) -> dict[str, dict[str, str]]:
    """The validations the index lists, by run name."""
    page = (site / "index.html").read_text(encoding="utf-8")
    return {m["run"]: m.groupdict() for m in INDEX_ROW.finditer(page)}


@pytest.fixture
def cfg(root):
    """The test profile with Data Docs on (the profile turns them off for the other tests)."""
    return load_config("test", [f"paths.root={root}", "quality.data_docs=true"])


@pytest.mark.gx
def test_a_run_renders_its_validation_and_a_second_run_adds_to_the_site(spark, cfg, root):
    site = root / "data_docs"
    first, _ = run_job(spark, cfg, "load_stores", stores_job(spark, GOOD))

    rows = index_rows(site)
    assert list(rows) == [first.run_id]
    row = rows[first.run_id]
    assert (row["suite"], row["status"]) == ("silver.stores", "Success")
    page = site / row["link"]
    assert page.parts[-4:-2] == ("stores", first.run_id)
    shown = text(page)
    assert "Expectation Suite: silver.stores" in shown and "Status: Succeeded" in shown
    assert f"Run Name {first.run_id}" in shown
    # contract key rules (not null, unique on store) + the 3 configured expectations
    assert "Evaluated Expectations 5 Successful Expectations 5" in shown
    assert "values must be greater than or equal to 0.0 . 0% unexpected" in shown
    # The suite's page names each configured rule and its severity.
    suite_page = text(site / "expectations" / "silver" / "stores.html")
    assert (
        "competition_distance_m values must be greater than or equal to 0.0 . "
        "Notes: expect_column_values_to_be_between (critical)"
    ) in suite_page
    assert (
        "values must be unique. Notes: expect_column_values_to_be_unique (critical)" in suite_page
    )

    second, _ = run_job(spark, cfg, "load_stores", stores_job(spark, GOOD))

    rows = index_rows(site)
    assert list(rows) == [second.run_id, first.run_id]  # newest first, the first one kept
    assert {r["status"] for r in rows.values()} == {"Success"}
    assert page.is_file() and text(page) == shown  # the first run's page is untouched
    assert f"Run Name {second.run_id}" in text(site / rows[second.run_id]["link"])


@pytest.mark.gx
def test_a_failing_gate_still_renders_what_failed(spark, cfg, root):
    site = root / "data_docs"
    with pytest.raises(QualityGateError) as err:
        run_job(spark, cfg, "load_stores", stores_job(spark, BAD))
    (run_id,) = [r["run_id"] for r in job_runs(spark, cfg).collect() if r["status"] == "failed"]

    row = index_rows(site)[run_id]
    assert (row["suite"], row["status"]) == ("silver.stores", "Failed")
    shown = text(site / row["link"])
    assert "Status: Failed" in shown
    assert "Evaluated Expectations 5 Successful Expectations 3 Unsuccessful Expectations 2" in shown
    # the two failures the gate reports, with the offending values
    assert "nothing was written" in str(err.value)
    assert (
        "values must be greater than or equal to 0.0 . 1 unexpected values found. "
        "50% of 2 total rows. Unexpected Value Count -5.0 1"
    ) in shown
    assert (
        "values must belong to this set: a b c d . 1 unexpected values found. "
        "50% of 2 total rows. Unexpected Value Count z 1"
    ) in shown


@pytest.mark.gx
def test_a_rendering_error_is_a_warning_not_a_failed_run(spark, cfg, root, caplog):
    (root / "data_docs").write_text("not a folder")  # the site cannot be created

    with caplog.at_level(logging.WARNING, logger="retail_lake.quality"):
        ctx, writes = run_job(spark, cfg, "load_stores", stores_job(spark, GOOD))

    assert writes["silver.stores"].rows_changed == 2
    warned = [r.getMessage() for r in caplog.records if "Data Docs" in r.getMessage()]
    assert warned == [
        f"[{ctx.run_id}] Data Docs for silver.stores not rendered: "
        f"FileExistsError: [Errno 17] File exists: '{root / 'data_docs'}'"
    ]


def test_docs_are_off_by_config_and_skipped_for_a_remote_root(caplog):
    assert DataDocs.for_run(load_config("test", ["quality.data_docs=false"]), "r-1") is None
    with caplog.at_level(logging.WARNING, logger="retail_lake.quality"):
        remote = DataDocs.for_run(
            load_config("test", ["paths.root=hdfs://nn:8020/lake", "quality.data_docs=true"]),
            "r-2",
        )
    assert remote is None
    assert [r.getMessage() for r in caplog.records] == [
        "[r-2] Data Docs are not rendered: paths.root hdfs://nn:8020/lake is not a local folder"
    ]
    local = DataDocs.for_run(
        load_config("test", ["paths.root=file:///data/lake", "quality.data_docs=true"]), "r-3"
    )
    assert local == DataDocs(Path("/data/lake/data_docs"), "r-3", 500)


def test_writers_at_once_all_land_on_one_index(tmp_path):
    """Runs of several processes render into one site: the lock keeps every page listed."""
    import great_expectations as gx
    import pandas as pd

    from retail_lake.quality import _gx_context
    from retail_lake.registry import CONTRACTS

    contract = CONTRACTS["silver.stores"]
    context = _gx_context()
    asset = context.data_sources.add_pandas("p").add_dataframe_asset("stores")
    suite = context.suites.add(gx.ExpectationSuite(name=contract.name))
    suite.add_expectation(
        gx.expectations.ExpectColumnValuesToBeBetween(column="store", min_value=0)
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name="g", data=asset.add_batch_definition_whole_dataframe("w"), suite=suite
        )
    )
    sites = [DataDocs(tmp_path / "data_docs", f"run-{i}") for i in range(4)]
    outcomes = [
        definition.run(
            batch_parameters={"dataframe": pd.DataFrame({"store": [1, -i]})},
            run_id=docs.run_identifier(),
        )
        for i, docs in enumerate(sites)
    ]
    with ThreadPoolExecutor(len(sites)) as pool:
        pages = list(pool.map(lambda d, o: d.render(contract, suite, o), sites, outcomes))

    rows = index_rows(tmp_path / "data_docs")
    assert sorted(rows) == [f"run-{i}" for i in range(4)]
    assert [rows[f"run-{i}"]["status"] for i in range(4)] == ["Success"] + ["Failed"] * 3
    assert [tmp_path / "data_docs" / rows[f"run-{i}"]["link"] for i in range(4)] == pages
    assert all(f"Run Name run-{i}" in text(page) for i, page in enumerate(pages))
