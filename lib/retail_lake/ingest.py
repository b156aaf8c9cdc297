"""Ingest: landing files -> bronze tables (every field as text, with provenance).

Files are parsed inside Spark tasks (one task per file, `mapInPandas`) with Python's csv
module in the encoding the source declares, so line numbers are exact and a structurally
broken line (wrong column count, unparseable record, undecodable bytes) goes to
`silver.quarantine` with the raw line instead of failing the load or vanishing.
A file already in its bronze table is not ingested again; new files are picked up.

Conservation, per source: records in the files = bronze rows added + quarantined at ingest,
where the records in a file are counted from its bytes by `retail_lake.record_count`, apart
from the parser, so a parser that skips or merges a line fails the run naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from retail_lake.config import Config
from retail_lake.contracts import ContractError, TableContract
from retail_lake.demo import HISTORY
from retail_lake.lake import Lake
from retail_lake.leases import ops_rows
from retail_lake.ops import LANDED_FILES
from retail_lake.privacy import load_key, token
from retail_lake.quarantine import QUARANTINE
from retail_lake.record_count import CHUNK_BYTES, count_csv_records, dialect_bytes
from retail_lake.runner import (
    Conservation,
    JobContext,
    JobError,
    JobResult,
    Output,
    append_ops_rows,
)

log = logging.getLogger(__name__)

KIND_ROW, KIND_BROKEN, KIND_SUMMARY, KIND_ERROR = "row", "broken", "summary", "error"


# A UTF-8 byte order mark, as the first character decoded (spreadsheet exports write one).
BOM = "\ufeff"


class SchemaDriftError(JobError):
    """A landing file's header does not match the source's declared columns."""


class UnreadableFileError(JobError):
    """A landing file could not be read to its end (truncated gzip, I/O error)."""


@dataclass(frozen=True)
class SourceSpec:
    """One configured source (`sources.<name>` in the config)."""

    name: str
    format: str
    pattern: str
    table: str
    delimiter: str
    quote: str
    encoding: str
    header: bool
    columns: tuple[str, ...]
    personal_columns: tuple[str, ...] = ()
    # Schema drift of a file's header: stop (error naming the column) or evolve (bronze
    # gains the new columns; see `evolve_layouts`).
    on_drift: str = "stop"
    # "auto": lines end in LF or CRLF; "cr": in a carriage return only.
    line_ending: str = "auto"
    # Field values that mean missing (e.g. "NA"): null in bronze.
    null_markers: tuple[str, ...] = ()
    # The whole configured entry, for format-specific keys.
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, raw: dict, formats: Iterable[str] = ("csv",)) -> SourceSpec:
        """The spec of `sources.<name>`; `formats`: the formats the ingest job can read."""
        if raw["format"] not in formats:
            raise JobError(
                f"source {name}: format {raw['format']!r} is not supported ({', '.join(formats)})"
            )
        if raw.get("on_drift", "stop") not in ("stop", "evolve"):
            raise JobError(
                f"source {name}: on_drift must be stop or evolve, got {raw['on_drift']!r}"
            )
        if raw.get("line_ending") == "cr" and raw.get("encoding", "").lower().startswith("utf-16"):
            raise JobError(f"source {name}: line_ending cr needs an ASCII-compatible encoding")
        personal = tuple(raw.get("personal_columns") or ())
        unknown = [c for c in personal if c not in raw["columns"]]
        if unknown:
            raise JobError(f"source {name}: personal_columns {unknown} are not among its columns")
        return cls(
            name,
            raw["format"],
            raw["pattern"],
            raw["table"],
            raw.get("delimiter", ","),
            raw.get("quote", '"'),
            raw.get("encoding", "utf-8"),
            raw.get("header", True),
            tuple(raw["columns"]),
            personal,
            raw.get("on_drift", "stop"),
            raw.get("line_ending", "auto"),
            tuple(raw.get("null_markers") or ()),
            MappingProxyType(dict(raw)),
        )


def landing_dir(cfg: Config) -> str:
    """The configured landing folder, or the demo data bundled with the package."""
    if cfg.get("paths.landing"):
        return cfg.get("paths.landing")
    bundled = resources.files("retail_lake") / "demo_data"
    if not isinstance(bundled, Path) or not bundled.is_dir():
        raise JobError(
            "paths.landing is not set, and the bundled demo data is not a folder "
            "(the library runs from an archive): set paths.landing"
        )
    if not (bundled / HISTORY).is_file():
        log.warning(
            "the demo data has no Online Retail history (generated from the shared data by "
            "'./setup_cluster.sh install', or 'python -m retail_lake.demo --history-from "
            "<online_retail.csv.gz>'): recommend will see one day of customers"
        )
    return str(bundled)


def list_files(spark: SparkSession, landing: str, pattern: str) -> list[tuple[str, str]]:
    """(relative name, full URI) of the files matching `pattern` under `landing`, sorted."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    base = jvm.org.apache.hadoop.fs.Path(landing)
    fs = base.getFileSystem(conf)
    if not fs.exists(base):
        raise JobError(f"landing folder {landing} does not exist (paths.landing)")
    qualified = fs.makeQualified(base).toString().rstrip("/")
    found = fs.globStatus(jvm.org.apache.hadoop.fs.Path(f"{landing.rstrip('/')}/{pattern}"))
    out = []
    for status in found or []:
        if status.isFile():
            uri = status.getPath().toString()
            out.append((uri[len(qualified) + 1 :] if uri.startswith(qualified) else uri, uri))
    return sorted(out)


