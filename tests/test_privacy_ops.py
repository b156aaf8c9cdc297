"""`retail-lake privacy`: erasing one customer from every table and old file, rotating the key.

A lake of the bundled Online Retail day (ingest, cleanse, features: every table that holds
customers but the recommender's) is built once for the module; each test works on a copy
with its own key folder. After an erasure no file under the root, old versions and
`_change_data` included, holds the customer's id or token; after a rotation none holds an
old token; and in both cases the lake's next cleanse finds nothing to change.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.pipeline import run_single
from retail_lake.privacy import canonical_id_text, load_key, token
from retail_lake.registry import CONTRACTS
from tests.conftest import copy_lake

# Every table with a pseudonym column; the small lake has all but the recommender's.
ALL_HOLDERS = (
    "silver.transactions",
    "silver.returns",
    "silver.customers",
    "gold.customer_features",
    "gold.customer_index",
    "gold.interactions",
    "gold.recommendations",
    "gold.recommendation_assignments",
)
HOLDERS = ALL_HOLDERS[:-2]  # the lake below runs no recommend
SAMPLE = Path(__file__).parents[1] / "lib/retail_lake/demo_data/online_retail"


@pytest.fixture(scope="module")
def retail_lake(spark, tmp_path_factory) -> Path:
    """A lake of the bundled Online Retail day: ingest, cleanse and features."""
    base = tmp_path_factory.mktemp("privacy")
    landing = base / "landing" / "online_retail"
    landing.mkdir(parents=True)
    shutil.copy2(SAMPLE / "online_retail_sample.csv.gz", landing)
    keys = base / "keys"
    overrides = [f"paths.root={base / 'lake'}", f"paths.landing={landing.parent}"]
    cfg = load_config("test", [*overrides, f"privacy.key_dir={keys}"])
    for job in ("ingest", "cleanse", "features"):
        run_single(cfg, job, spark=spark)
    return base


def _private_copy(base: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the module's lake and its key folder: its root and the overrides naming them."""
    root = copy_lake(base / "lake", tmp_path / "lake")
    shutil.copytree(base / "keys", tmp_path / "keys")
    return root, [
        f"paths.root={root}",
        f"paths.landing={base / 'landing'}",
        f"privacy.key_dir={tmp_path / 'keys'}",
    ]


def _strings(path: Path) -> list[str]:
    """Every text value of a Parquet file (nested values as JSON)."""
    table = pq.read_table(path)
    out: list[str] = []
    for column in table.columns:
        for value in column.to_pylist():
            if value is None:
                continue
            out.append(value if isinstance(value, str) else json.dumps(value, default=str))
    return out


