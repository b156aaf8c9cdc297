"""`silver.quarantine`: every record ingest or cleanse rejected, with its rule and payload."""

from __future__ import annotations

from retail_lake.contracts import Col, TableContract, meta_columns

QUARANTINE = "silver.quarantine"

CONTRACT = TableContract(
    name=QUARANTINE,
    description="Every rejected record, with where it came from, the rule it broke and "
    "its raw payload (personal fields pseudonymised).",
    columns=(
        Col("source", "string", "source or table the record came from", False),
        Col("stage", "string", "ingest or cleanse", False),
        Col("rule", "string", "machine-readable rule name, e.g. column_count", False),
        Col("column", "string", "the column at fault, when one is"),
        Col("reason", "string", "readable reason", False),
        Col("payload", "string", "the raw line (ingest) or the bronze fields as JSON"),
        Col("_source_file", "string", "landing file", False),
        Col("_line_number", "bigint", "line in that file", False),
        Col(
            "_quarantined_at",
            "timestamp",
            "when the record was first rejected (UTC); not part of the content hash",
            False,
        ),
        *meta_columns(),
    ),
    keys=("source", "stage", "_source_file", "_line_number", "rule"),
    source="ingest, cleanse",
    retention_days=365,
)
