"""Table contracts: the one description of each table that writes, gates and docs use.

A contract names a table (`layer.name`), its columns with types and comments, keys,
partitioning, Delta properties and retention. Its expectation suite is the contract's key
rules (keys not null, keys unique) plus `conf/suites/<layer>.<name>.yaml`.

Metadata columns start with `_` (`_run_id`, `_content_hash`, provenance); they never enter
the content hash, so a re-run that brings the same content changes no row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType

RUN_ID = "_run_id"
CONTENT_HASH = "_content_hash"

# Column types Delta keeps min/max statistics for.
STATS_TYPES = frozenset(
    {
        "string",
        "int",
        "bigint",
        "smallint",
        "tinyint",
        "date",
        "timestamp",
        "decimal",
        "double",
        "float",
    }
)
LAYER_PROPERTIES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        # Column mapping lets columns be renamed or added (schema drift) without a rewrite.
        "bronze": {
            "delta.columnMapping.mode": "name",
            "delta.minReaderVersion": "2",
            "delta.minWriterVersion": "5",
        },
        # Change Data Feed: downstream jobs read only what changed.
        "silver": {
            "delta.columnMapping.mode": "name",
            "delta.minReaderVersion": "2",
            "delta.minWriterVersion": "5",
            "delta.enableChangeDataFeed": "true",
        },
        # Gold is what analysts read, with Spark and with other engines (pandas through
        # delta-rs, polars): no column mapping (polars refuses it and delta-rs reads no change
        # feed of it), no deletion vectors or v2 checkpoints (they break delta-rs's
        # to_pandas); reader version 1 (tests/test_other_readers.py). Gold gains columns,
        # never renames them.
        "gold": {
            "delta.minReaderVersion": "1",
            "delta.minWriterVersion": "4",
            "delta.enableChangeDataFeed": "true",
        },
        # The run journal: no column mapping, so the driver appends its rows with delta-rs
        # (no Spark job) and any Delta reader reads it as it is.
        "ops": {
            "delta.minReaderVersion": "1",
            "delta.minWriterVersion": "2",
        },
    }
)


class ContractError(ValueError):
    """A DataFrame or a name that does not match its table contract."""


@dataclass(frozen=True)
class Col:
    """One column: name, Spark SQL type, comment for analysts, nullability.

    The comment is the column's description in the table (`COMMENT`) and in the catalog.

    Example:
        >>> Col("store", "int", "Rossmann store number (1..1115)", nullable=False)
        >>> Col("input_versions", "map<string,bigint>", "Delta version of each input read")
    """

    name: str
    type: str
    comment: str
    nullable: bool = True
    # Holds a person's pseudonym (a customer token): `retail-lake privacy erase` deletes the
    # person's rows by it, `privacy rotate-key` re-tokenises it, and it never has Delta
    # statistics (the transaction log would keep its values after an erasure).
    pseudonym: bool = False


def meta_columns() -> tuple[Col, ...]:
    """Columns every silver/gold/scored table carries for idempotent upserts and lineage.

    `_run_id` (the run that last wrote the row) and `_content_hash` (what a merge compares);
    `Lake.write` fills both. They go last in a contract's columns.

    Example:
        >>> [c.name for c in meta_columns()]
        ['_run_id', '_content_hash']
    """
    return (
        Col(RUN_ID, "string", "run that last wrote this row (ops.job_runs.run_id)", False),
        Col(
            CONTENT_HASH,
            "string",
            "SHA-256 of the row's content columns; MERGE updates a row only when it changes",
            False,
        ),
    )


@dataclass(frozen=True)
class TableContract:
    """What a table promises analysts; drives creation, writes, gates and the catalog.

    `Lake.ensure` creates the table from it (columns, comments, partitioning, Delta
    properties), `Lake.write` checks every write against it, the quality gate checks its keys
    (`quality.load_suite`) and `retail-lake catalog` documents it. A contract takes effect
    once it is listed in `retail_lake.registry.CONTRACT_LIST`.

    Attributes:
        name: `layer.name` (bronze, silver, gold or ops).
        description: what a row is and where it comes from, for the catalog.
        columns: the columns in order, `meta_columns()` last for merged tables.
        keys: the columns that identify a row (merge condition, uniqueness check).
        partition_by: partition columns, if any.
        properties: Delta table properties beyond the layer's (`LAYER_PROPERTIES`).
        retention_days: how long Delta keeps removed files and the log.
        zorder_by: the columns analysts filter on, beyond the partition columns: `maintain`
            Z-orders the table's files by them (their statistics are kept, so a filter on
            them skips files); never a pseudonym.
        write_mode: how jobs usually write it: merge, replace_where, overwrite or append.
        source: the table(s) that feed it, as free text for the catalog.

    Raises:
        ContractError: a name that is not `layer.name`, a duplicate column, or a key or
            partition column that is not a column.

    Example:
        >>> from retail_lake.contracts import Col, TableContract, meta_columns
        >>> DAILY_SALES = TableContract(
        ...     name="gold.store_type_daily_sales",
        ...     description="Sales per store type and day (Rossmann).",
        ...     columns=(
        ...         Col("store_type", "string", "store model a..d", nullable=False),
        ...         Col("date", "date", "calendar day (UTC)", nullable=False),
        ...         Col("sales", "bigint", "turnover of the type's stores that day (EUR)"),
        ...         *meta_columns(),
        ...     ),
        ...     keys=("store_type", "date"),
        ...     source="silver.store_daily_sales, silver.stores",
        ... )
        >>> DAILY_SALES.layer, DAILY_SALES.write_mode, DAILY_SALES.content_columns
        ('gold', 'merge', ('store_type', 'date', 'sales'))
    """

    name: str
    description: str
    columns: tuple[Col, ...]
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    retention_days: int = 30
    # How jobs usually write it: merge | replace_where | overwrite | append.
    write_mode: str = "merge"
    # Which table feeds it (free text for the catalog).
    source: str = ""
    zorder_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.name.count(".") != 1:
            raise ContractError(f"table name must be layer.name, got {self.name!r}")
        names = [c.name for c in self.columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ContractError(f"{self.name}: duplicate columns {sorted(dupes)}")
        for col in (*self.keys, *self.partition_by, *self.zorder_by):
            if col not in names:
                raise ContractError(
                    f"{self.name}: key/partition/Z-order column {col!r} is not a column"
                )
        pseudonyms = {c.name for c in self.columns if c.pseudonym}
        for col in self.zorder_by:
            if col in self.partition_by or col in pseudonyms:
                raise ContractError(
                    f"{self.name}: Z-order column {col!r} is a partition column or a pseudonym"
                )

    @property
    def layer(self) -> str:
        """The layer, the part of the name before the dot (`silver`)."""
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        """The name within the layer, after the dot (`stores`)."""
        return self.name.split(".", 1)[1]

    @property
    def column_names(self) -> tuple[str, ...]:
        """Every column's name, in order, metadata columns included."""
        return tuple(c.name for c in self.columns)

    @property
    def content_columns(self) -> tuple[str, ...]:
        """Columns that make up the content hash: everything but `_` metadata."""
        return tuple(c.name for c in self.columns if not c.name.startswith("_"))

    @property
    def delta_properties(self) -> dict[str, str]:
        """The Delta table properties: the layer's, retention, statistics, then `properties`."""
        props = dict(LAYER_PROPERTIES.get(self.layer, {}))
        props["delta.logRetentionDuration"] = f"interval {max(self.retention_days, 7)} days"
        props["delta.deletedFileRetentionDuration"] = f"interval {self.retention_days} days"
        stats = self.stats_columns
        if stats:
            props["delta.dataSkippingStatsColumns"] = ",".join(stats)
        else:  # the row counts only (numRecords), still kept in the log
            props["delta.dataSkippingNumIndexedCols"] = "0"
        props.update(self.properties)
        return props

    @property
    def stats_columns(self) -> tuple[str, ...]:
        """The columns whose min/max/null counts each file records in the log: the keys
        (merges and run lookups), the Z-order columns and the dates and times (what queries
        filter by), but never a pseudonym: a random token's min/max prunes no file, and the
        log keeps them.

        Delta's default is every one of the first 32 columns, and collecting them is a
        projection per written row whose cost grows with the square of their number
        (bench/RESULTS.md, "where the test JVM's CPU goes"); partition columns never need it.
        """
        return tuple(
            c.name
            for c in self.columns
            if c.name not in self.partition_by
            and not c.pseudonym  # min/max tokens in the log would outlive an erasure
            and (c.name in (*self.keys, *self.zorder_by) or c.type in ("date", "timestamp"))
            and c.type.split("(")[0] in STATS_TYPES
        )

    @property
    def pseudonyms(self) -> tuple[str, ...]:
        """The columns holding a person's pseudonym (`Col.pseudonym`)."""
        return tuple(c.name for c in self.columns if c.pseudonym)

    @property
    def has_content_hash(self) -> bool:
        """Whether the table carries `_content_hash` (what `merge` compares)."""
        return CONTENT_HASH in self.column_names

    def spark_schema(self) -> StructType:
        """The contract as a StructType, with comments in the field metadata."""
        from pyspark.sql.types import StructField, StructType

        return StructType(
            [
                StructField(c.name, _data_type(c.type), c.nullable, {"comment": c.comment})
                for c in self.columns
            ]
        )

    def ddl_columns(self) -> str:
        """`name type [NOT NULL] COMMENT '...'` list for CREATE TABLE."""
        parts = []
        for c in self.columns:
            null = "" if c.nullable else " NOT NULL"
            parts.append(f"`{c.name}` {c.type}{null} COMMENT {sql_string(c.comment)}")
        return ",\n  ".join(parts)


