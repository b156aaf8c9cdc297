"""The `train_forecaster` job: gold.sales_windows at a recorded version -> Petastorm -> the
LSTM on the configured backend's ranks -> a registered MLflow model, with metrics in
ops.model_metrics.

Periods, from the data's last day: test = the last `forecast.test_days` days (the horizon,
42 by default, the competition's); validation = the `forecast.validation_days` before it
(early stopping watches it); training windows end before the validation period. Store levels
(what targets are relative to) come from the training period only.

Baselines on the same test days, computed here: seasonal naive (the last observed week
repeated over the horizon) and the store's median sales by weekday and promo state before
the test period. The model must beat both on every metric in `forecast.gate_metrics`
(RMSPE by default), or it is not published and the job fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from retail_lake import champions
from retail_lake.forecasting.inputs import (
    DAY_COLUMNS,
    LOSSES,
    N_PROFILE,
    NETWORK_VERSION,
    ROW_COLUMNS,
)
from retail_lake.forecasting.score import (
    MODEL_NAME,
    error_metrics,
    interval_metrics,
    interval_offsets,
    levels,
    load_registered,
    model_rows,
    score_windows,
    state_to_bytes,
    stored_levels,
)
from retail_lake.forecasting.tables import SALES_WINDOWS, STORE_DAY_FEATURES
from retail_lake.publish_rule import Better, Decision, decide, shortfalls
from retail_lake.runner import JobContext, JobError, JobResult
from retail_lake.sources.rossmann.tables import DATE, STORE
from retail_lake.training import job as training_job

log = logging.getLogger(__name__)

METRICS = ("rmspe", "mape")


@dataclass(frozen=True)
class ForecastConfig:
    """The `forecast` section, checked."""

    test_days: int
    validation_days: int
    lookback: int
    hidden: int
    layers: int
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    weight_decay: float
    lr_schedule: str
    keep_from_epoch: int
    loss: str
    max_train_windows: int
    gate_metrics: tuple[str, ...]
    require_beat_baselines: bool

    @classmethod
    def from_config(cls, s: dict[str, Any]) -> ForecastConfig:
        """Reads `cfg["forecast"]`; a JobError for an unknown gate metric."""
        from retail_lake.training.loop import LR_SCHEDULES

        gate = tuple(s["gate_metrics"])
        unknown = [m for m in gate if m not in METRICS]
        if unknown:
            raise JobError(f"forecast.gate_metrics: unknown {unknown} (known: {list(METRICS)})")
        for key, known in (("loss", LOSSES), ("lr_schedule", LR_SCHEDULES)):
            if s[key] not in known:
                raise JobError(f"forecast.{key}: {s[key]!r} is not one of {', '.join(known)}")
        return cls(
            test_days=int(s["test_days"]),
            validation_days=int(s["validation_days"]),
            lookback=int(s["lookback_days"]),
            hidden=int(s["hidden"]),
            layers=int(s["layers"]),
            epochs=int(s["epochs"]),
            batch_size=int(s["batch_size"]),
            learning_rate=float(s["learning_rate"]),
            patience=int(s["patience"]),
            weight_decay=float(s["weight_decay"]),
            lr_schedule=str(s["lr_schedule"]),
            keep_from_epoch=int(s["keep_from_epoch"]),
            loss=str(s["loss"]),
            max_train_windows=int(s["max_train_windows"]),
            gate_metrics=gate,
            require_beat_baselines=bool(s["require_beat_baselines"]),
        )

    @property
    def shape(self) -> dict[str, int]:
        """The network's shape (lookback, horizon, hidden, layers), saved with the model."""
        return {
            "lookback": self.lookback,
            "horizon": self.test_days,
            "hidden": self.hidden,
            "layers": self.layers,
        }


def periods(last_day: date, conf: ForecastConfig) -> tuple[date, date]:
    """(validation start, test start) for data ending on `last_day`."""
    test_start = last_day - timedelta(days=conf.test_days - 1)
    return test_start - timedelta(days=conf.validation_days), test_start


