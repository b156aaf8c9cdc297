"""Ingest of IDX image data sets (Fashion-MNIST): images + labels file pairs -> bronze.

An IDX file is a big-endian header (magic, then one 32-bit size per dimension) followed by
unsigned bytes: images have magic 2051 and dims (count, 28, 28), labels magic 2049 and dims
(count,). Each images file matching the source's `pattern` is paired with the labels file
of the same name with `images_token` replaced by `labels_token` (both must match their
patterns); the split is the images file name up to its first `-`, mapped through `splits`
(a prefix not listed is kept as it is).

A pair is parsed inside one Spark task (`mapInPandas`): one bronze row per image, with
`image_id` = `<split>-<index:05d>`, the label, the 784 pixels and provenance
(`_line_number` = index + 1). A structural problem (wrong magic, dims other than 28x28,
counts that differ, a truncated gzip, a file shorter or longer than its header says, a
missing labels file) stops the job with `IdxFormatError` naming the file before anything
is written, so a partially read pair is never marked ingested. Headers are checked on the
driver first (a few bytes each); the rest is checked where the bytes are read.

Conservation, per source: records read = bronze rows added + quarantined at ingest (always
0 here: a record of a sound file has nothing left to break).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
)

from retail_lake.contracts import ContractError
from retail_lake.ingest import SourceSpec, list_files, new_files
from retail_lake.runner import Conservation, JobContext, JobError
from retail_lake.sources.fashion_mnist.tables import COLS, PIXELS, RAW_COLUMNS, ROWS

log = logging.getLogger(__name__)

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
KIND_ROW, KIND_SUMMARY, KIND_ERROR = "row", "summary", "error"
DEFAULT_BATCH_ROWS = 10_000


class IdxFormatError(JobError):
    """An IDX file or pair that is structurally broken; the job writes nothing."""


@dataclass(frozen=True)
class Pair:
    """One images file and its labels file (names relative to the landing folder)."""

    images: str
    images_uri: str
    labels: str
    labels_uri: str
    split: str


# ----------------------------------------------------------------------------- reading
def _open(uri: str, name: str) -> BinaryIO:
    """A binary stream of the file's content (gunzipped when the name ends in .gz)."""
    from pyarrow import fs as pafs

    if uri.startswith("file:"):  # Hadoop writes local paths as file:/x
        uri = "/" + uri[len("file:") :].lstrip("/")
    if "://" in uri:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    else:
        filesystem, path = pafs.LocalFileSystem(), uri
    raw = filesystem.open_input_stream(path, compression=None)
    # Python's gzip checks the CRC and the length trailer: a truncated file raises EOFError.
    return gzip.GzipFile(fileobj=raw, mode="rb") if name.endswith(".gz") else raw


def _read(stream: BinaryIO, name: str, size: int | None = None) -> bytes:
    """`size` bytes (or all), with read errors turned into IdxFormatError naming the file."""
    try:
        return stream.read() if size is None else stream.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{name}: cannot be read to its end ({exc})") from exc


def parse_header(head: bytes, name: str, magic: int, dims: tuple[int | None, ...]) -> int:
    """The record count of an IDX header; `dims` after the count must match (None: any).

    Raises:
        IdxFormatError: a short header, another magic number or other dimensions.
    """
    size = 4 * (2 + len(dims))
    if len(head) < size:
        raise IdxFormatError(f"{name}: header is {len(head)} bytes, expected {size}")
    found_magic, count, *found_dims = struct.unpack(f">{2 + len(dims)}I", head[:size])
    if found_magic != magic:
        raise IdxFormatError(f"{name}: magic number {found_magic}, expected {magic}")
    if any(want is not None and got != want for got, want in zip(found_dims, dims, strict=True)):
        shape = "x".join(str(d) for d in found_dims)
        raise IdxFormatError(
            f"{name}: header dims are {shape}, expected {'x'.join(str(d) for d in dims)}"
        )
    return count


def read_counts(pair: Pair) -> tuple[int, int]:
    """(images, labels) counts from the two headers; checks magic and dims."""
    with _open(pair.images_uri, pair.images) as stream:
        images = parse_header(
            _read(stream, pair.images, 16), pair.images, IMAGES_MAGIC, (ROWS, COLS)
        )
    with _open(pair.labels_uri, pair.labels) as stream:
        labels = parse_header(_read(stream, pair.labels, 8), pair.labels, LABELS_MAGIC, ())
    return images, labels


