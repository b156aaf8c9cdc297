"""Batch scoring with the LSTM sales forecaster, and the `forecast` job.

The weights travel once as a broadcast; each Python worker builds the network once per model
version (cached in the worker process, which Spark reuses) and applies it to windows with
`mapInPandas`, one output row per store and forecast day.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from retail_lake.forecasting.inputs import (
    ASSORTMENTS,
    DAY_COLUMNS,
    N_PROFILE,
    ROW_COLUMNS,
    STORE_TYPES,
)
from retail_lake.forecasting.tables import SALES_FORECASTS, SALES_WINDOWS, STORE_DAY_FEATURES
from retail_lake.lake import local_frame
from retail_lake.runner import JobContext, JobError, JobResult, Output
from retail_lake.sources.rossmann.tables import DATE, PLAN_COLUMNS, STORE, STORE_DAY_PLANS, STORES

log = logging.getLogger(__name__)

MODEL_NAME = "sales_forecaster"
_MODELS: dict[str, Any] = {}  # per Python worker: model key -> network

SCORED = T.StructType(
    [
        T.StructField(STORE, T.IntegerType(), False),
        T.StructField(DATE, T.DateType(), False),
        T.StructField("forecast", T.DoubleType(), False),
        # The 80% interval; null from a model registered before the network had one.
        T.StructField("forecast_p10", T.DoubleType(), True),
        T.StructField("forecast_p90", T.DoubleType(), True),
        T.StructField("sales", T.IntegerType(), False),
        T.StructField("open", T.BooleanType(), False),
    ]
)


def state_to_bytes(state: Mapping[str, Any]) -> bytes:
    """A state dict (tensors or numpy arrays) as torch-saved bytes."""
    import torch

    buf = io.BytesIO()
    torch.save({k: torch.as_tensor(v) for k, v in state.items()}, buf)
    return buf.getvalue()


def levels(features: DataFrame, before: date) -> DataFrame:
    """Per store, over open days with sales before `before` (the training period): mean
    log(1 + sales) and log(1 + customers), what the network's targets are relative to; and
    the profile (`network.N_PROFILE` floats at (day_of_week - 1) * 2 + promo): the median
    log(1 + sales) for that weekday and promo state relative to the level, falling back to
    the weekday's median, then to the level (0)."""
    history = (
        features.where((F.col(DATE) < F.lit(before)) & F.col("open") & (F.col("sales") > 0))
        .withColumn("_log_sales", F.log1p("sales"))
        .withColumn("_log_customers", F.log1p("customers"))
    )
    promo = F.col("promo").cast("int") == 1

    def median(where: F.Column | None = None) -> F.Column:
        value = F.col("_log_sales")
        return F.percentile(value if where is None else F.when(where, value), 0.5)

    # One pass: per store and weekday the medians (all days, without and with promo) and the
    # sums the store's means come from; then one row per store with a map by weekday.
    by_day = history.groupBy(STORE, "day_of_week").agg(
        median().alias("day"),
        median(~promo).alias("p0"),
        median(promo).alias("p1"),
        F.sum("_log_sales").alias("_sales"),
        F.sum("_log_customers").alias("_customers"),
        F.count(F.lit(1)).alias("_n"),
    )
    per_store = by_day.groupBy(STORE).agg(
        (F.sum("_sales") / F.sum("_n")).alias("_level"),
        (F.sum("_customers") / F.sum("_n")).cast("float").alias("customers_level"),
        F.map_from_entries(
            F.collect_list(F.struct(F.col("day_of_week").cast("int"), F.struct("day", "p0", "p1")))
        ).alias("_days"),
    )
    profile = [
        F.coalesce(F.col("_days")[d][f"p{p}"], F.col("_days")[d]["day"], F.col("_level"))
        - F.col("_level")
        for d in range(1, 8)
        for p in (0, 1)
    ]
    assert len(profile) == N_PROFILE
    return per_store.select(
        STORE,
        F.col("_level").cast("float").alias("level"),
        "customers_level",
        F.array(*[c.cast("float") for c in profile]).alias("profile"),
    )


def stored_levels(spark: SparkSession, entries: Mapping[str, Any]) -> DataFrame:
    """`levels` rows from a registered model's preprocessing (`store: [level,
    customers_level, *profile]`, as `train_forecaster` records them)."""
    short = [s for s, v in entries.items() if len(v) != 2 + N_PROFILE]
    if short:
        raise JobError(
            f"the registered {MODEL_NAME} records no weekday x promo profile for store(s) "
            f"{short[:5]}: it was trained by an older version; retrain it "
            f"(retail-lake run train_forecaster --set training.force=true)"
        )
    schema = T.StructType(
        [
            T.StructField(STORE, T.IntegerType(), False),
            T.StructField("level", T.FloatType(), False),
            T.StructField("customers_level", T.FloatType(), False),
            T.StructField("profile", T.ArrayType(T.FloatType(), False), False),
        ]
    )
    rows = [
        (int(s), float(v[0]), float(v[1]), [float(x) for x in v[2:]]) for s, v in entries.items()
    ]
    return local_frame(spark, rows, schema)


