"""Batch scoring with the sales forecaster, and the `forecast` job.

The model's weights travel once as a broadcast; each Python worker builds the network once
per model version (cached in the worker process, which Spark reuses), and applies it with
`mapInPandas`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType

from retail_lake.forecasting.model import N_FEATURES, with_features
from retail_lake.forecasting.network import build_network
from retail_lake.runner import JobContext, JobError, JobResult, Output

log = logging.getLogger(__name__)

MODEL_NAME = "sales_forecaster"
FEATURES = "gold.store_day_features"
FORECASTS = "gold.sales_forecasts"
_MODELS: dict[str, Any] = {}  # per Python worker: model version -> network


def state_to_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({k: torch.as_tensor(v) for k, v in state.items()}, buf)
    return buf.getvalue()


def _network(key: str, weights: bytes):
    import torch

    if key not in _MODELS:
        net = build_network(N_FEATURES)
        net.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
        net.eval()
        _MODELS[key] = net
    return _MODELS[key]


def score(
    spark: SparkSession, rows: DataFrame, weights: bytes, global_level: float, key: str
) -> DataFrame:
    """Adds `forecast` (EUR; 0 on closed days) to rows that carry `features` and `open`."""
    shared = spark.sparkContext.broadcast(weights)
    schema = StructType([*rows.schema.fields, StructField("forecast", DoubleType(), False)])

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        torch.set_num_threads(1)
        net = _network(key, shared.value)
        for pdf in batches:
            if pdf.empty:
                continue
            x = torch.from_numpy(np.stack(pdf["features"].to_numpy()).astype(np.float32))
            with torch.no_grad():
                out = net(x).numpy().ravel().astype(np.float64)
            forecast = np.clip(np.expm1(out + global_level), 0.0, None)
            forecast[~pdf["open"].to_numpy(dtype=bool)] = 0.0
            yield pdf.assign(forecast=forecast)

    return rows.mapInPandas(predict, schema)


def error_metrics(scored: DataFrame) -> dict[str, float]:
    """RMSPE and MAPE over open days with non-zero sales (the competition's rule)."""
    judged = scored.where(F.col("open") & (F.col("sales") > 0))
    pct = (F.col("sales") - F.col("forecast")) / F.col("sales")
    row = judged.agg(
        F.sqrt(F.avg(pct * pct)).alias("rmspe"),
        F.avg(F.abs(pct)).alias("mape"),
        F.count(F.lit(1)).alias("n"),
    ).first()
    if not row["n"]:
        raise JobError("no open days with sales to evaluate on")
    return {"rmspe": float(row["rmspe"]), "mape": float(row["mape"]), "days": float(row["n"])}


def load_registered(cfg, version: str | None = None) -> tuple[str, bytes, dict[str, Any]]:
    """(version, weights, preprocessing) of the registered forecaster (latest by default)."""
    import mlflow
    from mlflow import MlflowClient

    from retail_lake.training.tracking import setup_mlflow

    setup_mlflow(cfg)
    client = MlflowClient()
    if version is None:
        versions = client.search_model_versions(f"name='{MODEL_NAME}'")
        if not versions:
            raise JobError(f"no registered {MODEL_NAME} model: run train_forecaster first")
        version = str(max(int(v.version) for v in versions))
    mv = client.get_model_version(MODEL_NAME, version)
    net = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/{version}", map_location="cpu")
    prep_path = mlflow.artifacts.download_artifacts(
        run_id=mv.run_id, artifact_path="preprocessing.json"
    )
    with open(prep_path, encoding="utf-8") as fh:
        prep = json.load(fh)
    weights = state_to_bytes({k: v.detach().cpu() for k, v in net.state_dict().items()})
    return version, weights, prep


def run(ctx: JobContext) -> JobResult:
    """The forecast job: the registered model over the backtest period -> gold.sales_forecasts."""
    version, weights, prep = load_registered(ctx.cfg)
    days = ctx.read(FEATURES)
    test_start = pd.Timestamp(prep["test_start"]).date()
    horizon = days.where(F.col("date") >= F.lit(test_start))
    levels = ctx.spark.createDataFrame(
        [(int(s), float(v)) for s, v in prep["store_levels"].items()],
        "store int, store_level double",
    )
    rows = with_features(horizon, levels, prep["global_level"])
    scored = score(ctx.spark, rows, weights, prep["global_level"], f"{MODEL_NAME}:{version}")
    # The table scored now, and (prefixed train:) the tables the model was trained on.
    inputs = {
        FEATURES: ctx.versions_read[FEATURES],
        **{f"train:{k}": int(v) for k, v in prep["input_versions"].items()},
    }
    out = scored.select(
        "store",
        "date",
        "forecast",
        F.col("sales").alias("actual"),
        F.lit(MODEL_NAME).alias("model_name"),
        F.lit(version).alias("model_version"),
        F.create_map(
            *[x for k, v in sorted(inputs.items()) for x in (F.lit(k), F.lit(v).cast("bigint"))]
        ).alias("input_versions"),
    )
    log.info(
        "forecast: model %s v%s over %s..%s",
        MODEL_NAME,
        version,
        test_start,
        test_start + timedelta(days=int(prep["test_days"]) - 1),
    )
    return JobResult(outputs=[Output(FORECASTS, out, mode="merge")])