@contextmanager
def _input_stream(uri: str) -> Iterator[Any]:
    """The decompressed bytes of a (possibly gzip) file at a local path or URI (pyarrow)."""
    from pyarrow import fs as pafs

    if uri.startswith("file:"):  # Hadoop writes local paths as file:/x
        uri = "/" + uri[len("file:") :].lstrip("/")
    if "://" in uri:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    else:
        filesystem, path = pafs.LocalFileSystem(), uri
    with filesystem.open_input_stream(path, compression="detect") as stream:
        yield stream


def _chunks(stream: Any, line_ending: str = "auto") -> Iterator[bytes]:
    """The stream's bytes in chunks; with `line_ending="cr"` each carriage return read as a
    line feed (a file whose lines end in CR alone is then read like any other)."""
    for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
        yield chunk.replace(b"\r", b"\n") if line_ending == "cr" else chunk


def _open_text_lines(uri: str, line_ending: str = "auto") -> Iterator[bytes]:
    """Raw lines of a (possibly gzip) file at a local path or URI."""
    with _input_stream(uri) as stream:
        if line_ending == "auto":
            yield from io.BufferedReader(stream, buffer_size=1 << 20)
            return
        rest = b""
        for chunk in _chunks(stream, line_ending):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from (line + b"\n" for line in lines)
        if rest:
            yield rest


def file_records(uri: str, spec: SourceSpec, max_record_lines: int) -> int:
    """The records of a CSV landing file counted from its bytes, without the parser."""
    with _input_stream(uri) as stream:
        return count_csv_records(
            _chunks(stream, spec.line_ending),
            spec.delimiter,
            spec.quote,
            spec.encoding,
            spec.header,
            max_record_lines,
        )


def read_header(uri: str, spec: SourceSpec) -> list[str]:
    """The header's fields (a UTF-8 byte order mark dropped); [] for an empty file.

    Raises:
        ValueError: the lines end in a carriage return only (read as one line).
    """
    for raw in _open_text_lines(uri, spec.line_ending):
        line = raw.decode(spec.encoding).rstrip("\r\n").removeprefix(BOM)
        if "\r" in line:
            raise ValueError(
                "its lines end in a carriage return only (classic Mac OS line endings): "
                f"declare sources.{spec.name}.line_ending: cr, or convert them to LF or CRLF"
            )
        return next(csv.reader([line], delimiter=spec.delimiter, quotechar=spec.quote))
    return []


def check_header(header: list[str], spec: SourceSpec, source_file: str) -> None:
    """Stops with the column named when the file's header drifts from the declared one."""
    expected = list(spec.columns)
    if header == expected:
        return
    missing = [c for c in expected if c not in header]
    added = [c for c in header if c not in expected]
    detail = []
    if missing:
        detail.append(f"missing column(s) {missing}")
    if added:
        detail.append(f"new column(s) {added}")
    if not detail:
        detail.append(f"columns in a different order: {header}")
    raise SchemaDriftError(
        f"{source_file}: header does not match source '{spec.name}': {'; '.join(detail)} "
        f"(declared: {expected}; update sources.{spec.name}.columns and the bronze contract)"
    )


