"""`retail-lake`: run jobs and the pipeline, look at tables, query with SQL.

    retail-lake run <job> [--profile P] [--set key=value ...] [--run-date YYYY-MM-DD]
    retail-lake pipeline [--resume] [--steps a,b,c]
    retail-lake tables
    retail-lake sql "SELECT ..."
    retail-lake history <layer.table>
    retail-lake runs [--job J] [--limit N]
    retail-lake landing retract FILE [--no-cleanse]
    retail-lake vacuum [--table T ...] [--retain-hours H] [--dry-run]
    retail-lake maintain [--table T ...] [--retain-hours H] [--on-needed-version refuse|snapshot]
    retail-lake privacy erase --customer ID [--request REF]
    retail-lake privacy rotate-key
    retail-lake airflow-dag [--out FILE] [--steps a,b,c] [--no-archive]
    retail-lake catalog [--readme README.md] [--check]

Every command but `catalog` takes `--profile P` (conf/profiles/P.yaml, default local),
`--set key=value` (repeatable), `--root ROOT` (for `--set paths.root=ROOT`) and `--verbose`.
`run` and `pipeline` also take `--full`: rebuild every unit and compare stored rows by their
content, which repairs a table changed by hand.

Errors are one line and exit status 1 (2 for bad usage); `--verbose` adds the stack trace.

Example:
    From a shell::

        retail-lake pipeline                                # every step of pipeline.steps
        retail-lake pipeline --steps ingest,cleanse,features --run-date 2011-12-09
        retail-lake pipeline --resume                       # after a failed pipeline run
        retail-lake run cleanse --full
        retail-lake run train_forecaster --set forecast.epochs=3 --root /tmp/lake
        retail-lake tables
        retail-lake sql "SELECT store_type, count(*) AS stores FROM silver.stores GROUP BY 1"
        retail-lake sql "SELECT * FROM ops.job_runs ORDER BY started_at DESC" --limit 5
        retail-lake history silver.stores --limit 5
        retail-lake runs --job cleanse                      # and marks runs whose lease expired
        retail-lake landing retract online_retail/day2.csv  # its rows out, then cleanse
        retail-lake privacy erase --customer 17850 --request DSR-42  # every row, old files
        retail-lake airflow-dag --profile cluster --root /data/lake --out dags/retail_lake.py
        retail-lake catalog --readme README.md --check

    From Python (`main` takes the same arguments):

    >>> from retail_lake.cli import main
    >>> main(["run", "features", "--run-date", "2011-12-09"])
    0
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from retail_lake.config import Config, ConfigError, load_config

log = logging.getLogger("retail_lake")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="local", help="conf/profiles/<profile>.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable)",
    )
    parser.add_argument("--root", help="shortcut for --set paths.root=ROOT")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="debug logging and stack traces on errors"
    )


def _full(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="rebuild every unit and compare stored rows by their content: repairs a table "
        "changed by hand (" + ", ".join(FULL) + ")",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `retail-lake` and its subcommands."""
    parser = argparse.ArgumentParser(prog="retail-lake", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one job")
    p.add_argument("job")
    p.add_argument(
        "--run-date",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="logical run date / as-of snapshot for time-dependent jobs",
    )
    _full(p)
    _common(p)

    p = sub.add_parser("pipeline", help="run the job DAG (pipeline.steps)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the steps that succeeded in the last pipeline run if it failed",
    )
    p.add_argument("--steps", help="comma-separated subset of steps, in order")
    p.add_argument("--run-date", type=date.fromisoformat, metavar="YYYY-MM-DD")
    _full(p)
    _common(p)

    p = sub.add_parser("tables", help="list tables: layer, Delta version, rows, last modified")
    p.add_argument(
        "--spark",
        action="store_true",
        help="read the transaction logs through Spark (what a remote root always does; a "
        "local lake is read without starting Spark)",
    )
    _common(p)

    p = sub.add_parser(
        "sql", help="run a SQL query over the lake's tables and print it (queries only)"
    )
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    p.add_argument(
        "--allow-writes",
        action="store_true",
        help="also run a statement that changes the lake (INSERT, UPDATE, DELETE, DROP, ...), "
        "recorded as a run in ops.job_runs",
    )
    _common(p)

    p = sub.add_parser("history", help="Delta history of a table")
    p.add_argument("table")
    p.add_argument("--limit", type=int, default=20)
    _common(p)

    p = sub.add_parser(
        "runs",
        help="recent runs from ops.job_runs, newest first; a run whose lease expired is "
        "recorded as abandoned first",
    )
    p.add_argument("--job", help="only this job's runs")
    p.add_argument("--limit", type=int, default=20)
    _common(p)

    p = sub.add_parser("landing", help="the landing-file ledger (ops.landed_files)")
    actions = p.add_subparsers(dest="action", required=True)
    r = actions.add_parser(
        "retract",
        help="take a landed file's rows out of bronze and quarantine (recorded), then cleanse",
    )
    r.add_argument("file", help="the file as ops.landed_files names it (source folder/name)")
    r.add_argument(
        "--no-cleanse",
        action="store_true",
        help="leave silver as it is until the next cleanse run",
    )
    _common(r)

    p = sub.add_parser("privacy", help="erase a person, rotate the pseudonymisation key")
    actions = p.add_subparsers(dest="action", required=True)
    r = actions.add_parser(
        "erase",
        help="delete one customer's rows from every table and their old files (recorded "
        "without the id), then rebuild the features",
    )
    r.add_argument("--customer", required=True, help="the customer id as the source files write it")
    r.add_argument("--request", help="your reference for the request, kept in ops.erasures")
    _common(r)
    r = actions.add_parser(
        "rotate-key",
        help="re-make every token with a new pseudonymisation key (one recorded run); the "
        "old key is gone afterwards",
    )
    _common(r)

    p = sub.add_parser(
        "models",
        help="registered models: each one's champion (what scorers use), challengers and test "
        "metrics; promote or roll back the champion (recorded)",
    )
    _common(p)
    actions = p.add_subparsers(dest="action")
    r = actions.add_parser("list", help="every version: role, test metrics, why (the default)")
    r.add_argument("--model", help="only this model")
    _common(r)
    for action, what in (
        ("promote", "make VERSION the champion (e.g. a challenger that lost by a hair)"),
        ("rollback", "make an older VERSION the champion again"),
    ):
        r = actions.add_parser(action, help=what + "; scorers use it on their next run")
        r.add_argument("name", help="registered model, e.g. sales_forecaster")
        r.add_argument("version", help="its registered version")
        r.add_argument("--reason", required=True, help="why: recorded in ops.model_decisions")
        _common(r)

    p = sub.add_parser(
        "vacuum",
        help="delete files the tables no longer reference, older than each table's retention",
    )
    p.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    p.add_argument(
        "--retain-hours",
        type=float,
        help="keep files younger than this (default: each table's retention_days); under "
        "168 Delta's safety check is lifted for this run: readers of older versions fail",
    )
    p.add_argument("--dry-run", action="store_true", help="count the files, delete nothing")
    _common(p)

    p = sub.add_parser(
        "maintain",
        help="compact (OPTIMIZE, Z-order) and vacuum the tables, keeping every version a "
        "published model or a pin still reads",
    )
    p.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    p.add_argument(
        "--retain-hours",
        type=float,
        help="VACUUM keeps files younger than this (default: each table's retention_days)",
    )
    p.add_argument(
        "--on-needed-version",
        choices=("refuse", "snapshot"),
        help="when a VACUUM would delete files a needed version reads: leave the table and "
        "fail, or copy that version to <root>/snapshots first (default: "
        "maintain.on_needed_version)",
    )
    p.add_argument("--no-optimize", action="store_true", help="vacuum only")
    _common(p)

    p = sub.add_parser(
        "airflow-dag",
        help="write the pipeline as an Airflow DAG (one spark-submit task per job)",
    )
    p.add_argument("--out", help="the DAG file to write (default: print it)")
    p.add_argument("--steps", help="comma-separated steps, in order (default: pipeline.steps)")
    p.add_argument(
        "--no-archive",
        action="store_true",
        help="do not build the library archive the tasks ship (built by default when "
        "airflow.project_dir is this checkout)",
    )
    _common(p)

    p = sub.add_parser("catalog", help="print the table catalog (markdown) from the contracts")
    p.add_argument("--readme", help="rewrite the catalog section of this README")
    p.add_argument(
        "--check",
        action="store_true",
        help="with --readme: fail if the README's catalog is out of date",
    )
    return parser


def setup_logging(verbose: bool) -> None:
    """INFO progress lines from retail_lake; other libraries only warn (DEBUG: everything)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("retail_lake").setLevel(logging.DEBUG if verbose else logging.INFO)
    # MLflow sets its loggers' level when first imported (INFO: its database migrations on
    # every new store, a warning on the pickled format the trainer chooses on purpose).
    os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO" if verbose else "ERROR"
    if not verbose:
        # Deprecations inside third-party code (petastorm calls pyarrow's old filesystem
        # API): nothing a user of this tool can act on.
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=r"petastorm(\.|$)")
    for noisy in (
        "py4j",
        "petastorm",
        "urllib3",
        "great_expectations",
        "alembic",
        "mlflow",
        "filelock",
        "matplotlib",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    # pyspark logs every SQL error as a page of JSON before raising it; the CLI prints the
    # error itself (the trace only with --verbose).
    logging.getLogger("SQLQueryContextLogger").disabled = not verbose


FULL = ("runner.skip_unchanged=false", "runner.verify_content=true")


def config_from_args(args: argparse.Namespace) -> Config:
    """The configuration the arguments name: profile, `--set` items, `--root`, `--full`."""
    if getattr(args, "full", False):
        args.overrides.extend(FULL)  # recorded with the run's parameters
    overrides = list(args.overrides)
    if args.root:
        overrides.append(f"paths.root={args.root}")
    if getattr(args, "verbose", False):
        overrides.append("spark.jvm_log_dir=")  # everything on the console
    return load_config(args.profile, overrides)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, sep, *body])


# ----------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake run JOB`: runs one job (`pipeline.run_single`)."""
    from retail_lake.pipeline import run_single

    run_single(cfg, args.job, args.run_date, args.overrides)
    return 0


def cmd_pipeline(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake pipeline`: runs the pipeline's steps in order (`pipeline.run_pipeline`)."""
    from retail_lake.pipeline import run_pipeline

    steps = args.steps.split(",") if args.steps else None
    run_pipeline(
        cfg, steps=steps, resume=args.resume, run_date=args.run_date, overrides=args.overrides
    )
    return 0


def cmd_tables(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake tables`: prints each table's layer, version, rows, last change, files."""
    from retail_lake.delta_log import read_lake
    from retail_lake.session import LAYERS

    # A local lake is read from its logs without Spark (delta-rs); Spark starts only for a
    # remote root or a table whose file statistics cannot count its rows.
    found = None if args.spark else read_lake(cfg.root)
    if found is None:
        summaries = _summaries_by_spark(cfg, None)
    else:
        left = [name for name, info in found.items() if info is None]
        if left:
            log.info("reading %s through Spark (rows not counted in the log)", ", ".join(left))
            found.update({s.table: s for s in _summaries_by_spark(cfg, left)})
        summaries = [info for info in found.values() if info is not None]
    summaries.sort(key=lambda info: (LAYERS.index(info.table.split(".")[0]), info.table))
    rows = [
        (
            info.table,
            info.table.split(".")[0],
            info.version,
            info.rows,
            f"{info.last_modified:%Y-%m-%d %H:%M:%S}",
            info.files,
        )
        for info in summaries
    ]
    if not rows:
        print(f"no tables under {cfg.root} yet (run: retail-lake pipeline)")
        return 0
    print(format_table(["table", "layer", "version", "rows", "last_modified_utc", "files"], rows))
    return 0


def _summaries_by_spark(cfg: Config, tables: list[str] | None) -> list:
    """`Lake.summary` of `tables` (default: every table under the root) through Spark."""
    from retail_lake.lake import Lake
    from retail_lake.session import build_session, register_tables

    spark = build_session(cfg)
    lake = Lake(spark, cfg.root)
    names = register_tables(spark, cfg.root) if tables is None else tables
    return [lake.summary(name) for name in names]


def cmd_sql(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake sql QUERY`: runs a query over the lake's tables, prints `--limit` rows."""
    from retail_lake.analyst import run_sql
    from retail_lake.session import build_session

    # The statement's own tables are registered by run_sql, not every table of the lake.
    spark = build_session(cfg, register=False)
    df = run_sql(spark, cfg, args.query, allow_writes=args.allow_writes)
    rows = df.limit(args.limit + 1).collect()
    print(format_table(df.columns, [tuple(r) for r in rows[: args.limit]]))
    if len(rows) > args.limit:
        print(f"(first {args.limit} rows; use --limit)")
    return 0


def cmd_history(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake history TABLE`: prints the table's latest commits with their run ids."""
    from retail_lake.lake import Lake
    from retail_lake.session import build_session

    spark = build_session(cfg, register=False)  # the table is read by its path
    hist = (
        Lake(spark, cfg.root)
        .history(args.table, args.limit)
        .select("version", "timestamp", "operation", "userMetadata", "operationMetrics")
    )
    rows = []
    for r in hist.collect():
        metrics = r["operationMetrics"] or {}
        keep = {
            k: v
            for k, v in metrics.items()
            if k
            in (
                "numOutputRows",
                "numTargetRowsInserted",
                "numTargetRowsUpdated",
                "numTargetRowsDeleted",
                "numDeletedRows",
            )
        }
        rows.append(
            (
                r["version"],
                f"{r['timestamp']:%Y-%m-%d %H:%M:%S}",
                r["operation"],
                r["userMetadata"] or "-",  # the run id every job's commit carries
                ", ".join(f"{k}={v}" for k, v in sorted(keep.items())),
            )
        )
    print(format_table(["version", "timestamp_utc", "operation", "run_id", "metrics"], rows))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    """`retail-lake catalog`: prints the table catalog, or updates or checks a README's."""
    from retail_lake.catalog import render_catalog, update_readme

    if args.readme:
        changed = update_readme(args.readme, check=args.check)
        if args.check and changed:
            print(
                f"{args.readme}: the table catalog is out of date; run "
                f"'retail-lake catalog --readme {args.readme}'",
                file=sys.stderr,
            )
            return 1
        return 0
    print(render_catalog())
    return 0


def cmd_runs(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake runs`: marks runs whose lease expired as abandoned, prints recent runs."""
    from pyspark.sql import functions as F

    from retail_lake.lake import Lake
    from retail_lake.ops import JOB_RUNS
    from retail_lake.runner import expire_leases
    from retail_lake.session import build_session

    spark = build_session(cfg)
    lake = Lake(spark, cfg.root)
    if not lake.exists(JOB_RUNS):
        print(f"no runs recorded under {cfg.root} yet")
        return 0
    for run_id in expire_leases(lake, float(cfg.get("runner.lease_seconds"))):
        log.warning("run %s: its lease expired: recorded as abandoned", run_id)
    runs = lake.read(JOB_RUNS)
    if args.job:
        runs = runs.where(F.col("job") == args.job)
    rows = [
        (
            r["run_id"],
            r["job"],
            r["status"],
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
            "" if r["duration_s"] is None else f"{r['duration_s']:.1f}",
            (r["error"] or "").splitlines()[0][:80] if r["error"] else "",
        )
        for r in runs.orderBy(F.col("started_at").desc()).limit(args.limit).collect()
    ]
    print(format_table(["run_id", "job", "status", "started_utc", "seconds", "error"], rows))
    return 0


def cmd_landing(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake landing retract FILE`: the file's rows out of bronze and quarantine (one
    recorded run, `retail_lake.landing`), then cleanse rebuilds silver without them."""
    from retail_lake.landing import retract
    from retail_lake.pipeline import run_single
    from retail_lake.registry import run_job
    from retail_lake.session import build_session

    spark = build_session(cfg, "retail-lake landing retract", register=False)
    _, writes = run_job(spark, cfg, "retract", retract(args.file), params={"file": args.file})
    for table, write in sorted(writes.items()):
        print(f"{table}: {write.deleted} rows removed" if not write.skipped else f"{table}: -")
    if not args.no_cleanse:
        run_single(cfg, "cleanse", overrides=args.overrides, spark=spark)
        print("cleanse: silver rebuilt from bronze; features and models follow on their next run")
    return 0


def cmd_privacy(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake privacy erase`: one customer out of every table and old file
    (`retail_lake.erasure`), the features rebuilt as a child run; `privacy rotate-key`:
    every token re-made with a new key (`retail_lake.rotation`)."""
    from retail_lake.erasure import erase
    from retail_lake.pipeline import run_single
    from retail_lake.registry import run_job
    from retail_lake.rotation import rotate_key
    from retail_lake.runner import ROTATE_KEY
    from retail_lake.session import build_session

    spark = build_session(cfg, f"retail-lake privacy {args.action}", register=False)
    if args.action == "rotate-key":
        ctx, writes = run_job(spark, cfg, ROTATE_KEY, rotate_key())
        rows = [(t, w.rows_changed) for t, w in sorted(writes.items())]
        print(format_table(["table", "rows re-tokenised"], rows))
        state = ctx.state["rotation"]
        print(f"key id {state['from']} -> {state['to']} (run {ctx.run_id})")
        return 0

    def rebuild(ctx) -> None:
        if ctx.lake.exists("silver.transactions"):
            run_single(
                cfg, "features", overrides=args.overrides, parent_run_id=ctx.run_id, spark=spark
            )

    params = {"request": args.request or ""}  # never the id
    job = erase(args.customer, args.request, rebuild)
    ctx, _ = run_job(spark, cfg, "erase", job, params=params)
    done = ctx.state["erasure"]
    rows = [
        (table, n, done["files_vacuumed"].get(table, 0))
        for table, n in sorted(done["rows_deleted"].items())
    ]
    print(format_table(["table", "rows deleted", "old files deleted"], rows))
    print(
        f"erasure recorded in ops.erasures (run {ctx.run_id}); the recommender forgets the "
        "customer when it retrains on its next run"
    )
    return 0


# The test metrics `models` shows first, in this order (then the others).
_SHOWN_FIRST = ("rmspe", "mape", "accuracy", "log_loss")


def cmd_models(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake models [list]`: every registered version with its role and test metrics
    (MLflow only, no Spark); `models promote|rollback NAME VERSION --reason`: the champion
    alias moved in a recorded run (`retail_lake.champions.move`)."""
    from datetime import UTC, datetime

    from retail_lake import champions

    if args.action in ("promote", "rollback"):
        from retail_lake.registry import run_job
        from retail_lake.session import build_session

        spark = build_session(cfg, f"retail-lake models {args.action}", register=False)
        job = champions.move(args.name, args.version, args.reason, args.action == "rollback")
        params = {"model": args.name, "version": args.version, "reason": args.reason}
        ctx, _ = run_job(spark, cfg, f"models_{args.action}", job, params=params)
        print(
            f"{args.name}: version {args.version} is the champion (run {ctx.run_id}, "
            "ops.model_decisions); the scoring jobs use it on their next run"
        )
        return 0
    versions = champions.listing(cfg, getattr(args, "model", None))
    if not versions:
        print(f"no registered models under {cfg.root} yet")
        return 0

    def shown(test: dict[str, float]) -> str:
        rank = {k: i for i, k in enumerate(_SHOWN_FIRST)}
        order = sorted(test, key=lambda k: (rank.get(k, len(rank)), k))
        return " ".join(
            f"{k} {test[k]:.0f}" if float(test[k]).is_integer() else f"{k} {test[k]:.4f}"
            for k in order[:3]
        )

    rows = [
        (
            v["model"],
            v["version"],
            v["role"],
            f"{datetime.fromtimestamp(v['registered'] / 1000, UTC):%Y-%m-%d %H:%M}",
            shown(v["test"]),
            v["reason"][:90],
        )
        for v in versions
    ]
    print(format_table(["model", "version", "role", "registered_utc", "test", "reason"], rows))
    return 0


def airflow_job_args(args: argparse.Namespace, cfg: Config) -> list[str]:
    """What every task of a generated DAG passes its job: the profile, the `--set` items
    (the DAG's own `airflow.*` ones left out) and the lake's absolute paths.

    Raises:
        ConfigError: a `--set` item holds a secret, which the DAG file would show to
            everyone who can read the DAG folder.
    """
    from retail_lake.redaction import SECRET_KEY, redact_text

    passed = [
        o
        for o in args.overrides
        if not o.split("=", 1)[0].strip().startswith(("airflow.", "paths.root", "paths.landing"))
    ]
    for item in passed:
        if SECRET_KEY.search(item.split("=", 1)[0]) or redact_text(item) != item:
            raise ConfigError(
                f"--set {redact_text(item.split('=', 1)[0])}=...: a secret would be written "
                "into the DAG file; give it to the tasks through the Airflow workers' "
                "environment or the Spark connection's extras instead"
            )
    paths = [f"paths.root={cfg.root}"]
    if cfg.get("paths.landing"):
        paths.append(f"paths.landing={cfg.get('paths.landing')}")
    items = [x for o in (*paths, *passed) for x in ("--set", o)]
    return ["--profile", args.profile, *items]


def cmd_airflow_dag(args: argparse.Namespace, cfg: Config, argv: Sequence[str]) -> int:
    """`retail-lake airflow-dag`: the pipeline as an Airflow DAG file (and its archive)."""
    from retail_lake import airflow_dag
    from retail_lake.package import build_archive, default_conf_dir

    steps = args.steps.split(",") if args.steps else list(cfg.get("pipeline.steps"))
    here = str(default_conf_dir().parent)
    s = airflow_dag.settings(
        cfg, airflow_job_args(args, cfg), airflow_dag.command_line(argv), here, sys.executable
    )
    text = airflow_dag.render(steps, s)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log.info("wrote DAG %s (%d tasks) to %s", s.dag_id, len(steps), out)
    else:
        print(text, end="")
    if args.no_archive:
        return 0
    if cfg["airflow"]["project_dir"]:
        log.info(
            "the tasks ship %s: build it where they run (python -m retail_lake.package --out %s)",
            s.archive,
            s.archive,
        )
        return 0
    build_archive(s.archive)
    log.info("built the library archive the tasks ship: %s", s.archive)
    return 0


def cmd_vacuum(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake vacuum`: Delta's VACUUM on the lake's tables in one recorded run."""
    from retail_lake.maintenance import vacuum
    from retail_lake.registry import run_job
    from retail_lake.session import build_session

    spark = build_session(cfg, "retail-lake vacuum", register=False)
    params = {"tables": ",".join(args.table) or "all", "retain_hours": str(args.retain_hours)}
    job = vacuum(args.table, args.retain_hours, args.dry_run)
    ctx, _ = run_job(spark, cfg, "vacuum", job, params={**params, "dry_run": str(args.dry_run)})
    verb = "to delete" if args.dry_run else "deleted"
    print(format_table(["table", f"files {verb}"], sorted(ctx.state["vacuumed"].items())))
    return 0


def cmd_maintain(args: argparse.Namespace, cfg: Config) -> int:
    """`retail-lake maintain`: OPTIMIZE and a guarded VACUUM in one recorded run."""
    from retail_lake.maintenance import maintain
    from retail_lake.registry import run_job
    from retail_lake.session import build_session

    spark = build_session(cfg, "retail-lake maintain", register=False)
    params = {
        "tables": ",".join(args.table) or "all",
        "retain_hours": str(args.retain_hours),
        "on_needed_version": str(args.on_needed_version),
        "optimize": str(not args.no_optimize),
    }
    job = maintain(args.table, args.retain_hours, args.on_needed_version, not args.no_optimize)
    ctx, _ = run_job(spark, cfg, "maintain", job, params=params)
    print(format_table(MAINTAIN_HEADER, maintain_rows(ctx.details["tables"])))
    return 0


MAINTAIN_HEADER = ["table", "OPTIMIZE files", "MB after", "VACUUM files", "MB deleted", "note"]


def maintain_rows(tables: dict[str, dict[str, Any]]) -> list[tuple]:
    """One row per table of `maintain`'s details, for the console."""
    rows = []
    for name, done in sorted(tables.items()):
        opt, vac = done.get("optimize") or {}, done.get("vacuum") or {}
        compacted = (
            f"{opt['files_removed']} -> {opt['files_added']}" if "files_added" in opt else "-"
        )
        notes = [f"snapshot of version {s['version']}" for s in done.get("snapshots", [])]
        notes += [f"refused: {r}" for r in vac.get("refused", [])]
        rows.append(
            (
                name,
                compacted,
                f"{opt['bytes_added'] / 1e6:.2f}" if "bytes_added" in opt else "-",
                vac.get("files_deleted", "-"),
                f"{vac['bytes_deleted'] / 1e6:.2f}" if "bytes_deleted" in vac else "-",
                "; ".join(notes),
            )
        )
    return rows


COMMANDS = {
    "models": cmd_models,
    "privacy": cmd_privacy,
    "vacuum": cmd_vacuum,
    "maintain": cmd_maintain,
    "landing": cmd_landing,
    "runs": cmd_runs,
    "run": cmd_run,
    "pipeline": cmd_pipeline,
    "tables": cmd_tables,
    "sql": cmd_sql,
    "history": cmd_history,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The `retail-lake` command: parses `argv`, runs the command, returns the exit status.

    Progress goes to stderr as log lines; a failure is printed as one line (the stack trace
    with `--verbose`).

    Args:
        argv: the arguments after the program name; default `sys.argv[1:]`.

    Returns:
        0 on success, 1 when the command failed, 2 for a configuration error, 130 when
        interrupted. Bad usage exits with status 2 (argparse's SystemExit).

    Example:
        >>> from retail_lake.cli import main
        >>> main(["run", "ingest"])                              # retail-lake run ingest
        0
        >>> main(["pipeline", "--steps", "ingest,cleanse"])
        0
        >>> main(["sql", "SELECT count(*) AS n FROM silver.stores", "--limit", "1"])
        n
        ----
        1115
        0
        >>> main(["history", "silver.stores", "--limit", "3", "--profile", "local"])
        0
    """
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    setup_logging(verbose)
    started = time.monotonic()
    try:
        if args.command == "catalog":
            return cmd_catalog(args)
        cfg = config_from_args(args)
        if args.command == "airflow-dag":
            return cmd_airflow_dag(args, cfg, sys.argv[1:] if argv is None else argv)
        code = COMMANDS[args.command](args, cfg)
        if args.command in ("run", "pipeline"):
            log.info("done in %.1fs", time.monotonic() - started)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if verbose:
            logging.getLogger("retail_lake").exception("failed")
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """The readable part of an exception (py4j errors carry pages of JVM trace)."""
    text = str(exc).strip() or type(exc).__name__
    name = type(exc).__name__
    # Quality/conservation summaries are several short lines: keep them whole.
    if name in ("QualityGateError", "ConservationError"):
        return text
    first = text.splitlines()[0]
    return first if len(first) < 2000 else first[:2000] + "..."


if __name__ == "__main__":
    sys.exit(main())
