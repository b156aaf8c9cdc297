"""Table contracts, their suites, the README catalog and the bundled demo data stay in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from retail_lake.catalog import update_readme
from retail_lake.config import ConfigError
from retail_lake.contracts import Col, ContractError, TableContract
from retail_lake.demo import HISTORY, fashion_sample, generate, online_retail_history
from retail_lake.quality import load_suite
from retail_lake.registry import CONTRACTS

from .conftest import shared_data

REPO = Path(__file__).resolve().parents[1]


def test_readme_catalog_is_generated_from_the_contracts():
    assert not update_readme(str(REPO / "README.md"), check=True), (
        "README's table catalog is out of date: run 'retail-lake catalog --readme README.md'"
    )


def test_every_suite_file_belongs_to_a_table_and_loads():
    for path in sorted((REPO / "conf" / "suites").glob("*.yaml")):
        table = path.stem
        assert table in CONTRACTS, f"{path.name}: no table contract named {table}"
        specs = load_suite(CONTRACTS[table])
        assert len(specs) > len(CONTRACTS[table].keys), f"{path.name} adds no expectation"


def test_layers_carry_their_delta_properties():
    for contract in CONTRACTS:
        props = contract.delta_properties
        # Column mapping where a source's columns may be renamed (bronze, silver); gold goes
        # without it so other engines read it (polars refuses it), the run journal (ops) so
        # the driver appends its rows with delta-rs.
        mapped = props.get("delta.columnMapping.mode") == "name"
        assert mapped == (contract.layer in ("bronze", "silver")), contract.name
        if contract.layer == "gold":
            assert props["delta.minReaderVersion"] == "1", contract.name
        assert (props.get("delta.enableChangeDataFeed") == "true") == (
            contract.layer in ("silver", "gold")
        ), contract.name
        if contract.layer in ("silver", "gold"):
            assert contract.keys and contract.has_content_hash, contract.name


def test_contract_errors_are_named():
    with pytest.raises(ContractError, match="key/partition/Z-order column 'nope' is not a column"):
        TableContract("silver.x", "d", (Col("a", "int", "a"),), keys=("nope",))
    with pytest.raises(ContractError, match="layer.name"):
        TableContract("x", "d", (Col("a", "int", "a"),))
    with pytest.raises(ContractError, match="no table contract named 'silver.nope'"):
        CONTRACTS["silver.nope"]


def test_suite_with_unknown_column_or_expectation_is_a_config_error(tmp_path):
    contract = CONTRACTS["silver.stores"]
    (tmp_path / "suites").mkdir()
    suite = tmp_path / "suites" / "silver.stores.yaml"
    suite.write_text(
        "expectations:\n  - expectation: expect_column_values_to_be_unique\n    column: shop\n"
    )
    with pytest.raises(ConfigError, match=r"expectations\[0\]: silver.stores has no column 'shop'"):
        load_suite(contract, tmp_path)
    suite.write_text("expectations:\n  - expectation: expect_the_moon\n    column: store\n")
    with pytest.raises(ConfigError, match="unknown expectation 'expect_the_moon'"):
        load_suite(contract, tmp_path)
    suite.write_text(
        "expectations:\n  - expectation: expect_column_values_to_be_unique\n"
        "    column: store\n    severity: fatal\n"
    )
    with pytest.raises(ConfigError, match="severity must be one of"):
        load_suite(contract, tmp_path)


def test_bundled_demo_data_is_what_the_generator_writes(tmp_path):
    bundled = REPO / "lib" / "retail_lake" / "demo_data"
    for path in generate(tmp_path):
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (bundled / rel).read_bytes(), f"{rel} differs"


def test_the_demo_images_are_the_first_images_of_fashion_mnist(tmp_path):
    """The bundled Fashion-MNIST sample is what demo_data/fashion_mnist/SOURCE.md states: the
    first 4,000 training and 1,000 test records of the full files, headers saying so, and the
    bytes the generator writes from them."""
    import gzip

    full = shared_data("fashion_mnist")
    bundled = REPO / "lib" / "retail_lake" / "demo_data" / "fashion_mnist"
    for path in fashion_sample(full, tmp_path):
        assert path.read_bytes() == (bundled / path.name).read_bytes(), f"{path.name} differs"
    for prefix, n in (("train", 4000), ("t10k", 1000)):
        for kind, record, header in (("images-idx3", 784, 16), ("labels-idx1", 1, 8)):
            name = f"{prefix}-{kind}-ubyte.gz"
            mine = gzip.decompress((bundled / name).read_bytes())
            theirs = gzip.decompress((full / name).read_bytes())
            assert int.from_bytes(mine[4:8], "big") == n, name
            assert len(mine) == header + n * record, name
            # The same header otherwise (magic, image size) and the same leading records.
            assert mine[:4] + mine[8:header] == theirs[:4] + theirs[8:header], name
            assert mine[header:] == theirs[header : header + n * record], name


def test_the_demo_history_is_the_selection_its_source_describes(tmp_path):
    """The Online Retail history is generated from the full file (not kept in the
    repository): the lines and customers demo_data/online_retail/SOURCE.md states, no line of
    2010-12-01 or of the bad-debt adjustments, and the same bytes install wrote."""
    import csv
    import gzip

    path = online_retail_history(shared_data("online_retail", "online_retail.csv.gz"), tmp_path)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    assert header[4] == "InvoiceDate" and header[6] == "CustomerID"
    assert len(rows) == 229_146
    # 2,232 customers selected; 15 of the 98 of 2010-12-01 bought on no other day.
    assert len({r[6] for r in rows}) == 2_217 and "" not in {r[6] for r in rows}
    assert not [r for r in rows if r[4].startswith("2010-12-01") or r[0].startswith("A56318")]
    bundled = REPO / "lib" / "retail_lake" / "demo_data" / HISTORY
    assert bundled.is_file(), f"{bundled} missing: ./setup_cluster.sh install writes it"
    assert bundled.read_bytes() == path.read_bytes()