def _parse_schema(columns: list[str]) -> StructType:
    return StructType(
        [StructField(c, StringType()) for c in columns]
        + [
            StructField("_source_file", StringType()),
            StructField("_line_number", LongType()),
            StructField("_kind", StringType()),
            StructField("_rule", StringType()),
            StructField("_reason", StringType()),
            StructField("_raw", StringType()),
        ]
    )


def cap_payload(text: str, limit: int) -> str:
    """`text` cut at `limit` characters with its whole length noted (0: never cut).

    Example:
        >>> cap_payload("x" * 100_000, 16384)[-40:]
        'xxx... [100000 characters, cut at 16384]'
    """
    if not limit or len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text)} characters, cut at {limit}]"


def mask_personal(text: str, spec: SourceSpec, key: bytes) -> str:
    """A broken line with the personal fields replaced by their tokens; never fails.

    The line does not have the declared shape, so the field of a personal column is looked
    for at its position counted from the start and from the end (a stray delimiter before or
    after it shifts it one way); both are replaced. A line whose fields cannot be told apart
    (a quote left open, a carriage return or a field too long for the csv module) has every
    piece between delimiters replaced. Over-masking is the safe side.

    Example:
        >>> mask_personal('536366,22633,"HAND WARMER,6,...,17850.0,United Kingdom', spec, key)
        '<token>,<token>,<token>,<token>,...'  # a quote left open: every piece masked
    """
    fields = None
    if text.count(spec.quote) % 2 == 0:
        try:
            fields = next(
                csv.reader([text], delimiter=spec.delimiter, quotechar=spec.quote, strict=True), []
            )
        except csv.Error:  # a stray carriage return, a field over the csv module's limit
            fields = None
    if fields is None:
        pieces = text.split(spec.delimiter)
        return spec.delimiter.join(token(p, key) if p.strip() else p for p in pieces)
    width = len(spec.columns)
    positions = set()
    for col in spec.personal_columns:
        i = spec.columns.index(col)
        positions |= {i, len(fields) - (width - i)}
    masked = [token(v, key) if p in positions and v.strip() else v for p, v in enumerate(fields)]
    out = io.StringIO()
    csv.writer(out, delimiter=spec.delimiter, quotechar=spec.quote, lineterminator="").writerow(
        masked
    )
    return out.getvalue()


