"""Small Delta commits made by the driver itself with delta-rs (`deltalake`), no Spark job:
the run journal's rows (ops tables) and the creation of plain tables.

A one-row commit costs about 15 ms here against 0.4 s for Spark's append and 1-2 s for its
run-scoped overwrite, and a creation a few ms against 0.25 s (bench/RESULTS.md, "the fixed
cost of one step"). delta-rs 1.6 does not write column-mapped tables, so these are the
tables created without column mapping on a local file system; anything else (a remote root,
a column-mapped journal an older release created, no `deltalake`) is left to Spark: each
function says so by returning None or False.

    >>> table = driver_table("lake/ops/job_runs")                 # doctest: +SKIP
    >>> append_rows(table, arrow_rows(rows, schema), run_id)      # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

log = logging.getLogger(__name__)

# What delta-rs 1.6 writes here: plain tables up to writer version 2.
_WRITABLE_WRITER_VERSION = 2
_PROTOCOL = ("delta.minReaderVersion", "delta.minWriterVersion")


def local_folder(root: str) -> Path | None:
    """The lake root as a local folder, or None for a remote one (s3a://, abfss://, hdfs://)."""
    parsed = urlparse(root)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else root)
    return None


def delta_rs_folder(location: str) -> Path | None:
    """The local folder of `location` when delta-rs is installed to read and write it, else
    None (a remote location, or no `deltalake`)."""
    folder = local_folder(location)
    if folder is None or importlib.util.find_spec("deltalake") is None:
        return None
    return folder


def _column_mapped(properties: Mapping[str, str]) -> bool:
    return properties.get("delta.columnMapping.mode", "none") != "none"


def driver_table(location: str) -> Any | None:
    """The delta-rs handle of a local table that the driver can append to without Spark, or
    None (a remote root, no `deltalake`, or a table feature delta-rs does not write)."""
    folder = delta_rs_folder(location)
    if folder is None:
        return None
    from deltalake import DeltaTable

    try:
        table = DeltaTable(str(folder))
    except Exception as exc:  # not a table yet, or a log delta-rs cannot read
        log.debug("%s: not written by delta-rs (%s)", location, exc)
        return None
    protocol = table.protocol()
    config = table.metadata().configuration
    if protocol.min_writer_version > _WRITABLE_WRITER_VERSION or _column_mapped(config):
        return None
    return table


def create_table(location: str, schema_json: str, properties: dict[str, str], about: str) -> bool:
    """Creates an empty plain table (no column mapping) at a local `location` with delta-rs
    (a few ms against 0.25 s for Spark's CREATE TABLE); False where delta-rs cannot (a remote
    root, no `deltalake`, column mapping asked for), and Spark creates it.

    `schema_json`: Spark's schema JSON (Delta's schema string, column comments included).
    An error if the table exists: the caller tells a concurrent creation from a failure.
    """
    folder = delta_rs_folder(location)
    if folder is None or _column_mapped(properties):
        return False
    from deltalake import DeltaTable, Schema

    DeltaTable.create(
        str(folder),
        schema=Schema.from_json(schema_json),
        mode="error",
        description=about,
        # delta-rs's own protocol for a plain table is (1, 2); the versions are not settings.
        configuration={k: v for k, v in properties.items() if k not in _PROTOCOL},
    )
    return True


def append_rows(table: Any, rows: pa.Table, run_id: str, replace_run: bool = False) -> None:
    """Commits `rows` to a table from `driver_table` in one delta-rs commit tagged with
    `run_id` (Spark's `userMetadata`), without a Spark job: a one-row commit costs about
    15 ms here against 0.4 s for Spark's append and 1-2 s for its run-scoped overwrite
    (bench/RESULTS.md, "the fixed cost of one step").

    `replace_run`: the rows replace the table's rows whose `run_id` is `run_id`.
    """
    from deltalake import CommitProperties, write_deltalake

    properties = CommitProperties(custom_metadata={"userMetadata": run_id})
    if replace_run:
        write_deltalake(
            table,
            rows,
            mode="overwrite",
            predicate=f"run_id = '{run_id}'",
            commit_properties=properties,
        )
    else:
        write_deltalake(table, rows, mode="append", commit_properties=properties)