def static_column() -> F.Column:
    """The store attributes as `network.N_STATIC` floats (`network.static_features`)."""
    distance = F.col("competition_distance_m")
    parts = [
        *[(F.col("store_type") == t) for t in STORE_TYPES],
        *[(F.col("assortment") == a) for a in ASSORTMENTS],
        F.coalesce(F.log1p(distance) / 10.0, F.lit(0.0)),
        distance.isNull(),
        F.col("competition_open"),
    ]
    return F.array(*[p.cast("float") for p in parts])


def model_rows(windows: DataFrame, store_levels: DataFrame) -> DataFrame:
    """Windows with what the network reads besides the day arrays (ROW_COLUMNS). Windows of
    stores without a level (no sales in the training period) are left out."""
    return windows.join(store_levels, on=STORE, how="inner").withColumn("static", static_column())


def _network(key: str, weights: bytes, hidden: int, layers: int):
    """(the network, whether it has the interval head): a model registered before the
    network had one (NETWORK_VERSION 2) scores its point forecast alone; one registered
    before the neighbours (3) is built with the inputs it was trained on (its decoder's
    width tells) and reads them without (`network.Forecaster.neighbours`)."""
    import torch

    from retail_lake.forecasting.network import build_network

    if key not in _MODELS:
        state = torch.load(io.BytesIO(weights), weights_only=True)
        decoder = state.get("decoder.weight_ih_l0")
        net = build_network(hidden, layers, *([] if decoder is None else [decoder.shape[1]]))
        loaded = net.load_state_dict(state, strict=False)
        lacking = [k for k in loaded.missing_keys if not k.startswith("spread.")]
        if lacking or loaded.unexpected_keys:
            raise ValueError(
                f"{key}: weights that do not fit the network (missing {lacking}, "
                f"unexpected {loaded.unexpected_keys})"
            )
        net.eval()
        _MODELS[key] = (net, not loaded.missing_keys)
    return _MODELS[key]


def score_windows(
    spark: SparkSession,
    rows: DataFrame,
    weights: bytes,
    key: str,
    shape: Mapping[str, int],
    offsets: tuple[float, float] = (0.0, 0.0),
) -> DataFrame:
    """Forecasts per store and day (SCORED) for windows from `model_rows`.

    shape: lookback, horizon, hidden, layers of the network. offsets: the interval's
    calibration (`network.calibration`; a registered model's `interval_offsets`). `sales` is
    the actual turnover of the forecast day (known in a backtest).
    """
    shared = spark.sparkContext.broadcast(weights)
    lookback, horizon = int(shape["lookback"]), int(shape["horizon"])
    hidden, layers = int(shape["hidden"]), int(shape["layers"])
    columns = [STORE, "forecast_start", *DAY_COLUMNS, *ROW_COLUMNS]

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        from retail_lake.forecasting.network import forecast_eur, interval_eur, prepare

        torch.set_num_threads(1)
        net, has_interval = _network(key, shared.value, hidden, layers)
        for pdf in batches:
            if pdf.empty:
                continue
            batch = {c: np.stack(pdf[c].to_numpy()).astype(np.float32) for c in DAY_COLUMNS}
            batch["static"] = np.stack(pdf["static"].to_numpy()).astype(np.float32)
            batch["level"] = pdf["level"].to_numpy(dtype=np.float32)
            batch["customers_level"] = pdf["customers_level"].to_numpy(dtype=np.float32)
            batch["profile"] = np.stack(pdf["profile"].to_numpy()).astype(np.float32)
            with torch.no_grad():
                p = prepare(batch, lookback, horizon, net.neighbours)
                if has_interval:
                    eur, low, high = (
                        x.numpy().astype(np.float64).reshape(-1)
                        for x in interval_eur(net, p, offsets)
                    )
                else:
                    eur = forecast_eur(net, p).numpy().astype(np.float64).reshape(-1)
                    low = high = pd.Series([None] * eur.size, dtype=object)
            starts = np.array([pd.Timestamp(d) for d in pdf["forecast_start"]])
            days = np.arange(horizon)
            yield pd.DataFrame(
                {
                    STORE: np.repeat(pdf[STORE].to_numpy(dtype=np.int32), horizon),
                    DATE: [(s + pd.Timedelta(days=int(j))).date() for s in starts for j in days],
                    "forecast": eur,
                    "forecast_p10": low,
                    "forecast_p90": high,
                    "sales": np.rint(np.expm1(batch["sales"][:, lookback:]))
                    .astype(np.int32)
                    .reshape(-1),
                    "open": (batch["open"][:, lookback:] > 0).reshape(-1),
                }
            )

    return rows.select(*columns).mapInPandas(predict, SCORED)


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