def records_of(
    raw_lines: Iterator[bytes], spec: SourceSpec, max_record_lines: int, width: int | None = None
) -> Iterator[tuple[str, int, list[str] | None, str | None, str | None, str]]:
    """The records of a CSV file's raw lines: (kind, first line, fields, rule, reason, text).

    A quoted field may hold line breaks: a line that ends inside quotes is joined with the
    next ones (up to `max_record_lines` lines) until the record closes; the record keeps
    its first line's number. A quote that never closes quarantines that one line and the
    lines after it are read again as records of their own, so one stray quote cannot
    swallow the rest of the file. Read errors (a truncated gzip) propagate. `width` is the
    number of fields a record must have (default: the declared columns).
    `retail_lake.record_count` counts the same records from the bytes, apart from this
    parser, for conservation: a change to this contract changes both.
    """
    width = width or len(spec.columns)
    delimiter, quote = spec.delimiter, spec.quote
    numbered = enumerate(raw_lines, start=1)
    replay: deque[tuple[int, bytes]] = deque()
    pending: list[tuple[int, bytes, str]] = []  # lines of a record still inside quotes
    first_error = ""

    def parse(texts: list[str]) -> tuple[list[list[str]] | None, str | None]:
        reader = csv.reader(
            [t + "\n" for t in texts], delimiter=spec.delimiter, quotechar=spec.quote, strict=True
        )
        try:
            return list(reader), None
        except csv.Error as exc:
            return None, str(exc)

    def give_up() -> tuple[str, int, None, str, str, str]:
        """The first pending line as unparseable; the others are read again."""
        start, _, text = pending[0]
        replay.extendleft(reversed([(n, raw) for n, raw, _ in pending[1:]]))
        pending.clear()
        return (KIND_BROKEN, start, None, "unparseable", f"not a valid CSV record: {first_error}",
                text)  # fmt: skip

    while True:
        try:
            line_no, raw = replay.popleft() if replay else next(numbered)
        except StopIteration:
            if not pending:
                return
            yield give_up()
            continue
        if line_no == 1 and spec.header:
            continue
        try:
            text = raw.decode(spec.encoding).rstrip("\r\n")
            if line_no == 1:
                text = text.removeprefix(BOM)
        except UnicodeDecodeError as exc:
            if pending:
                replay.appendleft((line_no, raw))
                yield give_up()
                continue
            reason = f"not valid {spec.encoding}: {exc}"
            yield KIND_BROKEN, line_no, None, "undecodable", reason, raw.decode("latin-1")
            continue
        if not pending and text and quote not in text and "\r" not in text:
            # No quote and no stray line break: the csv module's fields are the plain split
            # (tests/test_ingest.py compares the two on every kind of line).
            fields = text.split(delimiter)
            if len(fields) != width:
                reason = f"expected {width} fields, found {len(fields)}"
                yield KIND_BROKEN, line_no, None, "column_count", reason, text
            else:
                yield KIND_ROW, line_no, fields, None, None, text
            continue
        texts = [t for _, _, t in pending] + [text]
        parsed, error = parse(texts)
        if parsed is not None and len(parsed) == 1:
            start = pending[0][0] if pending else line_no
            pending.clear()
            fields, record = parsed[0], "\n".join(texts)
            if len(fields) != width:
                reason = f"expected {width} fields, found {len(fields)}"
                yield KIND_BROKEN, start, None, "column_count", reason, record
            else:
                yield KIND_ROW, start, fields, None, None, record
            continue
        if error and "unexpected end of data" in error and len(texts) < max_record_lines:
            if not pending:
                first_error = error
            pending.append((line_no, raw, text))
            continue
        if pending:
            replay.appendleft((line_no, raw))
            yield give_up()
            continue
        yield KIND_BROKEN, line_no, None, "unparseable", f"not a valid CSV record: {error}", text


def _parser(
    spec: SourceSpec,
    columns: list[str],
    batch_rows: int,
    max_record_lines: int,
    key: bytes | None,
    layouts: Mapping[str, tuple[int, list[int | None]]],
    max_payload_chars: int = 0,
):
    """The mapInPandas function: rows of (file, uri) in, parsed records out, then per file a
    summary row whose `_line_number` is the file's records counted from its bytes apart from
    the parser (`file_records`), or an error row if the file cannot be read to its end.

    `layouts` maps a file whose header differs from the declared one (schema drift that the
    source evolves) to (fields per record, header position of each output column or None).
    A field equal to one of the source's `null_markers` is null in bronze. A broken line's
    payload is cut at `max_payload_chars` (0: whole), its length noted (`cap_payload`).
    """
    width = len(columns)
    markers = frozenset(spec.null_markers)

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for files in batches:
            for source_file, uri in zip(files["source_file"], files["uri"], strict=True):
                yield from _parse_file(source_file, uri)

    def _parse_file(source_file: str, uri: str) -> Iterator[pd.DataFrame]:
        rows: list[list] = []
        records = 0

        def flush():
            frame = pd.DataFrame(
                rows,
                columns=[
                    *columns,
                    "_source_file",
                    "_line_number",
                    "_kind",
                    "_rule",
                    "_reason",
                    "_raw",
                ],
            )
            rows.clear()
            return frame

        def broken(line_no: int, rule: str, reason: str, raw: str) -> list:
            if key is not None:
                raw = mask_personal(raw, spec, key)
            raw = cap_payload(raw, max_payload_chars)
            return [None] * width + [source_file, line_no, KIND_BROKEN, rule, reason, raw]

        fields_per_record, positions = layouts.get(source_file, (width, None))
        try:
            for kind, line_no, fields, rule, reason, text in records_of(
                _open_text_lines(uri, spec.line_ending), spec, max_record_lines, fields_per_record
            ):
                records += 1
                if kind == KIND_BROKEN:
                    rows.append(broken(line_no, rule, reason, text))
                    continue
                if positions is not None:
                    fields = [None if i is None else fields[i] for i in positions]
                if markers:
                    fields = [None if f in markers else f for f in fields]
                rows.append([*fields, source_file, line_no, KIND_ROW, None, None, None])
                if len(rows) >= batch_rows:
                    yield flush()
            counted = file_records(uri, spec, max_record_lines)
        except Exception as exc:  # truncated gzip, I/O error: the whole file is refused
            rows.clear()
            rows.append(
                [None] * width
                + [source_file, records + 1, KIND_ERROR, "unreadable_file", str(exc), None]
            )
            yield flush()
            return
        summary = [None] * width + [source_file, counted, KIND_SUMMARY, None, None, None]
        rows.append(summary)
        yield flush()

    return parse


