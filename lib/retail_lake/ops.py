"""The run journal's contracts (the `ops` layer): what the runner records of every run."""

from __future__ import annotations

from retail_lake.contracts import Col, TableContract

JOB_RUNS = "ops.job_runs"
UNIT_STATES = "ops.unit_states"
QUALITY_RESULTS = "ops.quality_results"
MODEL_METRICS = "ops.model_metrics"
LANDED_FILES = "ops.landed_files"
ERASURES = "ops.erasures"
MODEL_DECISIONS = "ops.model_decisions"

OPS = [
    TableContract(
        name=LANDED_FILES,
        description="The landing-file ledger: a row per file of a source each time ingest "
        "records it (the latest row of a file counts), with its content hash. A file whose "
        "content was already ingested under another name is recorded as a duplicate and "
        "skipped; an empty file is recorded once (again when it grows).",
        columns=(
            Col("source", "string", "configured source (sources.<name>)", False),
            Col("file", "string", "landing file, relative to the landing folder", False),
            Col("size_bytes", "bigint", "the file's size as it arrived (compressed)", False),
            Col("content_sha256", "string", "SHA-256 of the file's bytes as they arrived", False),
            Col(
                "status",
                "string",
                "ingested (its rows are in bronze), duplicate (same bytes as duplicate_of: "
                "skipped), empty (no header, no records: skipped) or retracted (its rows "
                "taken out by `retail-lake landing retract`; the same bytes are skipped)",
                False,
            ),
            Col("duplicate_of", "string", "the ingested file with the same content"),
            Col("run_id", "string", "the run that recorded it (ops.job_runs.run_id)", False),
            Col("recorded_at", "timestamp", "when (UTC)", False),
        ),
        keys=("source", "file", "recorded_at"),
        write_mode="append",
        source="ingest (committed by the driver after the run's bronze rows)",
        retention_days=365,
    ),
    TableContract(
        name=ERASURES,
        description="One row per erasure of a person (`retail-lake privacy erase`), written "
        "once every table holding them has lost their rows and its old files: what was "
        "removed where, never who (no identifier, no token).",
        columns=(
            Col("run_id", "string", "the erase run (ops.job_runs.run_id)", False),
            Col("request", "string", "the operator's reference for the request, if given"),
            Col("key_id", "string", "id of the pseudonymisation key the tokens were made with"),
            Col("rows_deleted", "map<string,bigint>", "rows deleted per table", False),
            Col("values_redacted", "map<string,bigint>", "values redacted per table or folder"),
            Col(
                "files_vacuumed",
                "map<string,bigint>",
                "files deleted per table (old versions, change data)",
                False,
            ),
            Col(
                "retain_hours", "double", "the VACUUM retention used (privacy.erasure_retain_hours)"
            ),
            Col("erased_at", "timestamp", "when the erasure completed (UTC)", False),
        ),
        write_mode="append",
        source="privacy erase (committed by the driver last)",
        retention_days=365,
    ),
    TableContract(
        name=JOB_RUNS,
        description="One row per job run: written as 'running' when it starts, completed "
        "with its outcome when it ends.",
        columns=(
            Col("run_id", "string", "unique id of the run", False),
            Col("job", "string", "job name", False),
            Col("parent_run_id", "string", "the pipeline run this step belongs to"),
            Col(
                "status",
                "string",
                "running, succeeded, failed, or abandoned (its lease expired: the process ended "
                "without recording an outcome)",
                False,
            ),
            Col("profile", "string", "configuration profile", False),
            Col("run_date", "date", "logical run date / as-of snapshot"),
            Col("started_at", "timestamp", "start (UTC)", False),
            Col("ended_at", "timestamp", "end (UTC); null while running"),
            Col("duration_s", "double", "wall-clock seconds"),
            Col("parameters", "map<string,string>", "job parameters and --set overrides"),
            Col("rows_read", "map<string,bigint>", "rows read per input"),
            Col(
                "rows_written",
                "map<string,bigint>",
                "rows inserted+updated+deleted per output table",
            ),
            Col("versions_read", "map<string,bigint>", "Delta version read per input table"),
            Col("versions_written", "map<string,bigint>", "Delta version written per output table"),
            Col("conservation", "string", "row-conservation checks as JSON"),
            Col("error", "string", "error summary when failed"),
            Col("host", "string", "driver host"),
            Col("spark_app_id", "string", "Spark application id"),
            Col(
                "heartbeat_at",
                "timestamp",
                "last sign of life of the run (UTC), renewed while it runs; older than "
                "runner.lease_seconds: the run is abandoned",
            ),
            Col(
                "details",
                "string",
                "what the run did beyond its outputs, as JSON (maintain: per table the files "
                "and bytes OPTIMIZE removed and added, VACUUM deleted, the versions after, "
                "snapshots made and vacuums refused)",
            ),
        ),
        keys=("run_id",),
        write_mode="merge",
        source="every job",
        retention_days=365,
    ),
    TableContract(
        name=UNIT_STATES,
        description="One row per unit of work a job considered (a source in cleanse, a group "
        "of feature tables) in a successful run: rebuilt, or skipped because nothing that "
        "shapes its rows changed since (runner.skip_unchanged).",
        columns=(
            Col("run_id", "string", "job run (ops.job_runs.run_id)", False),
            Col("job", "string", "job name", False),
            Col("unit", "string", "unit of work, e.g. 'cleanse online_retail'", False),
            Col("status", "string", "built or unchanged (skipped)", False),
            Col(
                "fingerprint",
                "string",
                "hash of the input versions (the last that changed rows: compactions do not "
                "count), settings, run date and code the rows came from",
                False,
            ),
            Col(
                "output_versions",
                "map<string,bigint>",
                "Delta version of each output after (the last that changed its rows)",
            ),
            Col("recorded_at", "timestamp", "when (UTC)", False),
        ),
        write_mode="append",
        source="every job with units (cleanse, features)",
        retention_days=365,
    ),
    TableContract(
        name=QUALITY_RESULTS,
        description="One row per expectation evaluated by a quality gate.",
        columns=(
            Col("run_id", "string", "run that evaluated it", False),
            Col("table_name", "string", "table whose pending output was validated", False),
            Col("expectation", "string", "Great Expectations expectation type", False),
            Col("column", "string", "column, when the expectation has one"),
            Col("kwargs", "string", "the expectation's arguments as JSON", False),
            Col("severity", "string", "critical (stops the publish) or warning", False),
            Col("success", "boolean", "whether it held", False),
            Col("element_count", "bigint", "rows evaluated"),
            Col("unexpected_count", "bigint", "rows that broke it"),
            Col("observed", "string", "observed value / partial unexpected list as JSON"),
            Col("evaluated_at", "timestamp", "when (UTC)", False),
        ),
        write_mode="append",
        source="quality gates",
        retention_days=365,
    ),
    TableContract(
        name=MODEL_METRICS,
        description="Metrics of every model run (MLflow holds the full tracking).",
        columns=(
            Col("run_id", "string", "job run", False),
            Col("model_name", "string", "model", False),
            Col("model_version", "string", "registered version; null when not published"),
            Col("mlflow_run_id", "string", "MLflow run id"),
            Col(
                "split",
                "string",
                "train, validation, test, baseline:<name>, or champion:<version> (the "
                "champion re-evaluated on the challenger's test data)",
                False,
            ),
            Col("metric", "string", "metric name", False),
            Col("value", "double", "metric value", False),
            Col("input_versions", "map<string,bigint>", "Delta versions of the inputs"),
            Col("recorded_at", "timestamp", "when (UTC)", False),
        ),
        write_mode="append",
        source="training jobs",
        retention_days=365,
    ),
    TableContract(
        name=MODEL_DECISIONS,
        description="One row per champion decision: a trained model that beat its baselines "
        "judged against the current champion on the same test data (promoted, or kept as a "
        "challenger), or an operator's `retail-lake models promote|rollback`. Scoring jobs "
        "use the champion (the MLflow alias `champion`).",
        columns=(
            Col("run_id", "string", "the run that decided (ops.job_runs.run_id)", False),
            Col("model_name", "string", "registered model", False),
            Col(
                "action",
                "string",
                "promoted (a trained challenger won, or there was no champion), kept (it "
                "lost: the champion stays), promote or rollback (an operator)",
                False,
            ),
            Col("version", "string", "the version decided about", False),
            Col("champion_before", "string", "the champion before; null when there was none"),
            Col("champion_after", "string", "the champion after"),
            Col("metric", "string", "the metric judged (training decisions)"),
            Col("challenger_value", "double", "the new version's value on the test data"),
            Col(
                "champion_value",
                "double",
                "the champion's value on the same data; null when it could not be evaluated",
            ),
            Col("margin", "double", "models.promotion_margin the decision used"),
            Col("reason", "string", "why, in words (an operator's --reason)", False),
            Col("decided_at", "timestamp", "when (UTC)", False),
        ),
        write_mode="append",
        source="training jobs and `retail-lake models`",
        retention_days=365,
    ),
]