def _check_counts(pair: Pair, images: int, labels: int) -> None:
    if images != labels:
        raise IdxFormatError(
            f"{pair.images}: {images} images but {pair.labels} has {labels} labels"
        )


def _body(data: bytes, name: str, header: int, count: int, item: int) -> np.ndarray:
    """The records after the header as a (count, item) uint8 matrix; exact length checked."""
    found = len(data) - header
    if found != count * item:
        what = "shorter" if found < count * item else "longer"
        raise IdxFormatError(
            f"{name}: file is {what} than its header says: {count} records of {item} "
            f"byte(s) = {count * item} bytes expected after the header, {found} found"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(count, item)


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,), pixels (n, 784)) of a pair, every structural rule checked."""
    with _open(pair.images_uri, pair.images) as stream:
        images = _read(stream, pair.images)
    with _open(pair.labels_uri, pair.labels) as stream:
        labels = _read(stream, pair.labels)
    n_images = parse_header(images, pair.images, IMAGES_MAGIC, (ROWS, COLS))
    n_labels = parse_header(labels, pair.labels, LABELS_MAGIC, ())
    _check_counts(pair, n_images, n_labels)
    pixels = _body(images, pair.images, 16, n_images, PIXELS)
    return _body(labels, pair.labels, 8, n_labels, 1)[:, 0], pixels


# ----------------------------------------------------------------------------- parsing
def _parse_schema() -> StructType:
    return StructType(
        [
            StructField("image_id", StringType()),
            StructField("split", StringType()),
            StructField("image_index", IntegerType()),
            StructField("label", IntegerType()),
            StructField("pixels", ArrayType(ShortType())),
            StructField("labels_file", StringType()),
            StructField("_source_file", StringType()),
            StructField("_line_number", LongType()),
            StructField("_row_hash", StringType()),
            StructField("_kind", StringType()),
            StructField("_reason", StringType()),
        ]
    )


def _frame(pair: Pair, start: int, labels: np.ndarray, pixels: np.ndarray) -> pd.DataFrame:
    """Bronze rows of records start .. start+len(labels) of a pair."""
    index = np.arange(start, start + len(labels))
    return pd.DataFrame(
        {
            "image_id": [f"{pair.split}-{i:05d}" for i in index],
            "split": pair.split,
            "image_index": index.astype(np.int32),
            "label": labels.astype(np.int32),
            "pixels": list(pixels.astype(np.int16)),
            "labels_file": pair.labels,
            "_source_file": pair.images,
            "_line_number": index.astype(np.int64) + 1,
            "_row_hash": [
                hashlib.sha256(bytes([int(lab)]) + px.tobytes()).hexdigest()
                for lab, px in zip(labels, pixels, strict=True)
            ],
            "_kind": KIND_ROW,
            "_reason": None,
        }
    )


def _marker(pair: Pair, kind: str, number: int, reason: str | None = None) -> pd.DataFrame:
    """A summary (records read in `_line_number`) or error row of a pair."""
    row = dict.fromkeys(_parse_schema().fieldNames())
    row.update(_source_file=pair.images, _line_number=number, _kind=kind, _reason=reason)
    return pd.DataFrame([row])


def _parser(batch_rows: int):
    """The mapInPandas function: rows of pairs in, bronze rows plus a summary row out."""

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            for record in frame.itertuples(index=False):
                pair = Pair(*record)
                try:
                    labels, pixels = read_pair(pair)
                except IdxFormatError as exc:
                    # Reported to the driver, which stops the job before any write.
                    yield _marker(pair, KIND_ERROR, 0, str(exc))
                    continue
                for start in range(0, len(labels), batch_rows):
                    end = start + batch_rows
                    yield _frame(pair, start, labels[start:end], pixels[start:end])
                yield _marker(pair, KIND_SUMMARY, len(labels))

    return parse


# ----------------------------------------------------------------------------- pairing
def _split_of(images: str, splits: dict[str, str]) -> str:
    prefix = images.rsplit("/", 1)[-1].split("-", 1)[0]
    return splits.get(prefix, prefix)


def pair_files(
    images: list[tuple[str, str]],
    labels: list[tuple[str, str]],
    images_token: str,
    labels_token: str,
    splits: dict[str, str],
) -> list[Pair]:
    """Pairs each images file with its labels file (same folder, token replaced).

    Raises:
        IdxFormatError: an images file without the token in its name or without its labels
            file.
    """
    by_name = dict(labels)
    pairs = []
    for name, uri in images:
        folder, _, base = name.rpartition("/")
        if images_token not in base:
            raise IdxFormatError(f"{name}: the name does not contain {images_token!r}")
        partner = f"{folder}/{base.replace(images_token, labels_token)}".lstrip("/")
        if partner not in by_name:
            raise IdxFormatError(f"{name}: its labels file {partner} is missing")
        pairs.append(Pair(name, uri, partner, by_name[partner], _split_of(name, splits)))
    unpaired = sorted(set(by_name) - {p.labels for p in pairs})
    if unpaired:
        log.info("labels file(s) without a new images file: %s", ", ".join(unpaired))
    return pairs


def _option(spec: SourceSpec, key: str):
    try:
        return spec.options[key]
    except KeyError:
        raise JobError(f"source {spec.name}: format idx needs sources.{spec.name}.{key}") from None


# ----------------------------------------------------------------------------- the reader
def ingest_idx(
    ctx: JobContext, spec: SourceSpec, landing: str, ingested_at: datetime, cached: list[DataFrame]
) -> tuple[DataFrame | None, DataFrame | None, Conservation | None]:
    """Parses the new image/label pairs of one source; returns (bronze, quarantine, check).

    Same contract as `retail_lake.ingest.ingest_source`: (None, None, None) when there is
    nothing new; the frames are computed, not written (the runner audits, then writes).

    Raises:
        IdxFormatError: a structural problem in a new pair, naming the file.
    """
    contract = ctx.registry[spec.table]
    if tuple(spec.columns) != contract.content_columns:
        raise ContractError(
            f"source {spec.name} declares columns {list(spec.columns)} but {spec.table} "
            f"has {list(contract.content_columns)}"
        )
    new = new_files(ctx, spec, landing, spec.pattern)
    if not new:
        return None, None, None
    pairs = pair_files(
        new,
        list_files(ctx.spark, landing, _option(spec, "labels_pattern")),
        _option(spec, "images_token"),
        _option(spec, "labels_token"),
        dict(spec.options.get("splits") or {}),
    )
    for pair in pairs:  # headers first: a bad one stops the job before any task runs
        _check_counts(pair, *read_counts(pair))
    # One task per pair; the columns are Pair's fields, in order.
    pair_df = ctx.spark.createDataFrame(
        [(p.images, p.images_uri, p.labels, p.labels_uri, p.split) for p in pairs],
        "images string, images_uri string, labels string, labels_uri string, split string",
    ).repartition(len(pairs))
    batch_rows = int(spec.options.get("batch_rows") or DEFAULT_BATCH_ROWS)
    parsed = pair_df.mapInPandas(_parser(batch_rows), _parse_schema()).cache()
    cached.append(parsed)
    counts = {
        r["_kind"]: r["n"]
        for r in parsed.groupBy("_kind").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    if counts.get(KIND_ERROR):
        errors = parsed.where(F.col("_kind") == KIND_ERROR).orderBy("_source_file").collect()
        raise IdxFormatError(
            "broken IDX file(s); nothing was ingested: " + "; ".join(r["_reason"] for r in errors)
        )
    records = (
        parsed.where(F.col("_kind") == KIND_SUMMARY).agg(F.sum("_line_number")).first()[0] or 0
    )
    rows = parsed.where(F.col("_kind") == KIND_ROW)
    bronze = rows.select(
        *RAW_COLUMNS,
        "_source_file",
        "_line_number",
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        "_row_hash",
    )
    # Nothing is quarantined at ingest: a broken file stops the job (quarantine None).
    quarantine = None
    n_rows = int(counts.get(KIND_ROW, 0))
    check = Conservation(
        f"ingest {spec.name}: records read = bronze rows added + quarantined",
        {"records_read": int(records)},
        {"bronze_rows": n_rows, "quarantined": 0},
    )
    log.info("source %s: %d pair(s), %d images -> bronze", spec.name, len(pairs), n_rows)
    return bronze, quarantine, check