def _row_hash(declared: list[str], extras: list[str]) -> Column:
    """SHA-256 of the raw fields; evolved columns count only when set, so a line hashes the
    same whether or not other files of its run brought new columns."""
    text = F.to_json(F.struct(*declared), {"ignoreNullFields": "false"})
    if extras:
        added = F.to_json(F.struct(*extras))  # null fields left out
        text = F.concat(text, F.when(added != "{}", added).otherwise(F.lit("")))
    return F.sha2(text, 256)


def bronze_name(header: str) -> str:
    """A header as a bronze column name: `Store Number`, `StoreNumber` -> `store_number`."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", header)  # PromoMonths -> Promo_Months
    name = re.sub(r"[^0-9a-zA-Z]+", "_", words).strip("_").lower()
    return name if name and not name[0].isdigit() else f"col_{name}"


def evolve_layouts(
    headers: Mapping[str, list[str]],
    spec: SourceSpec,
    columns: list[str],
    lake: Lake,
    contract: TableContract,
) -> tuple[list[str], dict[str, tuple[int, list[int | None]]]]:
    """Column layouts of drifting files for a source that evolves (`on_drift: evolve`).

    A header column that is not declared becomes a new bronze column (text, named in
    snake_case; null for the rows of other files); a declared column missing from a file is
    null for its rows. A rename is both: the values stay in bronze under the new name.
    Returns (the new bronze columns, per file: fields per record and the header position of
    each output column).
    """
    existing = set(lake.read(contract.name).columns) if lake.exists(contract.name) else set()
    taken = set(contract.column_names)
    extras: dict[str, str] = {}  # header -> bronze column
    for name, header in sorted(headers.items()):
        added = [h for h in header if h not in spec.columns]
        missing = [c for c in spec.columns if c not in header]
        log.warning(
            "source %s: %s drifts from the declared columns (new %s, missing %s); evolving "
            "bronze (on_drift: evolve)",
            spec.name,
            name,
            added,
            missing,
        )
        for h in added:
            if h not in extras:
                col = bronze_name(h)
                while col in taken and col not in existing:
                    col += "_"
                extras[h] = col
                taken.add(col)
    layouts = {}
    for name, header in headers.items():
        index = {h: i for i, h in enumerate(header)}
        positions = [index.get(c) for c in spec.columns] + [index.get(h) for h in extras]
        layouts[name] = (len(header), positions)
    return list(extras.values()), layouts


def new_files(ctx: JobContext, spec: SourceSpec, landing: str, pattern: str) -> list:
    """(name, uri) of the files matching `pattern` to ingest now.

    A file is taken when its rows are not in the source's bronze table yet and its bytes are
    not those of a file already ingested (`ops.landed_files`, the ledger): a copy landed under
    another name is skipped with one warning and recorded as a duplicate; a retracted file
    (`retail_lake.landing`) is skipped while its bytes are the same. Every file taken,
    and every file in bronze the ledger lacks (an older lake, or a run that ended between
    its bronze commit and its ledger commit), gets a ledger row when the run publishes.
    """
    files = list_files(ctx.spark, landing, pattern)
    if not files:
        log.warning("source %s: no file matches %s under %s", spec.name, pattern, landing)
        return []
    seen: set[str] = set()
    if ctx.lake.exists(spec.table):
        seen = {r[0] for r in ctx.read(spec.table).select("_source_file").distinct().collect()}
    known = _ledger(ctx, spec.name)
    ingested = {row["content_sha256"]: f for f, row in known.items() if row["status"] == INGESTED}
    new = []
    for name, uri in files:
        if name in known and known[name]["status"] == INGESTED:
            continue
        if name in seen:  # in bronze, not in the ledger: recorded now
            _record(ctx, spec, name, *file_digest(uri), INGESTED)
            continue
        retracted = name in known and known[name]["status"] == RETRACTED
        if (
            name in known
            and not retracted
            and known[name]["size_bytes"] == file_digest(uri, content=False)[0]
        ):
            continue  # a duplicate or an empty file, recorded and warned about once
        size, digest = file_digest(uri)
        if retracted and digest == known[name]["content_sha256"]:
            log.info("source %s: %s was retracted (run %s): skipped while its bytes are the same",
                     spec.name, name, known[name]["run_id"])  # fmt: skip
            continue
        if digest in ingested:
            log.warning(
                "source %s: %s has the same content as %s, already ingested: skipped (recorded "
                "in ops.landed_files as a duplicate)",
                spec.name,
                name,
                ingested[digest],
            )
            _record(ctx, spec, name, size, digest, DUPLICATE, ingested[digest])
            continue
        ingested[digest] = name
        _record(ctx, spec, name, size, digest, INGESTED)
        new.append((name, uri))
    log.info("source %s: %d file(s), %d new", spec.name, len(files), len(new))
    return new


INGESTED, DUPLICATE, EMPTY, RETRACTED = "ingested", "duplicate", "empty", "retracted"


def file_digest(uri: str, content: bool = True) -> tuple[int, str]:
    """(size in bytes, SHA-256 of the bytes as they arrived) of a landing file; the digest
    is "" when `content` is false (the size alone: no read)."""
    from pyarrow import fs as pafs

    path = "/" + uri[len("file:") :].lstrip("/") if uri.startswith("file:") else uri
    if "://" in path:
        filesystem, path = pafs.FileSystem.from_uri(path)
    else:
        filesystem = pafs.LocalFileSystem()
    if not content:
        return filesystem.get_file_info(path).size, ""
    digest, size = hashlib.sha256(), 0
    with filesystem.open_input_stream(path, compression=None) as stream:  # the bytes landed
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _ledger(ctx: JobContext, source: str) -> dict[str, dict[str, Any]]:
    """file -> its latest ledger row, for `source` (read once per run)."""
    if "ledger" not in ctx.state:
        ledger: dict[str, dict[str, dict[str, Any]]] = {}
        for r in sorted(ops_rows(ctx.lake, LANDED_FILES), key=lambda r: r["recorded_at"]):
            ledger.setdefault(r["source"], {})[r["file"]] = r
        ctx.state["ledger"] = ledger
    return ctx.state["ledger"].get(source, {})


def _record(
    ctx: JobContext,
    spec: SourceSpec,
    name: str,
    size: int,
    digest: str,
    status: str,
    duplicate_of: str | None = None,
) -> None:
    """A ledger row the run publishes after the source's bronze rows (`run`)."""
    ctx.state.setdefault("landed", []).append(
        {
            "source": spec.name,
            "file": name,
            "size_bytes": size,
            "content_sha256": digest,
            "status": status,
            "duplicate_of": duplicate_of,
            "run_id": ctx.run_id,
            "recorded_at": datetime.now(UTC),
        }
    )