def _chosen(lake: Lake, key: bytes) -> tuple[str, str]:
    """A customer with rows in every holder table, and a return and a quarantined line where
    one has them (one of several, so the features' snapshot day stays): (raw id, token)."""
    raw = lake.read("bronze.online_retail_raw").select("customer_id").distinct().collect()
    by_token = {
        token(r["customer_id"], key): r["customer_id"]
        for r in raw
        if r["customer_id"] and r["customer_id"].strip()
    }

    def tokens(table: str) -> set[str]:
        return {r[0] for r in lake.read(table).select("customer_token").distinct().collect()}

    present = set(by_token)
    for table in HOLDERS:
        if table != "silver.returns":
            present &= tokens(table)
    payloads = [r[0] or "" for r in lake.read("silver.quarantine").select("payload").collect()]
    returned = tokens("silver.returns")
    ranked = sorted(
        present, key=lambda t: (t not in returned, all(t not in p for p in payloads), t)
    )
    assert len(ranked) > 1, "the lake has no customer in every holder table"
    return by_token[ranked[0]], ranked[0]


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_an_erased_customer_is_in_no_file_under_the_root(retail_lake, spark, tmp_path, run_cli):
    root, overrides = _private_copy(retail_lake, tmp_path)
    cfg = load_config("test", overrides)
    cli = ["--profile", "test", *(a for o in overrides for a in ("--set", o))]
    lake = Lake(spark, str(root))
    key = load_key(cfg)
    customer, mine = _chosen(lake, key)
    before = {
        t: (lake.read(t).count(), lake.read(t).where(F.col("customer_token") == mine).count())
        for t in HOLDERS
    }
    bought = {
        r["stock_code"]
        for r in lake.read("gold.interactions").where(F.col("customer_token") == mine).collect()
    }
    buyers = {
        r["stock_code"]: r["buyers"]
        for r in lake.read("gold.product_features")
        .where(F.col("stock_code").isin(bought))
        .collect()
    }
    bronze_mine = sum(
        1
        for r in lake.read("bronze.online_retail_raw").select("customer_id").collect()
        if r[0] and canonical_id_text(r[0]) == canonical_id_text(customer)
    )
    quarantined = lake.read("silver.quarantine").where(F.instr("payload", mine) > 0).count()
    assert bronze_mine and all(n for t, (_, n) in before.items() if t != "silver.returns")

    code, out, err = run_cli(
        "privacy", "erase", "--customer", customer, "--request", "DSR-7", *cli
    )  # fmt: skip
    assert code == 0, err

    # Their rows are gone from every table; everyone else's are there.
    for table, (total, theirs) in before.items():
        assert lake.read(table).count() == total - theirs, table
        assert lake.read(table).where(F.col("customer_token") == mine).count() == 0, table
    assert lake.read("silver.quarantine").where(F.instr("payload", mine) > 0).count() == 0
    # The features were rebuilt without them: each product they bought lost one buyer.
    after = {
        r["stock_code"]: r["buyers"]
        for r in lake.read("gold.product_features")
        .where(F.col("stock_code").isin(bought))
        .collect()
    }
    assert {s: after.get(s, 0) for s in buyers} == {s: n - 1 for s, n in buyers.items()}

    # No file under the root holds the id or the token: data files of every version, the
    # change feed, the transaction log, checkpoints, the run journal, Data Docs.
    id_pattern = re.compile(rf"(?<![0-9.]){re.escape(canonical_id_text(customer))}(\.0+)?(?![0-9])")
    # Bronze's files name the raw id's column by its physical name (column mapping).
    (field,) = [f for f in DeltaTable(f"{root}/bronze/online_retail_raw").schema().fields
                if f.name == "customer_id"]  # fmt: skip
    raw_column = field.metadata["delta.columnMapping.physicalName"]
    holding = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        data = path.read_bytes()
        if mine.encode() in data:
            holding.append((str(path.relative_to(root)), "token bytes"))
        if path.name.endswith(".parquet"):
            values = _strings(path)
            if any(mine in v for v in values):
                holding.append((str(path.relative_to(root)), "token value"))
            if "online_retail_raw" in str(path) and any(
                id_pattern.fullmatch(v.strip())
                for v in pq.read_table(path, columns=[raw_column])[0].to_pylist()
                if v
            ):
                holding.append((str(path.relative_to(root)), "raw id"))
    assert holding == []

    # The record says what was removed where, never who.
    erasures = lake.read("ops.erasures").collect()
    assert len(erasures) == 1
    record = erasures[0].asDict()
    assert record["request"] == "DSR-7"
    assert record["rows_deleted"]["bronze.online_retail_raw"] == bronze_mine
    assert record["rows_deleted"]["silver.quarantine"] == quarantined
    assert {t: record["rows_deleted"][t] for t in HOLDERS} == {t: n for t, (_, n) in before.items()}
    assert all(record["files_vacuumed"][t] > 0 for t in HOLDERS)
    journal = lake.read("ops.job_runs").where(F.col("job") == "erase").collect()
    assert [r["status"] for r in journal] == ["succeeded"]
    text = json.dumps([r.asDict() for r in erasures + journal], default=str)
    assert mine not in text and customer not in text

    # The lake still adds up: the next cleanse rebuilds nothing in silver, gates passing.
    versions = {t: lake.version(t) for t in ("silver.transactions", "silver.quarantine")}
    run_single(cfg, "cleanse", spark=spark)
    assert {t: lake.version(t) for t in versions} == versions