def interval_metrics(scored: DataFrame) -> dict[str, float]:
    """How the P10..P90 interval held on the open days with non-zero sales: the share of
    days inside it (`coverage_p10_p90`; 0.8 for a calibrated interval), below the P10 and
    above the P90, and its mean width relative to the sales. Empty for a model without the
    interval."""
    judged = scored.where(F.col("open") & (F.col("sales") > 0) & F.col("forecast_p10").isNotNull())
    sales, low, high = F.col("sales"), F.col("forecast_p10"), F.col("forecast_p90")
    row = judged.agg(
        F.avg(((low <= sales) & (sales <= high)).cast("double")).alias("coverage_p10_p90"),
        F.avg((sales < low).cast("double")).alias("below_p10"),
        F.avg((sales > high).cast("double")).alias("above_p90"),
        F.avg((high - low) / sales).alias("interval_width"),
        F.count(F.lit(1)).alias("n"),
    ).first()
    if not row["n"]:
        return {}
    return {
        k: float(row[k]) for k in ("coverage_p10_p90", "below_p10", "above_p90", "interval_width")
    }


def future_windows(
    features: DataFrame, plans: DataFrame, stores: DataFrame, start: date, spec
) -> DataFrame:
    """One window per store forecasting `start`..`start + horizon - 1`: the lookback days are
    the store's observed days before `start` (gold.store_day_features), the horizon days its
    planned covariates (silver.store_day_plans) with sales and customers unknown (0, which
    the network never reads on forecast days). A store missing any of those days, or absent
    from silver.stores, gets no window (windows never span a gap)."""
    from retail_lake.forecasting.features import store_day_features
    from retail_lake.forecasting.windows import DAY_INPUTS, windows

    end = start + timedelta(days=spec.horizon - 1)
    first = start - timedelta(days=spec.lookback)
    planned = (
        plans.where(F.col(DATE).between(F.lit(start), F.lit(end)))
        .join(stores.select(STORE), on=STORE, how="left_semi")
        .select(*PLAN_COLUMNS, F.lit(0).alias("sales"), F.lit(0).alias("customers"))
    )
    future = store_day_features(planned, stores).select(*DAY_INPUTS)
    past = features.where(F.col(DATE).between(F.lit(first), F.lit(start - timedelta(days=1))))
    days = past.select(*DAY_INPUTS).unionByName(future)
    return windows(days, spec, last_day=end).where(F.col("forecast_start") == F.lit(start))


def _lineage(inputs: Mapping[str, int]) -> F.Column:
    return F.create_map(
        *[x for k, v in sorted(inputs.items()) for x in (F.lit(k), F.lit(v).cast("bigint"))]
    )


def interval_offsets(prep: Mapping[str, Any]) -> tuple[float, float]:
    """A registered model's interval calibration (none recorded: no offsets)."""
    low, high = prep.get("interval_offsets") or (0.0, 0.0)
    return float(low), float(high)


def load_registered(cfg, version: str | None = None) -> tuple[str, bytes, dict[str, Any]]:
    """(version, weights, preprocessing) of the registered forecaster (its champion by default)."""
    from retail_lake.champions import serving
    from retail_lake.training.tracking import load_registered as load

    return load(
        cfg, MODEL_NAME, "train_forecaster", version or serving(cfg, MODEL_NAME, "train_forecaster")
    )