# ----------------------------------------------------------------------------- baselines
def seasonal_naive(features: DataFrame, test_start: date, test_end: date) -> DataFrame:
    """Each test day forecast with the same weekday's sales in the week before the test
    period (0 if the store was closed then, or that day is missing); 0 on closed days."""
    test = features.where(F.col(DATE).between(F.lit(test_start), F.lit(test_end)))
    offset = F.datediff(F.col(DATE), F.lit(test_start)) % 7
    source = F.date_add(F.lit(test_start - timedelta(days=7)), offset.cast("int"))
    week = features.select(STORE, F.col(DATE).alias("_source"), F.col("sales").alias("_last"))
    return (
        test.withColumn("_source", source)
        .join(week, on=[STORE, "_source"], how="left")
        .select(
            STORE,
            DATE,
            "sales",
            "open",
            F.when(F.col("open"), F.coalesce(F.col("_last"), F.lit(0)))
            .otherwise(0)
            .cast("double")
            .alias("forecast"),
        )
    )


def weekday_promo_median(features: DataFrame, test_start: date, test_end: date) -> DataFrame:
    """Each test day forecast with the store's median sales on open days with sales before
    the test period for that weekday and promo state (falling back to the weekday, then the
    store); 0 on closed days."""
    history = features.where(
        (F.col(DATE) < F.lit(test_start)) & F.col("open") & (F.col("sales") > 0)
    )
    med = lambda: F.percentile(F.col("sales"), 0.5)  # noqa: E731
    by_cell = history.groupBy(STORE, "day_of_week", "promo").agg(med().alias("_cell"))
    by_day = history.groupBy(STORE, "day_of_week").agg(med().alias("_day"))
    by_store = history.groupBy(STORE).agg(med().alias("_store"))
    test = features.where(F.col(DATE).between(F.lit(test_start), F.lit(test_end)))
    return (
        test.join(by_cell, on=[STORE, "day_of_week", "promo"], how="left")
        .join(by_day, on=[STORE, "day_of_week"], how="left")
        .join(by_store, on=STORE, how="left")
        .select(
            STORE,
            DATE,
            "sales",
            "open",
            F.when(
                F.col("open"),
                F.coalesce(F.col("_cell"), F.col("_day"), F.col("_store"), F.lit(0.0)),
            )
            .otherwise(0.0)
            .cast("double")
            .alias("forecast"),
        )
    )


BASELINES = {
    "seasonal_naive": seasonal_naive,
    "weekday_promo_median": weekday_promo_median,
}


def _arrays(pdf) -> dict[str, np.ndarray]:
    out = {c: np.stack(pdf[c].to_numpy()).astype(np.float32) for c in (*DAY_COLUMNS, "static")}
    out["level"] = pdf["level"].to_numpy(dtype=np.float32)
    out["customers_level"] = pdf["customers_level"].to_numpy(dtype=np.float32)
    out["profile"] = np.stack(pdf["profile"].to_numpy()).astype(np.float32)
    return out


def _capped(rows: DataFrame, cap: int, seed: int) -> DataFrame:
    if not cap:
        return rows
    key = F.xxhash64(STORE, "forecast_start", F.lit(seed))
    return rows.withColumn("_k", key).orderBy("_k").limit(cap).drop("_k")


def _champion_metrics(
    ctx: JobContext,
    current: str,
    windows: DataFrame,
    test_start: date,
    conf: ForecastConfig,
    scored: DataFrame,
    days: float,
) -> tuple[float | None, str, dict[str, float]]:
    """The champion `current` re-evaluated on the challenger's test windows, with its own
    store levels, as `forecast` scores it: (its gate metric, why not when it cannot be
    scored, its metrics). Where it judges fewer store-days than the challenger's `days` (it
    knows fewer stores), both are judged on the store-days it scores (the challenger's
    metrics on those days are added as `challenger_<metric>`)."""
    _, weights, prep = load_registered(ctx.cfg, current)
    theirs, ours = prep["shape"], conf.shape
    for key in ("lookback", "horizon"):
        if int(theirs[key]) != int(ours[key]):
            return None, f"its {key} is {theirs[key]} days, these windows' {ours[key]}", {}
    rows = model_rows(
        windows.where(F.col("forecast_start") == F.lit(test_start)),
        stored_levels(ctx.spark, prep["store_levels"]),
    )
    theirs_scored = score_windows(
        ctx.spark, rows, weights, f"{MODEL_NAME}:{current}", theirs, interval_offsets(prep)
    )
    theirs_scored = theirs_scored.cache()
    try:
        try:
            metrics = error_metrics(theirs_scored)
        except JobError:
            return None, "it knows none of the stores in the test windows", {}
        if metrics["days"] < days:
            common = scored.join(theirs_scored.select(STORE, DATE), [STORE, DATE], "left_semi")
            mine = error_metrics(common)
            metrics = {**metrics, **{f"challenger_{k}": v for k, v in mine.items()}}
    finally:
        theirs_scored.unpersist()
    return metrics[conf.gate_metrics[0]], "", metrics


