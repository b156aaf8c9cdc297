"""Lake I/O: Delta tables under one root, created and written from their contracts.

Every write stamps `_run_id` and, for tables with a content hash, `_content_hash`:
- `merge`: upsert on the contract's keys; a matched row is updated only when its content
  hash changed, so a re-run with the same data changes no row, commits no new version and
  emits nothing on the Change Data Feed. With `retire` (a predicate on the table's columns
  naming the rows the writer owns in full), a row it owns and no longer produces is deleted
  in the same commit (a tightened rule, a smaller scope); the feed shows the delete.
- `replace_where`: replaces the rows matching a predicate (a partition) atomically.
- `overwrite`: replaces the whole table.
- `append`: adds rows (bronze files not seen before, ops records).
`replace_where` and `overwrite` are skipped when the rows they would write equal the rows
already there (same keys and content hashes), for the same reason.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from retail_lake.contracts import CONTENT_HASH, RUN_ID, ContractError, TableContract, sql_string
from retail_lake.driver_writes import create_table, delta_rs_folder
from retail_lake.session import TableNameError, register_table, split_table_name

if TYPE_CHECKING:
    from delta.tables import DeltaTable

log = logging.getLogger(__name__)

WRITE_MODES = ("merge", "replace_where", "overwrite", "append")
# How many times a write is made in all when other commits to its table keep conflicting.
WRITE_ATTEMPTS = 5
# Data tables whose columns this process has compared with a contract: (location, columns).
_COLUMNS_CHECKED: set[tuple[str, tuple[str, ...]]] = set()
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
# The merge source's marker of a row to delete (see `retire` in `Lake.write`).
RETIRE = "_retire"
# A content hash computed anew (`verify` in `Lake.write`).
VERIFIED = "_verified_hash"


@dataclass(frozen=True)
class TableSummary:
    """What `retail-lake tables` shows of one table, read from its transaction log."""

    table: str
    version: int
    rows: int
    files: int
    bytes: int
    last_modified: datetime  # the latest commit's time, UTC


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
        """Rows inserted, updated and deleted together (0 for a skipped write)."""
        return self.inserted + self.updated + self.deleted


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is Delta's optimistic-concurrency conflict (another commit won)."""
    return "Concurrent" in type(exc).__name__ + str(exc)[:500]


def _commit_actions(delta_log: Any, version: int) -> Iterator[tuple[str, Any]]:
    """(class name, action) of each action in commit `version` of a DeltaLog (JVM), read in
    the driver."""
    commits = delta_log.getChanges(version, version, False)
    while commits.hasNext():
        actions = commits.next()._2().iterator()
        while actions.hasNext():
            action = actions.next()
            yield action.getClass().getSimpleName(), action


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


def arrow_rows(rows: Sequence[Mapping[str, Any] | Sequence[Any]], schema: StructType) -> pa.Table:
    """A few driver-side rows (dicts by column name, or tuples in schema order) as an Arrow
    table of `schema`'s Arrow types. Naive datetimes are taken as UTC."""
    arrow = to_arrow_schema(schema)
    names = schema.fieldNames()
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for row in rows:
        values = [row.get(n) for n in names] if isinstance(row, Mapping) else list(row)
        if len(values) != len(names):
            raise ValueError(f"row {row!r} has {len(values)} values for columns {names}")
        for n, v in zip(names, values, strict=True):
            columns[n].append(v)
    return pa.Table.from_arrays(
        [pa.array(columns[n], type=arrow.field(n).type) for n in names], schema=arrow
    )


def local_frame(
    spark: SparkSession, rows: Sequence[Mapping[str, Any] | Sequence[Any]], schema: StructType
) -> DataFrame:
    """A few driver-side rows (dicts by column name, or tuples in schema order) as a DataFrame.

    Built through Arrow: `spark.createDataFrame(list_of_rows)` pickles the rows into an RDD
    that a Python worker converts on every action, which made a one-row ops append cost twice
    as much (bench/RESULTS.md, "the fixed cost of one step"). Naive datetimes are taken as UTC.

    >>> local_frame(spark, [{"run_id": "r1", "n": 1}], StructType.fromDDL("run_id string, n int"))
    DataFrame[run_id: string, n: int]
    """
    return spark.createDataFrame(arrow_rows(rows, schema), schema)