def test_pseudonym_columns_never_have_statistics():
    """A token's min/max in the transaction log would outlive its rows' erasure."""
    holders = [c for c in CONTRACTS if c.pseudonyms]
    assert sorted(c.name for c in holders) == sorted(ALL_HOLDERS)
    for contract in holders:
        assert not set(contract.pseudonyms) & set(contract.stats_columns), contract.name
        assert "customer_token" in contract.pseudonyms


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_rotating_the_key_re_makes_every_token_and_a_crash_is_finished_by_the_next_run(
    retail_lake, spark, tmp_path, run_cli, monkeypatch
):
    from retail_lake import rotation
    from retail_lake.privacy import key_id, key_path, rotation_pending

    root, overrides = _private_copy(retail_lake, tmp_path)
    cfg = load_config("test", overrides)
    cli = ["--profile", "test", *(a for o in overrides for a in ("--set", o))]
    lake = Lake(spark, str(root))
    old = load_key(cfg)
    ids = {
        canonical_id_text(r[0])
        for r in lake.read("bronze.online_retail_raw").select("customer_id").distinct().collect()
        if r[0] and r[0].strip()
    }
    renamed = {token(i, old): i for i in ids}

    def content(table: str, names: dict[str, str]) -> list[tuple]:
        """The rows without their metadata, each token given as the id it stands for."""
        rows = lake.read(table).drop("_run_id", "_content_hash").collect()
        return sorted(
            tuple(names.get(v, v) if k == "customer_token" else v for k, v in r.asDict().items())
            for r in rows
        )

    def payloads() -> list[str]:
        return sorted(
            r[0] or "" for r in lake.read("silver.quarantine").select("payload").collect()
        )

    before = {t: content(t, renamed) for t in HOLDERS}
    quarantined = payloads()

    # A crash after every table is rewritten, before the new key becomes the lake's.
    def crash(*_args, **_kwargs):
        raise RuntimeError("the machine went down")

    monkeypatch.setattr(rotation, "vacuum_tables", crash)
    code, _, err = run_cli("privacy", "rotate-key", *cli)
    assert code == 1 and "went down" in err, err
    pending = rotation_pending(cfg)
    assert pending and pending["from"] == key_id(old)
    code, _, err = run_cli("run", "features", *cli)
    assert code != 0 and "rotate-key" in err  # nothing runs on a lake between two keys
    monkeypatch.undo()

    code, out, err = run_cli("privacy", "rotate-key", *cli)
    assert code == 0, err
    new = load_key(cfg)
    assert key_id(new) == pending["to"] and rotation_pending(cfg) is None
    assert old not in key_path(cfg).read_bytes()
    # Every row is where it was, each token the new key's token of the same id.
    renamed_now = {token(i, new): i for i in ids}
    assert {t: content(t, renamed_now) for t in HOLDERS} == before
    swapped = sorted(
        re.sub("[0-9a-f]{64}", lambda m: token(renamed[m[0]], new) if m[0] in renamed else m[0], p)
        for p in quarantined
    )
    assert payloads() == swapped

    # No file under the root keeps an old token (old versions and change data vacuumed).
    olds = set(renamed)
    left = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        found = set(re.findall(rb"[0-9a-f]{64}", path.read_bytes()))
        if path.name.endswith(".parquet"):
            found |= {m.encode() for v in _strings(path) for m in re.findall("[0-9a-f]{64}", v)}
        if {f.decode() for f in found} & olds:
            left.append(str(path.relative_to(root)))
    assert left == []

    # Cleanse with the new key makes exactly what the rotation wrote: it commits nothing.
    silver = ("silver.transactions", "silver.customers", "silver.quarantine")
    versions = {t: lake.version(t) for t in silver}
    run_single(cfg, "cleanse", spark=spark)
    assert {t: lake.version(t) for t in versions} == versions
