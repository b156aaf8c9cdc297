"""The pipeline as an Airflow DAG: one `spark-submit` task per job, written by
`retail-lake airflow-dag`.

The tasks' dependencies come from what each job reads and writes (`registry.JOB_IO`): a step
waits for an earlier step that writes what it reads, writes what it writes or overwrites
what it reads; the edges left are the transitive reduction. With the default steps,
`score_locations`, `recommend` and `train_forecaster` run side by side after `features`.

The file is generated, never edited: the command line that wrote it is in its docstring, and
`tests/test_airflow_dag.py` fails when the committed example (`dags/retail_lake.py`) differs
from what that line writes today.

    >>> from retail_lake.airflow_dag import upstream
    >>> upstream(["ingest", "cleanse", "features", "recommend", "train_forecaster"])["recommend"]
    ('features',)
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from retail_lake.config import Config, ConfigError
from retail_lake.registry import CONTRACTS, JOB_IO, JOBS, TIME_DEPENDENT, UnknownJobError
from retail_lake.session import CDS_FLAGS, UTC_JVM

# The logical date a time-dependent job gets: Airflow 3's `ds` is the run's own day (a daily
# cron run for 2026-12-03 starts after 2026-12-03's schedule time and gets 2026-12-03).
RUN_DATE_TEMPLATE = "{{ ds }}"
DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def expand(names: Iterable[str]) -> set[str]:
    """Names with their `layer.*` / `*` patterns replaced by the tables and models they match.

    >>> sorted(expand(["gold.sales_*", "model:huff"]))
    ['gold.sales_forecasts', 'gold.sales_windows', 'model:huff']
    """
    declared = {n for io in JOB_IO.values() for n in (*io.reads, *io.writes)}
    universe = sorted({*CONTRACTS.names(), *declared} - {"*"})
    found: set[str] = set()
    for name in names:
        if any(c in name for c in "*?["):
            found.update(u for u in universe if fnmatch.fnmatchcase(u, name))
        else:
            found.add(name)
    return found


def upstream(steps: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each step's direct upstream steps (in `steps` order), from `registry.JOB_IO`.

    Step B waits for an earlier step A when B reads what A writes, both write the same
    table or model, or B writes what A reads; edges implied by others are left out.

    Raises:
        UnknownJobError: a step that is not a registered job.
        ConfigError: a step named twice (a DAG has one task per job).
    """
    for step in steps:
        if step not in JOBS:
            raise UnknownJobError(step)
    twice = sorted({s for s in steps if steps.count(s) > 1})
    if twice:
        raise ConfigError(f"steps {twice} are named twice: a DAG has one task per job")
    reads = {s: expand(JOB_IO[s].reads) for s in steps}
    writes = {s: expand(JOB_IO[s].writes) for s in steps}
    needs: dict[str, set[str]] = {}
    for j, later in enumerate(steps):
        needs[later] = {
            earlier
            for earlier in steps[:j]
            if reads[later] & writes[earlier]
            or writes[later] & writes[earlier]
            or writes[later] & reads[earlier]
        }
    # Transitive reduction: drop A -> C when some B with A -> B -> ... -> C exists.
    ancestors: dict[str, set[str]] = {}
    for step in steps:
        ancestors[step] = set().union(*({u, *ancestors[u]} for u in needs[step]))
    return {
        step: tuple(
            u for u in steps if u in needs[step] and not any(u in ancestors[o] for o in needs[step])
        )
        for step in steps
    }


@dataclass(frozen=True)
class DagSettings:
    """What the generated file needs to know about where the project lives on the workers.

    Attributes:
        dag_id, schedule, start_date, retries, retry_delay_minutes, conn_id: `airflow.*`.
        project_dir: the checkout whose `jobs/*.py` the tasks submit.
        python: the project venv's interpreter (PySpark's Python on driver and executors);
            its folder holds the `spark-submit` the tasks call.
        archive: the library as `--py-files` (`python -m retail_lake.package --out ...`).
        ivy_dir: the Ivy cache holding the Delta jars `install` resolved.
        class_archive: the driver JVM's class archive (`install` makes it; a JVM without
            it starts a few seconds slower).
        driver_memory, driver_java_options, executor_java_options: what the profile asks
            of JVMs spark-submit starts before the job's session exists (`spark.driver_memory`
            and the profile's `spark.conf` JVM options).
        job_args: `--profile` and `--set` items every job gets.
        command: the command line that wrote the file (recorded in it).
    """

    dag_id: str
    schedule: str
    start_date: date
    retries: int
    retry_delay_minutes: int
    conn_id: str
    project_dir: str
    python: str
    archive: str
    ivy_dir: str
    class_archive: str
    driver_memory: str
    driver_java_options: str
    executor_java_options: str
    job_args: tuple[str, ...]
    command: str