class Lake:
    """The Delta tables under `root`, addressed by `layer.name`.

    Table `layer.name` lives at `<root>/<layer>/<name>`. Reads go by path, so a table need
    not be registered in the session's catalog to be read; a write creates the table from
    its contract when it is missing, stamps the run id on every row and on the commit, and
    skips a write that would change nothing (see the module docstring for the modes).
    Inside a job the lake is `ctx.lake`; read through `ctx.read`, which also records the
    version read.

    Args:
        spark: a session with Delta configured (`retail_lake.session.build_session`).
        root: the lake's root folder or URI (`cfg.root`, the config's `paths.root`).

    Example:
        >>> from retail_lake.config import load_config
        >>> from retail_lake.lake import Lake
        >>> from retail_lake.session import build_session
        >>> cfg = load_config("local")
        >>> lake = Lake(build_session(cfg), cfg.root)
        >>> lake.exists("silver.stores")
        True
        >>> lake.read("silver.stores").groupBy("store_type").count().show()
    """

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root.rstrip("/")

    # ------------------------------------------------------------------ addressing
    def location(self, table: str) -> str:
        """The folder of `layer.name`; a ContractError for a name that is not a table's.

        Example:
            >>> lake.location("silver.stores")  # with paths.root /data/lake
            '/data/lake/silver/stores'
        """
        try:
            layer, name = split_table_name(table)
        except TableNameError as exc:
            raise ContractError(str(exc)) from None
        return f"{self.root}/{layer}/{name}"

    def exists(self, table: str) -> bool:
        """Whether `table` has a Delta table at its location (written at least once).

        Raises:
            ContractError: `table` is not a `layer.name` of a known layer.

        Example:
            >>> lake.exists("gold.sales_forecasts")  # before the first forecast run
            False
        """
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.location(table))

    def delta_table(self, table: str) -> DeltaTable:
        """The `delta.tables.DeltaTable` of `table`, for Delta's own API (history, vacuum).

        Raises:
            ContractError: the table does not exist yet.

        Example:
            >>> lake.delta_table("silver.stores").history(1).select("version").first()
        """
        from delta.tables import DeltaTable

        if not self.exists(table):
            raise ContractError(f"table {table} does not exist under {self.root} yet")
        return DeltaTable.forPath(self.spark, self.location(table))

    # ------------------------------------------------------------------ reading
    def read(self, table: str, version: int | None = None) -> DataFrame:
        """The table as a DataFrame, optionally at a past Delta version.

        Args:
            table: `layer.name`.
            version: the Delta version to read (time travel); default the latest.

        Returns:
            The table's rows, metadata columns (`_run_id`, `_content_hash`, ...) included.

        Raises:
            ContractError: the table does not exist under the root (yet).

        Example:
            >>> lake.read("silver.transactions").where("is_guest").count()
            >>> lake.read("silver.transactions", version=2).count()  # as of version 2
        """
        if not self.exists(table):
            raise ContractError(
                f"table {table} does not exist under {self.root}: run the job that writes it"
            )
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.location(table))

    def version(self, table: str) -> int:
        """The latest committed Delta version of `table`.

        Read from the table's transaction log in the driver (a listing of `_delta_log`), not
        from `history(1)`, which runs a Spark job; the history is the fallback should the log
        API change.

        Raises:
            ContractError: the table does not exist yet.

        Example:
            >>> lake.version("silver.stores")
            3
        """
        if not self.exists(table):
            raise ContractError(f"table {table} does not exist under {self.root} yet")
        try:
            return self._latest(table)[1]
        except Exception as exc:  # py4j: an internal API that may change
            log.debug("reading the version of %s from its history: %s", table, exc)
        last = self.delta_table(table).history(1).select("version").collect()
        return int(last[0]["version"])

    def summary(self, table: str) -> TableSummary:
        """Version, rows, files, bytes and last commit time of `table`, from its log.

        The row count sums the files' statistics (numRecords) from the transaction log
        instead of scanning them, and scans only when a file has no statistics or carries a
        deletion vector.

        Raises:
            ContractError: the table does not exist yet.

        Example:
            >>> info = lake.summary("silver.stores")
            >>> info.version, info.rows, info.files
        """
        if not self.exists(table):
            raise ContractError(f"table {table} does not exist under {self.root} yet")
        _, snapshot = self._snapshot(table)
        files = DataFrame(snapshot.allFiles().toDF(), self.spark)
        records = F.get_json_object(F.col("stats"), "$.numRecords").cast("long")
        agg = files.agg(
            F.count(F.lit(1)).alias("files"),
            F.count(records).alias("counted"),
            F.sum(records).alias("rows"),
            F.count(F.col("deletionVector")).alias("with_deletes"),
        ).first()
        rows = agg["rows"] or 0
        if agg["counted"] < agg["files"] or agg["with_deletes"]:
            rows = self.read(table).count()
        return TableSummary(
            table,
            int(snapshot.version()),
            int(rows),
            int(agg["files"]),
            int(snapshot.sizeInBytes()),
            datetime.fromtimestamp(snapshot.timestamp() / 1000, tz=UTC),
        )

    def history(self, table: str, limit: int | None = None) -> DataFrame:
        """The Delta history of `table`, newest commit first; the last `limit` commits.

        Each job's commit carries its run id as `userMetadata` (see `ops.job_runs`).

        Raises:
            ContractError: the table does not exist yet.

        Example:
            >>> hist = lake.history("silver.stores", limit=5)
            >>> hist.select("version", "operation", "userMetadata").show()
        """
        delta = self.delta_table(table)
        return delta.history(limit) if limit else delta.history()

    def changes(self, table: str, start_version: int, end_version: int | None = None) -> DataFrame:
        """The Change Data Feed of `table` from `start_version` (inclusive).

        Silver and gold tables record the feed (`delta.enableChangeDataFeed`); each row
        carries `_change_type`, `_commit_version` and `_commit_timestamp`. A merge that
        changes nothing commits nothing, so a re-run adds nothing to the feed.

        Args:
            table: `layer.name`, a table with the Change Data Feed enabled.
            start_version: the first version read.
            end_version: the last version read (inclusive); default the latest.

        Example:
            >>> since = lake.version("silver.transactions")
            >>> # ... a cleanse run merges new lines ...
            >>> feed = lake.changes("silver.transactions", since + 1)
            >>> feed.groupBy("_change_type").count().show()
        """
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

        Returns whether this call created it (empty, at version 0). A table another process
        creates at the same time is taken as it is.

        Example:
            >>> from retail_lake.registry import CONTRACTS
            >>> lake.ensure(CONTRACTS["gold.sales_forecasts"])  # created now, empty
            True
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
            self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {contract.layer}")
            # A name registered earlier in this session may point at a table that is gone.
            self.spark.sql(f"DROP TABLE IF EXISTS {contract.name}")
            try:
                # Plain tables (the run journal) by delta-rs where it can, else by Spark.
                created = not contract.partition_by and create_table(
                    location,
                    contract.spark_schema().json(),
                    contract.delta_properties,
                    contract.description,
                )
                if not created:
                    self.spark.sql(
                        f"CREATE TABLE IF NOT EXISTS {contract.name} (\n  "
                        f"{contract.ddl_columns()}\n) USING DELTA {partition} "
                        f"COMMENT {sql_string(contract.description)} "
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
        retire: str | Column | None = None,
        verify: bool = False,
    ) -> WriteResult:
        """Writes `df` to the contract's table; see the module docstring for the modes.

        Checks `df` against the contract's columns, creates the table when it is missing
        (`ensure`), adds `_run_id` (and `_content_hash`) and commits with `run_id` as the
        commit's userMetadata. Jobs do not call it: they return `runner.Output`s, which the
        runner audits and then writes through this method.

        Args:
            df: the rows, with the contract's columns (metadata columns are added here).
            contract: the table's contract, e.g. `retail_lake.registry.CONTRACTS[name]`.
            run_id: the writing run's id, stamped on every row and on the commit.
            mode: merge, replace_where, overwrite or append; default the contract's
                `write_mode`.
            replace_where: (replace_where only) the predicate of the rows replaced.
            extra_columns: (append only) columns beyond the contract, added to the table's
                schema (Delta mergeSchema): a source that evolves on schema drift.
            retire: (merge only) a predicate (SQL text or a Column) on the table's columns;
                rows matching it whose keys `df` no longer holds are deleted.
            verify: (merge, overwrite, replace_where) the stored rows are compared by their
                content, hashed anew, not by their stored content hash, so a row changed by
                hand is rewritten.

        Returns:
            The version committed (None when nothing was) and the rows inserted, updated
            and deleted, from Delta's operation metrics.

        Raises:
            ContractError: an unknown mode, a mode's missing or misplaced argument, or `df`
                lacking a contract column or holding a column the contract does not have.

        Example:
            >>> from retail_lake.registry import CONTRACTS
            >>> stores = lake.read("silver.stores")
            >>> result = lake.write(stores, CONTRACTS["silver.stores"], "manual-1", "merge")
            >>> result.skipped  # the same rows again: nothing committed
            True
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
        if retire is not None and mode != "merge":
            raise ContractError(f"{contract.name}: only a merge retires rows (mode {mode})")
        # The contract check before creating anything.
        rows = with_metadata(df, contract, run_id, extra_columns)
        created = self.ensure(contract)
        if not created:
            self._add_new_columns(contract)
        started = time.monotonic()
        before = 0 if created else self.version(contract.name)
        # Every commit carries the run id (DESCRIBE HISTORY's userMetadata): the write's own
        # commit is found by it, never taken to be the latest one (another writer's, maybe).
        with self.tagged(run_id):
            if created and mode != "append":
                result = self._first_load(
                    rows, contract, mode, replace_where, run_id, before, retire, verify
                )
            else:
                result = self._retrying(
                    contract.name,
                    lambda: self._write_existing(
                        rows, contract, mode, replace_where, run_id, before, retire, verify,
                        extra_columns,
                    ),
                )  # fmt: skip
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

    def _add_new_columns(self, contract: TableContract) -> None:
        """Adds the nullable contract columns that the table, made by an older release,
        lacks: at the end, with their comments, null in the rows already there (a metadata
        commit before the write's own). Checked once per table and process.

        Raises:
            ContractError: a missing column may not be null (the table must be rebuilt).
        """
        location = self.location(contract.name)
        checked = (location, tuple(c.name for c in contract.columns))
        if checked in _COLUMNS_CHECKED:
            return
        try:
            _, snapshot = self._snapshot(contract.name)
            fields = json.loads(snapshot.metadata().schemaString())["fields"]
            present = {f["name"] for f in fields}
        except Exception as exc:  # py4j: an internal API that may change
            log.debug("reading the schema of %s from its log: %s", contract.name, exc)
            present = set(self.spark.read.format("delta").load(location).columns)
        missing = [c for c in contract.columns if c.name not in present]
        required = [c.name for c in missing if not c.nullable]
        if required:
            raise ContractError(
                f"{contract.name}: the table at {location} lacks the column(s) {required}, "
                f"which may not be null, so they cannot be added to its rows: it was made by "
                f"an older release; rebuild it (remove the table and run its job again)"
            )
        if missing:
            self.add_columns(contract, missing)
        _COLUMNS_CHECKED.add(checked)

    def add_columns(self, contract: TableContract, columns: Sequence[Any]) -> None:
        """Adds `columns` (contract `Col`s the table lacks) at the end of the table, with
        their comments, null in the rows already there: one metadata commit."""
        added = ", ".join(f"`{c.name}` {c.type} COMMENT {sql_string(c.comment)}" for c in columns)
        log.info(
            "%s: adding column(s) %s (null in the rows already there)",
            contract.name,
            ", ".join(c.name for c in columns),
        )
        self.spark.sql(f"ALTER TABLE delta.`{self.location(contract.name)}` ADD COLUMNS ({added})")

    def _write_existing(
        self,
        rows: DataFrame,
        contract: TableContract,
        mode: str,
        replace_where: str | None,
        run_id: str,
        before: int,
        retire: str | Column | None,
        verify: bool,
        extra_columns: tuple[str, ...],
    ) -> WriteResult:
        if mode == "merge":
            return self._merge(rows, contract, run_id, before, retire, verify)
        if mode == "append":
            writer = rows.write.format("delta").mode("append")
            if extra_columns:
                writer = writer.option("mergeSchema", "true")
            writer.save(self.location(contract.name))
            return self._result(contract, mode, run_id, before)
        return self._overwrite(rows, contract, mode, replace_where, run_id, before, verify)

    @staticmethod
    def _retrying(table: str, write: Callable[[], WriteResult]) -> WriteResult:
        """`write()`, made again when another commit to `table` conflicted with it (Delta's
        optimistic concurrency: e.g. `maintain`'s OPTIMIZE rewrote files a MERGE read). The
        refused attempt committed nothing, and each attempt compares against the table's
        latest version, so making it again writes each row once."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return write()
            except Exception as exc:  # Delta's conflicts come through py4j
                if not is_conflict(exc):
                    raise
                if attempt == WRITE_ATTEMPTS:
                    raise
                wait = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
                log.info(
                    "%s: another commit conflicted with this write (%s); again in %.1fs",
                    table,
                    str(exc).splitlines()[0][:200],
                    wait,
                )
                time.sleep(wait)
        raise AssertionError("unreachable")

    def delete_matching(
        self, table: str, source: DataFrame, condition: str | Column, run_id: str
    ) -> WriteResult:
        """Deletes the rows of `table` that match a row of `source`, in one MERGE commit
        tagged with `run_id`; nothing is committed when no row matches.

        `condition` names the table's columns `t.` and the source's `s.`. The values sought
        come from `source`'s rows, so neither the commit's recorded predicate (the Delta log)
        nor a query plan holds them: how a person's rows are erased.

        Example:
            >>> gone = spark.createDataFrame([(token,)], "token string")
            >>> lake.delete_matching("silver.customers", gone, "t.customer_token = s.token",
            ...                      "erase-1").deleted
            1
        """
        cond = F.expr(condition) if isinstance(condition, str) else condition
        target = self.read(table).alias("t")
        matched = target.join(F.broadcast(source.alias("s")), cond, "left_semi").count()
        if not matched:
            return WriteResult(table, "delete", None, skipped=True)
        before = self.version(table)
        with self.tagged(run_id):
            merge = self.delta_table(table).alias("t").merge(source.alias("s"), cond)
            merge.whenMatchedDelete().execute()
        own = self._own_commit(table, run_id, before)
        if own is None:  # pragma: no cover - a MERGE that deleted rows commits
            return WriteResult(table, "delete", None)
        version, metrics = own
        return WriteResult(
            table, "delete", version, deleted=int(metrics.get("numTargetRowsDeleted", matched))
        )

    def _first_load(
        self,
        rows: DataFrame,
        contract: TableContract,
        mode: str,
        replace_where: str | None,
        run_id: str,
        before: int,
        retire: str | Column | None = None,
        verify: bool = False,
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
            if not is_conflict(exc):
                raise
            log.info("%s: another writer committed to it first; writing by %s", contract.name, mode)
            if mode == "merge":
                return self._merge(rows, contract, run_id, before, retire, verify)
            return self._overwrite(rows, contract, mode, replace_where, run_id, before, verify)
        return self._result(contract, mode, run_id, before)

    @staticmethod
    def _overwriter(rows: DataFrame, replace_where: str | None):
        writer = rows.write.format("delta").mode("overwrite")
        return writer.option("replaceWhere", replace_where) if replace_where else writer

    def _overwrite(
        self,
        rows: DataFrame,
        contract: TableContract,
        mode: str,
        replace_where: str | None,
        run_id: str,
        before: int,
        verify: bool = False,
    ) -> WriteResult:
        """`overwrite` / `replace_where`, skipped when the rows equal those already there."""
        current = self.read(contract.name)
        if replace_where:
            current = current.where(replace_where)
        if self._same_rows(current, rows, contract, verify):
            return WriteResult(contract.name, mode, None, skipped=True)
        self._overwriter(rows, replace_where).save(self.location(contract.name))
        return self._result(contract, mode, run_id, before)

    def _merge(
        self,
        rows: DataFrame,
        contract: TableContract,
        run_id: str,
        before: int,
        retire: str | Column | None = None,
        verify: bool = False,
    ) -> WriteResult:
        # Only new or changed rows enter the MERGE: when there are none, nothing is committed
        # (Delta would otherwise rewrite every file holding a matched row, and bump the
        # version that downstream jobs record as their input).
        target = self.read(contract.name)
        if verify:  # both sides hashed anew from their (contract-typed) content
            fresh = content_hash(contract.content_columns).alias(VERIFIED)
            current = target.select(*contract.keys, fresh)
            changed = (
                rows.withColumn(VERIFIED, fresh)
                .join(current, on=[*contract.keys, VERIFIED], how="left_anti")
                .drop(VERIFIED)
            )
        else:
            current = target.select(*contract.keys, CONTENT_HASH)
            changed = rows.join(current, on=[*contract.keys, CONTENT_HASH], how="left_anti")
        keys = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in contract.keys)
        if retire is None:
            source = changed
        else:
            # Rows the writer owns (`retire`) whose keys it no longer produces, as delete
            # markers beside the upserts: one MERGE, so one atomic commit.
            produced = rows.select(*contract.keys).alias("s")
            gone = (
                target.where(retire)
                .select(*contract.keys)
                .alias("t")
                .join(produced, F.expr(keys), how="left_anti")
            )
            source = changed.withColumn(RETIRE, F.lit(False)).unionByName(
                gone.withColumn(RETIRE, F.lit(True)), allowMissingColumns=True
            )
        source.persist()
        try:
            if source.isEmpty():
                return WriteResult(contract.name, "merge", None, skipped=True)
            merge = self.delta_table(contract.name).alias("t").merge(source.alias("s"), keys)
            # (Verifying, a tampered row may still carry the hash of what it should hold.)
            update = "true" if verify else f"t.`{CONTENT_HASH}` <> s.`{CONTENT_HASH}`"
            if retire is None:
                merge = merge.whenMatchedUpdateAll(condition=update).whenNotMatchedInsertAll()
            else:
                values = {c: f"s.`{c}`" for c in rows.columns}
                merge = (
                    merge.whenMatchedDelete(condition=f"s.`{RETIRE}`")
                    .whenMatchedUpdate(condition=f"NOT s.`{RETIRE}` AND {update}", set=values)
                    .whenNotMatchedInsert(condition=f"NOT s.`{RETIRE}`", values=values)
                )
            merge.execute()
        finally:
            source.unpersist()
        return self._result(contract, "merge", run_id, before)

    def _same_rows(
        self, current: DataFrame, rows: DataFrame, contract: TableContract, verify: bool = False
    ) -> bool:
        """True when both hold exactly the same rows (by content hash and keys; by the
        content itself when verifying)."""
        if contract.has_content_hash and not verify:
            cols = [F.col(c) for c in (*contract.keys, CONTENT_HASH)]
        else:  # the content hashed anew (JSON: map columns too, which xxhash64 refuses)
            cols = [*[F.col(k) for k in contract.keys], content_hash(contract.content_columns)]

        def fingerprint(frame: DataFrame) -> tuple:
            h = F.xxhash64(*cols)
            row = frame.agg(
                F.count(F.lit(1)).alias("n"),
                F.sum(h.cast("decimal(38,0)")).alias("s"),
                F.sum((h % 1000003).cast("long")).alias("t"),
            ).first()
            return (row["n"], row["s"], row["t"])

        return fingerprint(current) == fingerprint(rows)

    @contextmanager
    def tagged(self, run_id: str) -> Iterator[None]:
        """Commits made inside carry `run_id` as their userMetadata."""
        conf = self.spark.conf
        previous = conf.get(USER_METADATA, None)
        conf.set(USER_METADATA, run_id)
        try:
            yield
        finally:
            if previous is None:
                conf.unset(USER_METADATA)
            else:
                conf.set(USER_METADATA, previous)

    def _snapshot(self, table: str) -> tuple[Any, Any]:
        """The table's DeltaLog (JVM) brought up to date, and its latest Snapshot."""
        jvm = self.spark._jvm
        none = jvm.scala.Option.empty()
        delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(
            self.spark._jsparkSession, self.location(table)
        )
        return delta_log, delta_log.update(False, none, none)

    def _latest(self, table: str) -> tuple[Any, int]:
        """The table's DeltaLog (JVM) brought up to date, and its latest version."""
        delta_log, snapshot = self._snapshot(table)
        return delta_log, int(snapshot.version())

    def file_count_and_creation(self, table: str) -> tuple[int, datetime | None]:
        """How many files the table's latest version has, and when the table was created
        (its metadata's createdTime, kept through log clean-ups), from the log.

        Example:
            >>> lake.file_count_and_creation("silver.stores")
            (2, datetime.datetime(2026, 12, 3, 17, 4, 6, tzinfo=datetime.timezone.utc))
        """
        folder = delta_rs_folder(self.location(table))
        if folder is not None:  # delta-rs: milliseconds, where Spark builds the snapshot's
            try:  # state with a job (0.5 s a table the first time: maintain reads them all)
                from deltalake import DeltaTable

                table_rs = DeltaTable(str(folder))
                ms = table_rs.metadata().created_time
                at = datetime.fromtimestamp(ms / 1000, tz=UTC) if ms is not None else None
                return len(table_rs.file_uris()), at
            except Exception as exc:  # a log delta-rs cannot read: Spark reads it
                log.debug("%s: delta-rs could not read the log (%s); Spark reads it", table, exc)
        _, snapshot = self._snapshot(table)
        created = snapshot.metadata().createdTime()
        when = (
            datetime.fromtimestamp(int(created.get()) / 1000, tz=UTC)
            if created.isDefined()
            else None
        )
        return int(snapshot.numOfFiles()), when

    def operations(self, table: str, limit: int = 20) -> list[tuple[int, str]]:
        """(version, operation) of the table's last `limit` commits, newest first, read from
        the transaction log in the driver (no Spark job, unlike `history`).

        Example:
            >>> lake.operations("silver.stores", 2)
            [(4, 'OPTIMIZE'), (3, 'MERGE')]
        """
        delta_log, latest = self._latest(table)
        found = []
        for version in range(latest, max(-1, latest - limit), -1):
            for kind, action in _commit_actions(delta_log, version):
                if kind == "CommitInfo":
                    found.append((version, str(action.operation())))
                    break
        return found

    def data_version(self, table: str, version: int | None = None) -> int:
        """The latest version (up to `version`, by default the latest) that changed the
        table's rows: the commits after it only reorganised files (OPTIMIZE, Z-order,
        VACUUM's start and end: every file they add or remove is marked `dataChange=false`,
        and no metadata).

        The runner fingerprints a unit's inputs and outputs with it, so `maintain` compacting
        a table does not make the next run rebuild what reads it. Read from the log in the
        driver; a commit it cannot read counts as a change (a rebuild, never a wrong skip).

        Example:
            >>> lake.version("silver.stores"), lake.data_version("silver.stores")
            (4, 3)
        """
        delta_log, latest = self._latest(table)
        version = latest if version is None else min(version, latest)
        while version > 0 and self._reorganises_only(delta_log, version):
            version -= 1
        return version

    @staticmethod
    def _reorganises_only(delta_log: Any, version: int) -> bool:
        """Whether commit `version` moved no rows: no metadata, protocol or change-data action,
        and every AddFile/RemoveFile in it marked dataChange=false."""
        try:
            seen = False
            for kind, action in _commit_actions(delta_log, version):
                if kind in ("AddFile", "RemoveFile"):
                    if action.dataChange():
                        return False
                elif kind in ("Metadata", "Protocol", "AddCDCFile"):
                    return False
                seen = True
            return seen
        except Exception as exc:  # py4j: an internal API that may change
            log.debug("reading commit %s of a log: %s", version, exc)
            return False

    def _own_commit(self, table: str, run_id: str, after: int) -> tuple[int, dict[str, str]] | None:
        """The version and operation metrics of the latest commit after `after` that carries
        `run_id`, read from the transaction log in the driver; None when there is none."""
        jvm = self.spark._jvm
        delta_log, latest = self._latest(table)
        for version in range(latest, after, -1):
            for kind, action in _commit_actions(delta_log, version):
                if kind != "CommitInfo":
                    continue
                tag = action.userMetadata()
                if not (tag.isDefined() and tag.get() == run_id):
                    break  # one CommitInfo per commit: another writer's
                found = action.operationMetrics()
                metrics = (
                    dict(jvm.scala.jdk.javaapi.CollectionConverters.asJava(found.get()))
                    if found.isDefined()
                    else {}
                )
                return version, metrics
        return None  # nothing committed (Delta commits no empty append)

    def _result(self, contract: TableContract, mode: str, run_id: str, before: int) -> WriteResult:
        own = self._own_commit(contract.name, run_id, before)
        if own is None:
            return WriteResult(contract.name, mode, None)
        version, raw = own
        metrics = {
            k: int(v) for k, v in raw.items() if v is not None and str(v).lstrip("-").isdigit()
        }
        if mode == "merge":
            inserted = metrics.get("numTargetRowsInserted", 0)
            updated = metrics.get("numTargetRowsUpdated", 0)
            deleted = metrics.get("numTargetRowsDeleted", 0)
        else:
            inserted = metrics.get("numOutputRows", 0)
            updated = 0
            deleted = metrics.get("numDeletedRows", 0) if mode == "replace_where" else 0
        return WriteResult(contract.name, mode, version, inserted, updated, deleted)