def _forget(ctx: JobContext, spec: SourceSpec, name: str) -> None:
    """Drops the ledger row this run holds for `name` (a file found empty after all)."""
    landed = ctx.state.get("landed", [])
    ctx.state["landed"] = [r for r in landed if (r["source"], r["file"]) != (spec.name, name)]


@dataclass(frozen=True)
class FileConservation(Conservation):
    """A source's check that also fails when one file's counts differ, even if another
    file's difference makes the source's totals agree."""

    differing: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        return not self.differing and super().holds


def file_conservation(spec: SourceSpec, produced: Mapping[str, Mapping[str, int]]) -> Conservation:
    """Records in the files (each file's summary: counted from its bytes) = bronze rows
    added + quarantined, per source and per file; the files that differ are named."""
    differing = []
    for name, kinds in sorted(produced.items()):
        parsed = kinds.get(KIND_ROW, 0) + kinds.get(KIND_BROKEN, 0)
        if parsed != kinds.get(KIND_SUMMARY, 0):
            differing.append(
                f"{name}: {kinds.get(KIND_SUMMARY, 0)} records in the file, {parsed} parsed"
            )
            log.error("source %s: %s", spec.name, differing[-1])
    title = f"ingest {spec.name}: records in the files = bronze rows added + quarantined"
    return FileConservation(
        title + (f" (differs for {'; '.join(differing)})" if differing else ""),
        {"file_records": int(sum(k.get(KIND_SUMMARY, 0) for k in produced.values()))},
        {
            "bronze_rows": int(sum(k.get(KIND_ROW, 0) for k in produced.values())),
            "quarantined": int(sum(k.get(KIND_BROKEN, 0) for k in produced.values())),
        },
        tuple(differing),
    )


