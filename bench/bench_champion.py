"""Champion and challenger on the real Rossmann data (issue 19 part 2).

The real files are ingested and cleansed into a fresh lake, gold is built for the first
`--stores` stores, and the forecaster is trained twice: the first version becomes the
champion; the second (another seed, `training.force`) is judged against it, the champion
scored again on the same test windows. Prints ops.model_decisions and the two versions'
test metrics, then what `retail-lake models` shows.

    PYTHONPATH=lib python bench/bench_champion.py [--stores 50] [--epochs 6]
"""

from __future__ import annotations

import argparse
import time

from real_lake import landed  # bench/ is on the path of a bench run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="test")
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from retail_lake import cli
    from retail_lake.config import load_config
    from retail_lake.lake import Lake
    from retail_lake.pipeline import run_single
    from retail_lake.session import build_session

    with landed("rossmann") as lake_items:
        base = [
            *lake_items,
            f"features.max_store={args.stores}",
            f"forecast.epochs={args.epochs}",
        ]
        cfg = load_config(args.profile, base)
        spark = build_session(cfg, "bench: champion", register=False)
        seconds = {}
        for job, extra in (
            ("ingest", []),
            ("cleanse", []),
            ("features", []),
            ("train_forecaster", []),
            ("train_forecaster", ["training.force=true", "training.seed=8"]),
        ):
            started = time.monotonic()
            overrides = [*base, *extra]
            run_single(load_config(args.profile, overrides), job, overrides=overrides, spark=spark)
            seconds[f"{job}{' (again)' if extra else ''}"] = time.monotonic() - started
        lake = Lake(spark, cfg.root)
        print(
            "| run | action | version | champion before -> after | metric | challenger | "
            "champion | margin | reason |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in lake.read("ops.model_decisions").orderBy("decided_at").collect():
            champ = "" if r["champion_value"] is None else f"{r['champion_value']:.4f}"
            print(
                f"| {r['run_id']} | {r['action']} | {r['version']} | {r['champion_before']} -> "
                f"{r['champion_after']} | {r['metric']} | {r['challenger_value']:.4f} | {champ} | "
                f"{r['margin']} | {r['reason']} |"
            )
        metrics = lake.read("ops.model_metrics").where(F.col("metric") == "rmspe")
        for r in metrics.orderBy("recorded_at", "split").collect():
            print(f"{r['run_id']}  v{r['model_version']}  {r['split']:34s} rmspe {r['value']:.4f}")
        cli.main(["models", "--profile", args.profile, *[x for o in base for x in ("--set", o)]])
        print("\nseconds:", {k: round(v, 1) for k, v in seconds.items()})
        spark.stop()


if __name__ == "__main__":
    main()