def run(ctx: JobContext) -> JobResult:
    """The forecast job: the registered forecaster's sales forecasts -> gold.sales_forecasts.

    Scores the `sales_forecaster` champion (`retail_lake.champions`) over the backtest period
    (reads gold.sales_windows), and over the `horizon` days after the data for the stores whose
    covariates are planned (reads silver.store_day_plans, gold.store_day_features and
    silver.stores). Merges the rows into gold.sales_forecasts on store, date and model.

    Skipped as a unit of work (`JobContext.unchanged`) when the model version, its inputs,
    the settings and the code are those of its last successful run and nobody wrote to the
    forecasts since.

    Args:
        ctx: the run's context, given by the runner.

    Returns:
        The gold.sales_forecasts output, unwritten (none when skipped).

    Raises:
        JobError: no model is registered (run train_forecaster), or gold.sales_windows is
            missing or holds no window the model can score.

    Example:
        From the command line::

            retail-lake run forecast

        From Python:

        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "forecast", JOBS["forecast"])
        >>> ctx.lake.read("gold.sales_forecasts").where("actual IS NULL").count()  # future
    """
    from retail_lake.forecasting.windows import WindowSpec

    version, weights, prep = load_registered(ctx.cfg)
    for table in (SALES_WINDOWS,):
        if not ctx.lake.exists(table):
            raise JobError(f"forecast: {table} does not exist; run features first")
    unit = "forecast"
    if ctx.unchanged(
        unit,
        (SALES_WINDOWS, STORE_DAY_FEATURES, STORE_DAY_PLANS, STORES),
        {"model_version": version},
        dated=False,
    ):
        return JobResult()
    shape = prep["shape"]
    horizon = int(shape["horizon"])
    test_start = date.fromisoformat(prep["test_start"])
    windows = ctx.read(SALES_WINDOWS).where(F.col("forecast_start") == F.lit(test_start))
    store_levels = stored_levels(ctx.spark, prep["store_levels"])
    rows = model_rows(windows, store_levels)
    if rows.limit(1).count() == 0:
        raise JobError(
            f"forecast: {SALES_WINDOWS} has no window forecasting from {test_start} for a store "
            f"the model knows; re-run features with the same forecast settings the model used"
        )
    key = f"{MODEL_NAME}:{version}"
    # The tables the model was trained on, prefixed train:.
    trained_on = {f"train:{k}": int(v) for k, v in prep["input_versions"].items()}
    offsets = interval_offsets(prep)
    scored = score_windows(ctx.spark, rows, weights, key, shape, offsets)
    out = scored.select(
        STORE,
        DATE,
        "forecast",
        "forecast_p10",
        "forecast_p90",
        F.col("sales").alias("actual"),
        F.lit(MODEL_NAME).alias("model_name"),
        F.lit(version).alias("model_version"),
        _lineage({SALES_WINDOWS: ctx.versions_read[SALES_WINDOWS], **trained_on}).alias(
            "input_versions"
        ),
    )
    log.info(
        "[%s] forecast: model %s v%s over the backtest %s..%s",
        ctx.run_id,
        MODEL_NAME,
        version,
        test_start,
        test_start + timedelta(days=horizon - 1),
    )

    # Beyond the data: the horizon after the backtest period, where covariates are planned.
    start = test_start + timedelta(days=horizon)
    if ctx.lake.exists(STORE_DAY_PLANS):
        plans = ctx.read(STORE_DAY_PLANS)
        end = start + timedelta(days=horizon - 1)
        planned = {
            r[STORE]
            for r in plans.where(F.col(DATE).between(F.lit(start), F.lit(end)))
            .select(STORE)
            .distinct()
            .collect()
        }
        if planned:
            spec = WindowSpec(lookback=int(shape["lookback"]), horizon=horizon, stride=horizon)
            future = model_rows(
                future_windows(ctx.read(STORE_DAY_FEATURES), plans, ctx.read(STORES), start, spec),
                store_levels,
            ).persist()
            covered = {r[STORE] for r in future.select(STORE).collect()}
            skipped = sorted(planned - covered)
            log.info(
                "[%s] forecast: %s..%s for %d of the %d stores with plans%s",
                ctx.run_id,
                start,
                end,
                len(covered),
                len(planned),
                (
                    f"; skipped (a planned or lookback day missing, or unknown to the model): "
                    f"{skipped[:20]}{' ...' if len(skipped) > 20 else ''}"
                    if skipped
                    else ""
                ),
            )
            if covered:
                inputs = {
                    t: ctx.versions_read[t] for t in (STORE_DAY_FEATURES, STORE_DAY_PLANS, STORES)
                }
                out = out.unionByName(
                    score_windows(ctx.spark, future, weights, key, shape, offsets).select(
                        STORE,
                        DATE,
                        "forecast",
                        "forecast_p10",
                        "forecast_p90",
                        F.lit(None).cast("int").alias("actual"),
                        F.lit(MODEL_NAME).alias("model_name"),
                        F.lit(version).alias("model_version"),
                        _lineage({**inputs, **trained_on}).alias("input_versions"),
                    )
                )
            result = JobResult(outputs=[Output(SALES_FORECASTS, out, mode="merge", unit=unit)])
            result.cached.append(future)
            return result
    log.info("[%s] forecast: no plans for %s onwards in %s", ctx.run_id, start, STORE_DAY_PLANS)
    return JobResult(outputs=[Output(SALES_FORECASTS, out, mode="merge", unit=unit)])
