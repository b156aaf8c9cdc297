"""Lake I/O: Delta tables under one root, created and written from their contracts.

Every write stamps `_run_id` and, for tables with a content hash, `_content_hash`:
- `merge`: upsert on the contract's keys; a matched row is updated only when its content
  hash changed, so a re-run with the same data changes no row, commits no new version and
  emits nothing on the Change Data Feed.
- `replace_where`: replaces the rows matching a predicate (a partition) atomically.
- `overwrite`: replaces the whole table.
- `append`: adds rows (bronze files not seen before, ops records).
`replace_where` and `overwrite` are skipped when the rows they would write equal the rows
already there (same keys and content hashes), for the same reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from retail_lake.contracts import CONTENT_HASH, RUN_ID, ContractError, TableContract
from retail_lake.session import register_table

if TYPE_CHECKING:
    from delta.tables import DeltaTable

log = logging.getLogger(__name__)

WRITE_MODES = ("merge", "replace_where", "overwrite", "append")


@dataclass(frozen=True)
class WriteResult:
    """What one write did, from Delta's own operation metrics."""

    table: str
    mode: str
    version: int | None  # Delta version after the write; None when nothing was committed
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: bool = False

    @property
    def rows_changed(self) -> int:
        return self.inserted + self.updated + self.deleted


def content_hash(columns: tuple[str, ...] | list[str]) -> Column:
    """SHA-256 over the given columns, null-safe and type-stable (JSON of a struct)."""
    return F.sha2(
        F.to_json(F.struct(*[F.col(c) for c in columns]), {"ignoreNullFields": "false"}), 256
    )


def with_metadata(
    df: DataFrame, contract: TableContract, run_id: str, extra_columns: tuple[str, ...] = ()
) -> DataFrame:
    """Adds `_run_id` (and `_content_hash`) and orders columns as the contract does.

    `extra_columns` (text columns a bronze table gained by schema drift) follow the
    contract's columns.
    """
    missing = [
        c for c in contract.column_names if c not in df.columns and c not in (RUN_ID, CONTENT_HASH)
    ]
    if missing:
        raise ContractError(f"{contract.name}: the output lacks columns {missing}")
    extra = [c for c in df.columns if c not in contract.column_names and c not in extra_columns]
    if extra:
        raise ContractError(f"{contract.name}: the output has columns not in the contract {extra}")
    out = df.withColumn(RUN_ID, F.lit(run_id))
    if contract.has_content_hash:
        out = out.withColumn(CONTENT_HASH, content_hash(contract.content_columns))
    schema = contract.spark_schema()
    return out.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields],
        *[F.col(c).cast("string").alias(c) for c in extra_columns],
    )


