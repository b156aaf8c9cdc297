"""MLflow tracking under the lake root, and ops.model_metrics rows.

Locally the tracking store is a sqlite database and the artifacts a folder under
`<root>/mlflow`; a cluster sets `mlflow.tracking_uri` to its tracking server.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from retail_lake.config import Config
from retail_lake.quality import utc_now

log = logging.getLogger(__name__)


def setup_mlflow(cfg: Config) -> str:
    """Points MLflow at the configured store; returns the experiment id."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = cfg.get("mlflow.tracking_uri")
    artifact_location = None
    if not uri:
        if "://" in cfg.root:
            raise ValueError(
                f"mlflow.tracking_uri must be set when paths.root is a URI ({cfg.root})"
            )
        folder = Path(cfg.root) / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        artifact_location = (folder / "artifacts").as_uri()
        db = folder / "mlflow.db"
        if not db.exists():
            _new_store(db, artifact_location)
        uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = cfg.get("mlflow.experiment")
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
    return experiment.experiment_id


# An empty tracking database this process made once: MLflow's schema migrations take 2-5 s
# for every new database, a copy of a migrated one a few milliseconds.
_TEMPLATE: Path | None = None


def _new_store(db: Path, artifact_location: str) -> None:
    """Makes the lake's tracking database as a copy of an empty migrated one (made once per
    process), its default experiment's artifacts under `artifact_location`. Never replaces a
    database another process made first (a hard link fails on an existing name); where the
    copy cannot be made, MLflow makes the database itself on first use."""
    global _TEMPLATE
    if _TEMPLATE is None or not _TEMPLATE.exists():
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        folder = Path(tempfile.mkdtemp(prefix="retail-lake-mlflow-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "empty.db"
        chatty = logging.getLogger("mlflow.store.db.utils")  # "Creating initial ... tables"
        level = chatty.level
        chatty.setLevel(logging.WARNING)
        try:
            store = SqlAlchemyStore(f"sqlite:///{template}", (folder / "artifacts").as_uri())
            store.engine.dispose()
        finally:
            chatty.setLevel(level)
        _TEMPLATE = template
    part = db.with_name(f".{db.name}.{os.getpid()}.new")
    try:
        shutil.copyfile(_TEMPLATE, part)
        with contextlib.closing(sqlite3.connect(part)) as connection, connection:
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (f"{artifact_location}/0",),
            )
        os.link(part, db)
    except FileExistsError:
        pass  # another process made it first: theirs is the lake's
    except OSError as exc:
        log.debug("tracking database not copied (%s): MLflow makes it", exc)
    finally:
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def quiet_registration() -> Iterator[None]:
    """MLflow prints its registrations ("Successfully registered model ...", "Created
    version ...") straight to stderr; inside this block they go to this module's debug log
    (the job logs the version it registered)."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            yield
    finally:
        for line in printed.getvalue().splitlines():
            if line.strip():
                log.debug("mlflow: %s", line)


def metric_rows(
    run_id: str,
    model_name: str,
    model_version: str | None,
    mlflow_run_id: str | None,
    metrics: Mapping[str, Mapping[str, float]],
    input_versions: Mapping[str, int],
) -> list[dict[str, Any]]:
    """ops.model_metrics rows from {split: {metric: value}}."""
    at = utc_now()
    return [
        {
            "run_id": run_id,
            "model_name": model_name,
            "model_version": model_version,
            "mlflow_run_id": mlflow_run_id,
            "split": split,
            "metric": metric,
            "value": float(value),
            "input_versions": dict(input_versions),
            "recorded_at": at,
        }
        for split, values in metrics.items()
        for metric, value in values.items()
    ]


def registered_with(cfg: Config, model_name: str, fingerprint: str) -> str | None:
    """The registered version of `model_name` whose run carries this fingerprint tag (the
    input versions and settings it was trained with), if any."""
    from mlflow import MlflowClient

    setup_mlflow(cfg)
    client = MlflowClient()
    for mv in client.search_model_versions(f"name='{model_name}'"):
        if client.get_run(mv.run_id).data.tags.get("retail_lake.fingerprint") == fingerprint:
            return str(mv.version)
    return None


def load_registered(
    cfg: Config, model_name: str, trained_by: str, version: str | None = None
) -> tuple[str, bytes, dict[str, Any]]:
    """(version, weights, preprocessing) of a registered torch model (latest by default; the
    scorers ask for the champion, `retail_lake.champions.serving`).

    weights: the network's state dict as `torch.save` bytes (on the CPU), small enough to
    broadcast to the scoring workers; preprocessing: the run's `preprocessing.json`.

    Raises:
        JobError: no version of `model_name` is registered (run `trained_by` first).
    """
    import io
    import json

    import mlflow
    import torch
    from mlflow import MlflowClient

    from retail_lake.runner import JobError

    setup_mlflow(cfg)
    client = MlflowClient()
    if version is None:
        versions = client.search_model_versions(f"name='{model_name}'")
        if not versions:
            raise JobError(f"no registered {model_name} model: run {trained_by} first")
        version = str(max(int(v.version) for v in versions))
    mv = client.get_model_version(model_name, version)
    net = mlflow.pytorch.load_model(f"models:/{model_name}/{version}", map_location="cpu")
    prep_path = mlflow.artifacts.download_artifacts(
        run_id=mv.run_id, artifact_path="preprocessing.json"
    )
    with open(prep_path, encoding="utf-8") as fh:
        prep = json.load(fh)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return str(version), buf.getvalue(), prep
