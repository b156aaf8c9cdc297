"""The LSTM forecaster at full size, and the training machinery's costs.

Parts (each prints one JSON line per measurement):

- `prepare`: a lake with the real Rossmann files (all 1,115 stores): ingest, cleanse,
  features (gold.store_day_features and gold.sales_windows). Skipped when the root already
  has gold.sales_windows.
- `loader`: Petastorm's torch loader vs an in-memory tensor DataLoader over the same training
  windows (the same rows, batch size, one pass), in one process: rows per second and the ratio.
- `ranks`: the same training (the shared loop, Horovod) on 1 rank and on 2 ranks over the same
  windows and epochs: seconds per epoch and the ratio.
- `full`: the `train_forecaster` job at full size (the configured epochs and early stopping),
  then `forecast`: test RMSPE / MAPE against both baselines, epochs, training time.

    python bench/bench_forecaster.py --root /tmp/rossmann_lake --part prepare loader ranks full
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.registry import run_job
from retail_lake.session import build_session

REPO = Path(__file__).resolve().parents[1]


def emit(**kw) -> None:
    print(json.dumps(kw, default=str), flush=True)


def prepare(spark, cfg) -> None:
    from retail_lake import cleanse, features, ingest

    lake = Lake(spark, cfg.root)
    if lake.exists("gold.sales_windows"):
        emit(part="prepare", skipped=True, windows=lake.read("gold.sales_windows").count())
        return
    started = time.monotonic()
    for name, fn in (("ingest", ingest.run), ("cleanse", cleanse.run), ("features", features.run)):
        run_job(spark, cfg, name, fn)
    emit(
        part="prepare",
        seconds=round(time.monotonic() - started, 1),
        days=lake.read("gold.store_day_features").count(),
        windows=lake.read("gold.sales_windows").count(),
    )


def _training_rows(spark, cfg, limit: int):
    from retail_lake.forecasting.network import DAY_COLUMNS, ROW_COLUMNS
    from retail_lake.forecasting.score import levels, model_rows
    from retail_lake.forecasting.train import ForecastConfig, periods

    lake = Lake(spark, cfg.root)
    conf = ForecastConfig.from_config(cfg["forecast"])
    windows = lake.read("gold.sales_windows")
    last = windows.agg(F.max("forecast_end")).first()[0]
    val_start, _ = periods(last, conf)
    rows = model_rows(windows, levels(lake.read("gold.store_day_features"), val_start))
    rows = rows.where(F.col("forecast_end") < F.lit(val_start)).select(*DAY_COLUMNS, *ROW_COLUMNS)
    if limit:
        rows = rows.limit(limit)
    return rows.cache(), conf


def loader(spark, cfg, limit: int, batch: int) -> None:
    import torch

    from retail_lake.forecasting.network import DAY_COLUMNS
    from retail_lake.training.data import make_converter

    rows, conf = _training_rows(spark, cfg, limit)
    n = rows.count()
    n_days = conf.lookback + conf.test_days
    converter, _ = make_converter(
        spark, rows, 2, f"{cfg.root}/petastorm_cache", row_bytes=4 * (10 * n_days + 12)
    )
    try:
        started = time.monotonic()
        seen = 0
        with converter.make_torch_dataloader(batch_size=batch, num_epochs=1, workers_count=1) as dl:
            for b in dl:
                seen += len(b["level"])
        petastorm_s = time.monotonic() - started
    finally:
        converter.delete()
    pdf = rows.toPandas()
    tensors = {c: torch.as_tensor(np.stack(pdf[c].to_numpy())) for c in (*DAY_COLUMNS, "static")}
    tensors["level"] = torch.as_tensor(pdf["level"].to_numpy())
    names = list(tensors)
    dataset = torch.utils.data.TensorDataset(*[tensors[k] for k in names])
    started = time.monotonic()
    seen_mem = 0
    for b in torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True):
        seen_mem += len(b[0])
    memory_s = time.monotonic() - started
    emit(
        part="loader",
        rows=n,
        petastorm_rows=seen,
        memory_rows=seen_mem,
        petastorm_rows_per_s=round(seen / petastorm_s),
        memory_rows_per_s=round(seen_mem / memory_s),
        memory_over_petastorm=round((seen_mem / memory_s) / (seen / petastorm_s), 2),
    )
    rows.unpersist()


def ranks(spark, cfg, limit: int, epochs: int) -> None:
    from retail_lake.forecasting.network import ForecastTask
    from retail_lake.training.data import make_converter, steps_per_epoch
    from retail_lake.training.launcher import launch
    from retail_lake.training.loop import LoopParams

    rows, conf = _training_rows(spark, cfg, limit)
    n_days = conf.lookback + conf.test_days
    task = ForecastTask(conf.lookback, conf.test_days, conf.hidden, conf.layers)
    out = {}
    for num_proc in (1, 2):
        converter, n = make_converter(
            spark, rows, num_proc, f"{cfg.root}/petastorm_cache", row_bytes=4 * (10 * n_days + 12)
        )
        params = LoopParams(
            epochs=epochs,
            steps=steps_per_epoch(n, conf.batch_size, num_proc),
            batch_size=conf.batch_size,
            learning_rate=conf.learning_rate,
        )
        try:
            started = time.monotonic()
            chief, _ = launch("horovod", task, converter, {}, params, num_proc)
            wall = time.monotonic() - started
        finally:
            converter.delete()
        rate = float(np.median([h["samples_per_s"] for h in chief["history"]]))
        out[num_proc] = {"wall_s": wall, "samples_per_s": rate, "epoch_s": n / rate}
        emit(part="ranks", num_proc=num_proc, rows=n, epochs=epochs, **out[num_proc])
    emit(
        part="ranks",
        epoch_time_1_over_2=round(out[1]["epoch_s"] / out[2]["epoch_s"], 2),
        wall_1_over_2=round(out[1]["wall_s"] / out[2]["wall_s"], 2),
    )
    rows.unpersist()


def full(spark, cfg) -> None:
    from retail_lake.forecasting import score, train

    started = time.monotonic()
    ctx, _ = run_job(spark, cfg, "train_forecaster", train.run)
    train_s = time.monotonic() - started
    run_job(spark, cfg, "forecast", score.run)
    metrics = {
        f"{r['split']}.{r['metric']}": round(r["value"], 4)
        for r in Lake(spark, cfg.root)
        .read("ops.model_metrics")
        .where(F.col("run_id") == ctx.run_id)
        .collect()
    }
    emit(part="full", job_seconds=round(train_s, 1), **metrics)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="lake root (created when missing)")
    ap.add_argument("--landing", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--part", nargs="+", default=["prepare", "loader", "ranks", "full"])
    ap.add_argument("--profile", default="local")
    ap.add_argument("--limit", type=int, default=20000, help="windows for loader/ranks")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="epochs for the ranks part")
    ap.add_argument("--set", action="append", default=[], help="config overrides key=value")
    args = ap.parse_args(argv)
    landing = Path(args.root).parent / (Path(args.root).name + "_landing")
    if "prepare" in args.part:
        landing.mkdir(parents=True, exist_ok=True)
        link = landing / "rossmann"
        if not link.exists():
            link.symlink_to(Path(args.landing, "rossmann").resolve())
    cfg = load_config(
        args.profile,
        [f"paths.root={args.root}", f"paths.landing={landing}", "training.force=true", *args.set],
    )
    spark = build_session(cfg)
    try:
        for part in args.part:
            if part == "prepare":
                prepare(spark, cfg)
            elif part == "loader":
                loader(spark, cfg, args.limit, args.batch)
            elif part == "ranks":
                ranks(spark, cfg, args.limit, args.epochs)
            elif part == "full":
                full(spark, cfg)
            else:
                raise SystemExit(f"unknown part {part!r}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