@cache
def _data_type(text: str) -> DataType:
    """A column type's DDL text parsed by Spark (a round trip to the JVM), once per text."""
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(text)


def sql_string(text: str) -> str:
    """`text` as a Spark SQL string literal.

    >>> sql_string("it's")
    "'it\\\\'s'"
    """
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Registry:
    """All contracts by name; the single place tables are described.

    Iterates in catalog order (bronze, silver, gold, ops, then by name). The project's
    registry is `retail_lake.registry.CONTRACTS`; jobs reach it as `ctx.registry`.

    Raises:
        ContractError: a table described twice, or looked up under an unknown name (the
            message lists the known ones).

    Example:
        >>> registry = Registry([DAILY_SALES])  # see TableContract
        >>> registry["gold.store_type_daily_sales"].keys
        ('store_type', 'date')
        >>> "gold.store_type_daily_sales" in registry, registry.names()
        (True, ['gold.store_type_daily_sales'])
    """

    def __init__(self, contracts: Iterable[TableContract] = ()) -> None:
        self._by_name: dict[str, TableContract] = {}
        for c in contracts:
            self.add(c)

    def add(self, contract: TableContract) -> None:
        """Adds `contract`; a ContractError when its table is described already."""
        if contract.name in self._by_name:
            raise ContractError(f"table {contract.name} is described twice")
        self._by_name[contract.name] = contract

    def __getitem__(self, name: str) -> TableContract:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name))
            raise ContractError(f"no table contract named {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(sorted(self._by_name.values(), key=_catalog_order))

    def names(self) -> list[str]:
        """The table names, in catalog order."""
        return [c.name for c in self]


def _catalog_order(c: TableContract) -> tuple[int, str]:
    order = {"bronze": 0, "silver": 1, "gold": 2, "ops": 3}
    return (order.get(c.layer, 9), c.name)


# Provenance every bronze table carries; identity is (file, line).
PROVENANCE = (
    Col("_source_file", "string", "landing file, relative to the landing folder", False),
    Col(
        "_line_number", "bigint", "1-based line of the record in its file (header is line 1)", False
    ),
    Col("_ingested_at", "timestamp", "when the ingest run read the file (UTC)", False),
    Col("_run_id", "string", "ingest run that added the row", False),
    Col("_row_hash", "string", "SHA-256 of the raw fields; detects change, not identity", False),
)


def raw_table(
    name: str, source: str, columns: list[tuple[str, str]], description: str
) -> TableContract:
    """A bronze table: the source's columns as text, then provenance; identity (file, line).

    Appended by ingest, kept 90 days. A CSV source declared in the config alone gets one
    derived from its declared columns (`retail_lake.registry.components`).

    Args:
        name: `bronze.<name>`.
        source: where the rows come from, for the catalog (the config key and pattern).
        columns: (bronze column name, the column's name in the file) pairs, in order.
        description: what a row is, for the catalog.

    Example:
        >>> raw = raw_table(
        ...     "bronze.shop_sales_raw",
        ...     "sources.shop_sales (shop_sales/*.csv)",
        ...     [("shop_id", "Shop ID"), ("sold_on", "Sold On")],
        ...     "Shop sales as they arrived, every field as text.",
        ... )
        >>> raw.column_names[:3], raw.keys, raw.write_mode
        (('shop_id', 'sold_on', '_source_file'), ('_source_file', '_line_number'), 'append')
    """
    return TableContract(
        name=name,
        description=description,
        columns=tuple(Col(c, "string", f"as it arrived: {orig}") for c, orig in columns)
        + PROVENANCE,
        keys=("_source_file", "_line_number"),
        write_mode="append",
        source=source,
        retention_days=90,
    )


# Lineage a silver row keeps: the bronze line it came from.
LINEAGE = (
    Col("_source_file", "string", "bronze provenance: landing file"),
    Col("_line_number", "bigint", "bronze provenance: line in that file"),
)