def settings(
    cfg: Config, job_args: Sequence[str], command: str, project_dir: str, python: str
) -> DagSettings:
    """`DagSettings` from the config's `airflow` section.

    `airflow.project_dir` and `airflow.home` say where the checkout and its
    RETAIL_LAKE_HOME are on the workers; empty, they are this checkout (`project_dir`) and
    this installation (`python`, `spark.ivy_dir`, `spark.class_archive`).

    Raises:
        ConfigError: `airflow.start_date` is not a YYYY-MM-DD day, or a count is negative.
    """
    section = cfg["airflow"]
    try:
        start = date.fromisoformat(str(section["start_date"]))
    except ValueError:
        raise ConfigError(
            f"airflow.start_date: {section['start_date']!r} is not a day (YYYY-MM-DD)"
        ) from None
    for key in ("retries", "retry_delay_minutes"):
        if section[key] < 0:
            raise ConfigError(f"airflow.{key}: {section[key]} must be 0 or more")
    project = (section["project_dir"] or project_dir).rstrip("/")
    home = section["home"].rstrip("/")
    return DagSettings(
        dag_id=section["dag_id"],
        schedule=section["schedule"],
        start_date=start,
        retries=section["retries"],
        retry_delay_minutes=section["retry_delay_minutes"],
        conn_id=section["spark_conn_id"],
        project_dir=project,
        python=f"{home}/venv/bin/python" if home else python,
        archive=f"{project}/dist/retail_lake.zip",
        ivy_dir=f"{home}/ivy" if home else cfg["spark"]["ivy_dir"],
        class_archive=f"{home}/jvm/classes.jsa" if home else cfg["spark"]["class_archive"],
        driver_memory=cfg["spark"]["driver_memory"],
        driver_java_options=str(cfg["spark"]["conf"].get("spark.driver.extraJavaOptions", "")),
        executor_java_options=str(cfg["spark"]["conf"].get("spark.executor.extraJavaOptions", "")),
        job_args=tuple(job_args),
        command=command,
    )


def delta_package() -> str:
    """The Delta Maven coordinate matching the installed delta-spark."""
    return f"io.delta:delta-spark_2.13:{importlib.metadata.version('delta-spark')}"


def _q(value: object) -> str:
    """A Python literal of a string, list of strings or None, in double quotes."""
    return "None" if value is None else json.dumps(value)


def _name(step: str) -> str:
    return step if step.isidentifier() else "_" + "".join(c if c.isalnum() else "_" for c in step)