def run(ctx: JobContext) -> JobResult:
    """Trains the LSTM forecaster on the configured backend and registers it in MLflow.

    Reads gold.sales_windows and gold.store_day_features (run features first). Registers
    the model `sales_forecaster` in MLflow and appends its test, validation, training and
    baseline metrics to ops.model_metrics. A model that loses to a baseline on
    `forecast.gate_metrics` is recorded (model version null) but not registered, and the
    job fails. When a registered version was trained on the same input versions and
    settings, nothing is trained (`training.force` retrains).

    Args:
        ctx: the run's context, given by the runner.

    Returns:
        The ops.model_metrics output, unwritten.

    Raises:
        JobError: an input is missing or empty, or the model did not beat the baselines.

    Example:
        From the command line::

            retail-lake run train_forecaster
            retail-lake run train_forecaster --set forecast.epochs=3 --set training.num_proc=2

        From Python:

        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "train_forecaster", JOBS["train_forecaster"])
        >>> writes["ops.model_metrics"].version
    """
    cfg = ctx.cfg
    conf = ForecastConfig.from_config(cfg["forecast"])
    missing = [t for t in (SALES_WINDOWS, STORE_DAY_FEATURES) if not ctx.lake.exists(t)]
    if missing:
        raise JobError(f"train_forecaster: {', '.join(missing)} missing; run features first")
    windows = ctx.read(SALES_WINDOWS)
    features = ctx.read(STORE_DAY_FEATURES)
    print_ = training_job.fingerprint(
        ctx.data_versions_read(),
        {
            "training": training_job.shaping(cfg["training"]),
            "forecast": dict(cfg["forecast"]),
            "network": NETWORK_VERSION,
        },
    )
    if training_job.already_trained(ctx, MODEL_NAME, print_):
        return JobResult(rows_read={SALES_WINDOWS: 0})

    last_day = windows.agg(F.max("forecast_end")).first()[0]
    if last_day is None:
        raise JobError(f"train_forecaster: {SALES_WINDOWS} is empty: run features first")
    val_start, test_start = periods(last_day, conf)
    store_levels = levels(features, val_start).cache()
    rows = model_rows(windows, store_levels)
    train_rows = _capped(
        rows.where(F.col("forecast_end") < F.lit(val_start)),
        conf.max_train_windows,
        int(cfg.get("training.seed")),
    )
    val_pdf = rows.where(F.col("forecast_start") == F.lit(val_start)).toPandas()
    if val_pdf.empty:
        raise JobError(
            f"train_forecaster: no window forecasts the validation period from {val_start}: "
            f"forecast.validation_days ({conf.validation_days}) must be a multiple of "
            f"forecast.window_stride, and stores need {conf.lookback} days before it"
        )
    from retail_lake.forecasting.network import ForecastTask

    task = ForecastTask(conf.lookback, conf.test_days, conf.hidden, conf.layers, conf.loss)
    n_days = conf.lookback + conf.test_days
    trained = training_job.train(
        ctx,
        MODEL_NAME,
        task,
        train_rows.select(*DAY_COLUMNS, *ROW_COLUMNS),
        _arrays(val_pdf),
        row_bytes=4 * (len(DAY_COLUMNS) * n_days + 12 + N_PROFILE),
        hyper={
            "epochs": conf.epochs,
            "batch_size": conf.batch_size,
            "learning_rate": conf.learning_rate,
            "patience": conf.patience,
            "weight_decay": conf.weight_decay,
            "lr_schedule": conf.lr_schedule,
            "keep_from": conf.keep_from_epoch,
        },
        print_=print_,
    )
    weights = state_to_bytes(trained.state)
    from retail_lake.forecasting.network import calibration, prepare

    net = training_job.network_from(task, trained.state)
    offsets = calibration(net, prepare(_arrays(val_pdf), conf.lookback, conf.test_days))

    test_rows = rows.where(F.col("forecast_start") == F.lit(test_start))
    key = f"{MODEL_NAME}:{ctx.run_id}"
    scored = score_windows(ctx.spark, test_rows, weights, key, conf.shape, offsets).cache()
    model = {**error_metrics(scored), **interval_metrics(scored)}
    # The interval as trained, before its calibration on the validation period.
    uncalibrated = interval_metrics(
        score_windows(ctx.spark, test_rows, weights, f"{key}:raw", conf.shape)
    )
    baselines = {
        name: error_metrics(fn(features, test_start, last_day)) for name, fn in BASELINES.items()
    }
    first = min(conf.keep_from_epoch, len(trained.history))
    best = min(
        (h for h in trained.history if h["epoch"] >= first), key=lambda h: h.get("val_mspe", np.inf)
    )
    table: dict[str, dict[str, float]] = {
        "test": model,
        "validation": {
            "rmspe": float(np.sqrt(best["val_mspe"])),
            "mape": best["val_mape"],
            "epoch": best["epoch"],
            **{k: best[f"val_{k}"] for k in ("below_p10", "above_p90") if f"val_{k}" in best},
            "interval_offset_p10": offsets[0],
            "interval_offset_p90": offsets[1],
        },
        "test:uncalibrated": uncalibrated,
        "train": {
            "loss": trained.history[-1]["train_loss"],
            "windows": float(trained.rows),
            "epochs": float(len(trained.history)),
            "seconds": trained.seconds,
        },
        **{f"baseline:{name}": m for name, m in baselines.items()},
    }
    for name, m in baselines.items():
        log.info(
            "[%s] test %s..%s: model RMSPE %.4f MAPE %.4f | %s RMSPE %.4f MAPE %.4f",
            ctx.run_id,
            test_start,
            last_day,
            model["rmspe"],
            model["mape"],
            name,
            m["rmspe"],
            m["mape"],
        )
    prep = {
        "test_start": test_start.isoformat(),
        "validation_start": val_start.isoformat(),
        "shape": conf.shape,
        "interval_offsets": list(offsets),
        "store_levels": {
            str(r[STORE]): [r["level"], r["customers_level"], *r["profile"]]
            for r in store_levels.collect()
        },
        "input_versions": dict(ctx.versions_read),
    }
    params = {**conf.shape, "validation_days": conf.validation_days, "test_start": str(test_start)}
    store_levels.unpersist()
    lost = shortfalls(model, baselines, {m: Better.LOWER for m in conf.gate_metrics})
    decision = decide(lost, conf.require_beat_baselines)
    if decision is Decision.REFUSE:
        scored.unpersist()
        training_job.reject(
            ctx,
            MODEL_NAME,
            print_,
            trained,
            table,
            params,
            prep,
            lost,
            f"the test period {test_start}..{last_day}",
        )
    if decision is Decision.PUBLISH_WITH_WARNING:
        log.warning(
            "[%s] publishing a forecaster that loses to a baseline: %s",
            ctx.run_id,
            training_job.describe(lost),
        )
    metric = conf.gate_metrics[0]
    verdict = champions.challenge(
        ctx,
        MODEL_NAME,
        metric,
        Better.LOWER,
        model[metric],
        lambda current: _champion_metrics(
            ctx, current, windows, test_start, conf, scored, model["days"]
        ),
        table,
    )
    scored.unpersist()
    mlflow_run, version = training_job.record(
        ctx, MODEL_NAME, print_, trained, table, params, prep, net=net, input_example=None
    )
    log.info(
        "[%s] registered %s version %s (test RMSPE %.4f, MAPE %.4f; P10..P90 covers %.1f%% of "
        "the test days)",
        ctx.run_id,
        MODEL_NAME,
        version,
        model["rmspe"],
        model["mape"],
        100 * model.get("coverage_p10_p90", float("nan")),
    )
    champions.settle(ctx, MODEL_NAME, version, verdict)
    training_job.clear_checkpoints(trained)
    return JobResult(
        outputs=[training_job.metrics_output(ctx, MODEL_NAME, version, mlflow_run, table)],
        rows_read={SALES_WINDOWS: trained.rows},
    )