class Lake:
    """The Delta tables under `root`, addressed by `layer.name`."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root.rstrip("/")

    # ------------------------------------------------------------------ addressing
    def location(self, table: str) -> str:
        layer, name = table.split(".", 1)
        return f"{self.root}/{layer}/{name}"

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.location(table))

    def delta_table(self, table: str) -> DeltaTable:
        from delta.tables import DeltaTable

        if not self.exists(table):
            raise ContractError(f"table {table} does not exist under {self.root} yet")
        return DeltaTable.forPath(self.spark, self.location(table))

    # ------------------------------------------------------------------ reading
    def read(self, table: str, version: int | None = None) -> DataFrame:
        """The table as a DataFrame, optionally at a past Delta version."""
        if not self.exists(table):
            raise ContractError(
                f"table {table} does not exist under {self.root}: run the job that writes it"
            )
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.location(table))

    def version(self, table: str) -> int:
        """The latest committed Delta version of `table`."""
        last = self.delta_table(table).history(1).select("version").collect()
        return int(last[0]["version"])

    def history(self, table: str, limit: int | None = None) -> DataFrame:
        delta = self.delta_table(table)
        return delta.history(limit) if limit else delta.history()

    def changes(self, table: str, start_version: int, end_version: int | None = None) -> DataFrame:
        """The Change Data Feed of `table` from `start_version` (inclusive)."""
        reader = (
            self.spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", start_version)
        )
        if end_version is not None:
            reader = reader.option("endingVersion", end_version)
        return reader.load(self.location(table))

    # ------------------------------------------------------------------ creation
    def ensure(self, contract: TableContract) -> bool:
        """Creates the table from its contract if it is missing, and registers its name.

        Returns whether this call created it (empty, at version 0).
        """
        location = self.location(contract.name)
        created = False
        if not self.exists(contract.name):
            props = ", ".join(f"'{k}' = '{v}'" for k, v in contract.delta_properties.items())
            partition = (
                f"PARTITIONED BY ({', '.join(contract.partition_by)})"
                if contract.partition_by
                else ""
            )
            comment = contract.description.replace("'", "\\'")
            self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {contract.layer}")
            # A name registered earlier in this session may point at a table that is gone.
            self.spark.sql(f"DROP TABLE IF EXISTS {contract.name}")
            try:
                self.spark.sql(
                    f"CREATE TABLE IF NOT EXISTS {contract.name} (\n  {contract.ddl_columns()}\n)"
                    f" USING DELTA {partition} COMMENT '{comment}' "
                    f"TBLPROPERTIES ({props}) LOCATION '{location}'"
                )
                created = True
            except Exception as exc:  # another process created it first: fine
                if not self.exists(contract.name):
                    raise
                log.debug("%s was created concurrently: %s", contract.name, exc)
        register_table(self.spark, contract.name, location)
        return created

    # ------------------------------------------------------------------ writing
    def write(
        self,
        df: DataFrame,
        contract: TableContract,
        run_id: str,
        mode: str | None = None,
        replace_where: str | None = None,
        extra_columns: tuple[str, ...] = (),
    ) -> WriteResult:
        """Writes `df` to the contract's table; see the module docstring for the modes.

        `extra_columns` (append only) are added to the table's schema (Delta mergeSchema):
        a source that evolves on schema drift.
        """
        mode = mode or contract.write_mode
        if mode not in WRITE_MODES:
            raise ContractError(f"{contract.name}: unknown write mode {mode!r} ({WRITE_MODES})")
        if mode == "replace_where" and not replace_where:
            raise ContractError(f"{contract.name}: replace_where needs a predicate")
        if mode == "merge" and not (contract.keys and contract.has_content_hash):
            raise ContractError(f"{contract.name}: merge needs keys and a content hash")
        if extra_columns and mode != "append":
            raise ContractError(f"{contract.name}: extra columns can only be appended")
        # The contract check before creating anything.
        rows = with_metadata(df, contract, run_id, extra_columns)
        created = self.ensure(contract)
        path = self.location(contract.name)
        started = time.monotonic()
        if created and mode != "append":
            result = self._first_load(rows, contract, mode, replace_where)
        elif mode == "merge":
            result = self._merge(rows, contract)
        elif mode == "append":
            writer = rows.write.format("delta").mode("append")
            if extra_columns:
                writer = writer.option("mergeSchema", "true")
            writer.save(path)
            result = self._result(contract, mode)
        else:
            result = self._overwrite(rows, contract, mode, replace_where)
        log.info(
            "%s %s: +%d ~%d -%d%s (%.1fs)",
            contract.name,
            mode,
            result.inserted,
            result.updated,
            result.deleted,
            " (unchanged, skipped)" if result.skipped else "",
            time.monotonic() - started,
        )
        return result

    def _first_load(
        self, rows: DataFrame, contract: TableContract, mode: str, replace_where: str | None
    ) -> WriteResult:
        """The first rows of a table this run just created (empty, version 0).

        Into an empty table every row is an insert, so no comparison with the target is
        needed: `merge` is an insert-only MERGE (it still joins against the target, so a
        writer that committed rows since the table was created keeps them, and a concurrent
        commit is Delta's conflict error); `overwrite` and `replace_where` overwrite without
        the same-rows check (another writer's rows committed in between are replaced, as a
        later overwrite would). On a conflict the write takes its mode's usual path.
        """
        try:
            if mode == "merge":
                keys = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in contract.keys)
                (
                    self.delta_table(contract.name)
                    .alias("t")
                    .merge(rows.alias("s"), keys)
                    .whenNotMatchedInsertAll()
                    .execute()
                )
            else:
                # (A replace_where predicate is checked by Delta as on any later write.)
                self._overwriter(rows, replace_where).save(self.location(contract.name))
        except Exception as exc:  # Delta concurrency exceptions come through py4j
            if "Concurrent" not in type(exc).__name__ + str(exc)[:500]:
                raise
            log.info("%s: another writer committed to it first; writing by %s", contract.name, mode)
            if mode == "merge":
                return self._merge(rows, contract)
            return self._overwrite(rows, contract, mode, replace_where)
        return self._result(contract, mode)

    @staticmethod
    def _overwriter(rows: DataFrame, replace_where: str | None):
        writer = rows.write.format("delta").mode("overwrite")
        return writer.option("replaceWhere", replace_where) if replace_where else writer

    def _overwrite(
        self, rows: DataFrame, contract: TableContract, mode: str, replace_where: str | None
    ) -> WriteResult:
        """`overwrite` / `replace_where`, skipped when the rows equal those already there."""
        current = self.read(contract.name)
        if replace_where:
            current = current.where(replace_where)
        if self._same_rows(current, rows, contract):
            return WriteResult(contract.name, mode, None, skipped=True)
        self._overwriter(rows, replace_where).save(self.location(contract.name))
        return self._result(contract, mode)

    def _merge(self, rows: DataFrame, contract: TableContract) -> WriteResult:
        # Only new or changed rows enter the MERGE: when there are none, nothing is committed
        # (Delta would otherwise rewrite every file holding a matched row, and bump the
        # version that downstream jobs record as their input).
        current = self.read(contract.name).select(*contract.keys, CONTENT_HASH)
        changed = rows.join(current, on=[*contract.keys, CONTENT_HASH], how="left_anti")
        changed.persist()
        try:
            if changed.isEmpty():
                return WriteResult(contract.name, "merge", None, skipped=True)
            keys = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in contract.keys)
            (
                self.delta_table(contract.name)
                .alias("t")
                .merge(changed.alias("s"), keys)
                .whenMatchedUpdateAll(condition=f"t.`{CONTENT_HASH}` <> s.`{CONTENT_HASH}`")
                .whenNotMatchedInsertAll()
                .execute()
            )
        finally:
            changed.unpersist()
        return self._result(contract, "merge")

    def _same_rows(self, current: DataFrame, rows: DataFrame, contract: TableContract) -> bool:
        """True when both hold exactly the same rows (by content hash and keys)."""
        cols = (
            [*contract.keys, CONTENT_HASH]
            if contract.has_content_hash
            else list(contract.content_columns)
        )

        def fingerprint(frame: DataFrame) -> tuple:
            h = F.xxhash64(*[F.col(c) for c in cols])
            row = frame.agg(
                F.count(F.lit(1)).alias("n"),
                F.sum(h.cast("decimal(38,0)")).alias("s"),
                F.sum((h % 1000003).cast("long")).alias("t"),
            ).first()
            return (row["n"], row["s"], row["t"])

        return fingerprint(current) == fingerprint(rows)

    def _result(self, contract: TableContract, mode: str) -> WriteResult:
        last = self.delta_table(contract.name).history(1).first()
        metrics = {
            k: int(v)
            for k, v in (last["operationMetrics"] or {}).items()
            if v is not None and str(v).lstrip("-").isdigit()
        }
        if mode == "merge":
            inserted = metrics.get("numTargetRowsInserted", 0)
            updated = metrics.get("numTargetRowsUpdated", 0)
            deleted = metrics.get("numTargetRowsDeleted", 0)
        else:
            inserted = metrics.get("numOutputRows", 0)
            updated = 0
            deleted = metrics.get("numDeletedRows", 0) if mode == "replace_where" else 0
        return WriteResult(contract.name, mode, int(last["version"]), inserted, updated, deleted)