def render(steps: Sequence[str], s: DagSettings, package: str | None = None) -> str:
    """The DAG file's text for `steps` (in pipeline order) with settings `s`."""
    deps = upstream(steps)
    package = package or delta_package()
    # The JVM options a session would give the driver it starts (retail_lake.session): the
    # class archive (skipped by the JVM, not an error, where the file is missing), then the
    # profile's.
    archive = f"-XX:SharedArchiveFile={s.class_archive} {CDS_FLAGS}" if s.class_archive else ""
    driver_jvm = " ".join(filter(None, [UTC_JVM, archive, s.driver_java_options]))
    conf: Mapping[str, str] = {
        **DELTA_SQL_CONF,
        "spark.jars.ivy": s.ivy_dir,
        "spark.driver.memory": s.driver_memory,
        "spark.driver.extraJavaOptions": driver_jvm,
        "spark.executor.extraJavaOptions": " ".join(
            filter(None, [UTC_JVM, s.executor_java_options])
        ),
        # Spark's INFO lines would fill the task log; the job's own progress stays.
        "spark.log.level": "WARN",
    }
    lines = [
        '"""retail-lake\'s pipeline as an Airflow DAG: one spark-submit task per job.',
        "",
        "Generated; do not edit: change the config or the command and write it again with",
        "",
        f"    {s.command} --out FILE",
        "",
        "Each task submits `jobs/<job>.py` from PROJECT with the library as --py-files",
        "(`python -m retail_lake.package --out ARCHIVE` builds it; `retail-lake airflow-dag`",
        "does for its own checkout) through the Spark connection CONN_ID, whose host is the",
        "master (local[2], spark://host with its port, yarn, k8s://...), with the venv's",
        "spark-submit.",
        f"Time-dependent jobs ({', '.join(sorted(TIME_DEPENDENT))}) get --run-date {{{{ ds }}}}:",
        "Airflow 3's logical date, the run's own day for a daily cron schedule; backfilling a",
        "day rebuilds its Online Retail snapshot. One run at a time (one writer per lake).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import os",
        "from datetime import datetime, timedelta",
        "",
        "from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator",
        "from airflow.sdk import DAG",
        "",
        f"PROJECT = {_q(s.project_dir)}",
        f"PYTHON = {_q(s.python)}",
        f"ARCHIVE = {_q(s.archive)}",
        f"CONN_ID = {_q(s.conn_id)}",
        f"JOB_ARGS = {_q(list(s.job_args))}",
        "SUBMIT = {",
        '    "conn_id": CONN_ID,',
        '    "py_files": ARCHIVE,',
        f'    "packages": {_q(package)},',
        '    "conf": {',
        *(f"        {_q(k)}: {_q(v)}," for k, v in conf.items()),
        "    },",
        "    # spark-submit from the venv; PySpark's Python on the driver and the executors.",
        '    "env_vars": {',
        '        "PATH": os.path.dirname(PYTHON) + ":" + os.environ.get("PATH", "/usr/bin:/bin"),',
        '        "PYSPARK_PYTHON": PYTHON,',
        "    },",
        "}",
        "",
        "with DAG(",
        f"    dag_id={_q(s.dag_id)},",
        f"    schedule={_q(s.schedule or None)},",
        f"    start_date=datetime({s.start_date.year}, {s.start_date.month}, {s.start_date.day}),",
        "    catchup=False,",
        "    max_active_runs=1,",
        "    default_args={",
        f'        "retries": {s.retries},',
        f'        "retry_delay": timedelta(minutes={s.retry_delay_minutes}),',
        "    },",
        '    tags=["retail-lake"],',
        "    doc_md=__doc__,",
        "):",
    ]
    for step in steps:
        args = "JOB_ARGS"
        if step in TIME_DEPENDENT:
            args = f'[*JOB_ARGS, "--run-date", {_q(RUN_DATE_TEMPLATE)}]'
        lines += [
            f"    {_name(step)} = SparkSubmitOperator(",
            f"        task_id={_q(step)},",
            f"        name={_q('retail-lake ' + step)},",
            f'        application=f"{{PROJECT}}/jobs/{step}.py",',
            f"        application_args={args},",
            "        **SUBMIT,",
            "    )",
        ]
    edges = [(u, step) for step in steps for u in deps[step]]
    if edges:
        lines.append("")
    by_source: dict[str, list[str]] = {}
    for u, d in edges:
        by_source.setdefault(u, []).append(d)
    for u, downs in by_source.items():
        right = _name(downs[0]) if len(downs) == 1 else "[" + ", ".join(map(_name, downs)) + "]"
        lines.append(f"    {_name(u)} >> {right}")
    return "\n".join(lines) + "\n"


def command_line(argv: Sequence[str]) -> str:
    """`retail-lake ARGS` as a shell line, without `--out FILE` and `--no-archive` (which do
    not change the file's text): the line the generated file records.

    >>> command_line(["airflow-dag", "--out", "dags/x.py", "--profile", "cluster"])
    'retail-lake airflow-dag --profile cluster'
    """
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not (arg.startswith("--out=") or arg == "--no-archive"):
            kept.append(arg)
    return shlex.join(["retail-lake", *kept])