def ingest_source(
    ctx: JobContext, spec: SourceSpec, landing: str, ingested_at: datetime, cached: list[DataFrame]
) -> tuple[DataFrame | None, DataFrame | None, Conservation | None]:
    """Parses the new files of one source; returns (bronze rows, quarantine rows, check)."""
    contract = ctx.registry[spec.table]
    columns = [c for c in contract.content_columns]
    if len(columns) != len(spec.columns):
        raise ContractError(
            f"{spec.table} has {len(columns)} raw columns but source "
            f"{spec.name} declares {len(spec.columns)}"
        )
    try:
        dialect_bytes(spec.delimiter, spec.quote, spec.encoding)
    except ValueError as exc:
        raise JobError(f"source {spec.name}: {exc}") from exc
    max_record_lines = ctx.cfg.get("ingest.max_record_lines")
    new = new_files(ctx, spec, landing, spec.pattern)
    if not new:
        return None, None, None
    headers: dict[str, list[str]] = {}
    for name, uri in list(new):
        if not spec.header:
            continue
        try:
            header = read_header(uri, spec)
        except Exception as exc:
            raise UnreadableFileError(f"{name}: unreadable: cannot read the header: {exc}") from exc
        if not header:
            records = file_records(uri, spec, max_record_lines)
            if records:  # a blank first line is no header: the records after it are not dropped
                raise SchemaDriftError(
                    f"{name}: the header line is empty but {records} record(s) follow it"
                )
            # Nothing to ingest: recorded as empty, so it is warned about once (a file that
            # grows later is looked at again: its size no longer matches).
            log.warning("source %s: %s is empty (no header, no records); skipped", spec.name, name)
            _forget(ctx, spec, name)
            _record(ctx, spec, name, *file_digest(uri), EMPTY)
            new.remove((name, uri))
            continue
        if spec.on_drift == "stop" or header == list(spec.columns):
            check_header(header, spec, name)
        else:
            headers[name] = header
    if not new:
        return None, None, None
    declared = columns
    extras, layouts = evolve_layouts(headers, spec, columns, ctx.lake, contract)
    columns = [*columns, *extras]
    file_df = ctx.spark.createDataFrame(new, "source_file string, uri string").repartition(len(new))
    key = load_key(ctx.cfg) if spec.personal_columns else None
    parsed = file_df.mapInPandas(
        _parser(
            spec,
            columns,
            ctx.cfg.get("ingest.batch_rows"),
            max_record_lines,
            key,
            layouts,
            ctx.cfg.get("ingest.max_payload_chars"),
        ),
        _parse_schema(columns),
    ).cache()
    cached.append(parsed)
    # Per file and kind: rows produced; for the summary, the records counted from the bytes.
    per_kind = (
        parsed.groupBy("_source_file", "_kind")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.max(F.when(F.col("_kind") == KIND_SUMMARY, F.col("_line_number"))).alias("counted"),
        )
        .collect()
    )
    produced: dict[str, dict[str, int]] = {name: {} for name, _ in new}
    for r in per_kind:
        kinds = produced.setdefault(r["_source_file"], {})
        kinds[r["_kind"]] = r["counted"] if r["_kind"] == KIND_SUMMARY else r["n"]
    counts = {
        k: sum(p.get(k, 0) for p in produced.values()) for k in (KIND_ROW, KIND_BROKEN, KIND_ERROR)
    }
    if counts.get(KIND_ERROR):
        errors = parsed.where(F.col("_kind") == KIND_ERROR).orderBy("_source_file").collect()
        raise UnreadableFileError(
            "cannot read landing file(s) to the end; nothing was ingested: "
            + "; ".join(
                f"{r['_source_file']}: unreadable after {r['_line_number'] - 1} records: "
                f"{r['_reason']}"
                for r in errors
            )
        )
    for name, uri in new:  # every file is counted in its task; this is only a safety net
        if KIND_SUMMARY not in produced[name]:
            produced[name][KIND_SUMMARY] = file_records(uri, spec, max_record_lines)
    check = file_conservation(spec, produced)
    bronze = (
        parsed.where(F.col("_kind") == KIND_ROW)
        .withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
        .withColumn("_row_hash", _row_hash(declared, extras))
        .select(*columns, "_source_file", "_line_number", "_ingested_at", "_row_hash")
    )
    # Nothing broken: no quarantine output (no gate, no MERGE to run for nothing).
    quarantine = (
        None
        if not counts.get(KIND_BROKEN)
        else parsed.where(F.col("_kind") == KIND_BROKEN).select(
            F.lit(spec.name).alias("source"),
            F.lit("ingest").alias("stage"),
            F.col("_rule").alias("rule"),
            F.lit(None).cast("string").alias("column"),
            F.col("_reason").alias("reason"),
            F.col("_raw").alias("payload"),
            "_source_file",
            "_line_number",
            F.lit(ingested_at).cast("timestamp").alias("_quarantined_at"),
        )
    )
    log.info(
        "source %s: %d records in the files -> %d bronze, %d quarantined",
        spec.name,
        sum(check.inputs.values()),
        counts.get(KIND_ROW, 0),
        counts.get(KIND_BROKEN, 0),
    )
    return bronze, quarantine, check


