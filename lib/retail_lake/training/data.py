"""Petastorm conversion of a training DataFrame, sized so every rank gets data.

Petastorm shards by Parquet row group: with one large row group every rank but one would
read nothing (NoDataAvailableError). The DataFrame is repartitioned into at least
`row_groups_per_rank * num_proc` files and the row-group size is set below each file's
size, so each rank gets several groups. Every rank then runs the same number of steps
per epoch (`steps_per_epoch`), reading its shard as an endless stream, because ranks that
run different numbers of batches hang in the next allreduce.
"""

from __future__ import annotations

import logging
import math

from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

MIN_ROW_GROUP_BYTES = 64 * 1024


def cache_url(path: str) -> str:
    """Petastorm wants a URL: plain paths become file:// URLs."""
    return path if "://" in path else f"file://{path}"


def make_converter(
    spark: SparkSession,
    df: DataFrame,
    num_proc: int,
    cache_dir: str,
    row_bytes: int,
    row_groups_per_rank: int = 4,
):
    """A `SparkDatasetConverter` for `df` with enough row groups for `num_proc` ranks.

    Args:
        df: the training rows (array<float> features, float label).
        num_proc: number of ranks that will shard it.
        cache_dir: folder (path or URL) for Petastorm's parquet cache.
        row_bytes: approximate bytes per row, to size row groups.
    """
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache_url(cache_dir))
    n = df.count()
    if n < num_proc:
        raise ValueError(f"{n} training rows cannot feed {num_proc} ranks")
    files = num_proc * row_groups_per_rank
    per_file = max(n * row_bytes // files, 1)
    group_bytes = max(MIN_ROW_GROUP_BYTES, int(per_file // 2))
    log.info("petastorm: %d rows in %d files, row groups of ~%d KiB", n, files, group_bytes // 1024)
    converter = make_spark_converter(
        df.repartition(files), parquet_row_group_size_bytes=group_bytes
    )
    return converter, n


def steps_per_epoch(rows: int, batch_size: int, num_proc: int) -> int:
    """Batches each rank runs per epoch so that all ranks together see ~all rows once."""
    return max(1, math.floor(rows / (batch_size * num_proc)))