def run(ctx: JobContext) -> JobResult:
    """The ingest job: every configured source's new landing files into bronze.

    Reads `paths.landing` (default: the bundled demo data) with each source's format
    (`ctx.components.formats`: csv, idx); writes each source's `bronze.*_raw` table (append)
    and the broken records to `silver.quarantine`, behind per-source row conservation.

    Example:
        $ retail-lake run ingest --set paths.landing=../shared/data

        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "ingest", JOBS["ingest"])
        >>> writes["bronze.rossmann_sales_raw"].inserted
    """
    landing = landing_dir(ctx.cfg)
    ingested_at = datetime.utcnow()
    result = JobResult()
    quarantined = []
    for name in ctx.cfg.sources:
        formats = ctx.components.formats
        spec = SourceSpec.from_config(name, ctx.cfg.get(f"sources.{name}"), formats)
        reader = formats[spec.format]
        bronze, quarantine, check = reader(ctx, spec, landing, ingested_at, result.cached)
        if bronze is None:
            continue
        declared = ctx.registry[spec.table].column_names
        extra = tuple(c for c in bronze.columns if c not in declared)
        result.outputs.append(Output(spec.table, bronze, mode="append", extra_columns=extra))
        if quarantine is not None:  # None: the format quarantines nothing at ingest
            quarantined.append(quarantine)
        result.conservation.append(check)
        result.rows_read[name] = sum(check.inputs.values())
    if quarantined:
        union = quarantined[0]
        for q in quarantined[1:]:
            union = union.unionByName(q)
        # Published first: a run that ends between two commits has left nothing out. Its
        # broken lines are kept (a re-run merges the same rows again); a file whose bronze
        # rows were not committed is taken again; the ledger is written last.
        result.outputs.insert(0, Output(QUARANTINE, union, mode="merge"))
    landed = ctx.state.get("landed", [])
    if landed:  # after every output is committed: a file is ledgered once its rows are in
        result.after_publish = lambda writes: append_ops_rows(
            ctx.lake, LANDED_FILES, landed, ctx.run_id
        )
    log.info("ingest: %s", json.dumps(result.rows_read))
    return result
