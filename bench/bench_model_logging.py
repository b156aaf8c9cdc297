"""What registering the ALS model costs: MLflow inferring its requirements against naming them.

    python bench/bench_model_logging.py --repeats 3

Fits one small ALS model (200 users x 50 items, rank 8) and, alternating in one session, logs
and registers it with `mlflow.spark.log_model` the way `recommend` did (`inferred`: MLflow
reloads the saved model in a child Python process, which starts a Spark session of its own, to
see what it imports) and the way it does now (`named`: the Spark flavour's own requirements,
`mlflow.spark.get_default_pip_requirements()`). Prints seconds per call and the recorded
requirements of each.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from retail_lake.config import load_config
from retail_lake.session import build_session
from retail_lake.training.tracking import setup_mlflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mlflow
    import mlflow.spark
    from pyspark.ml.recommendation import ALS

    with tempfile.TemporaryDirectory(prefix="bench-model-logging-") as tmp:
        cfg = load_config("test", [f"paths.root={tmp}/lake"])
        spark = build_session(cfg, "bench model logging")
        rng = random.Random(7)
        rows = [
            (u, rng.randrange(50), float(rng.randint(1, 5))) for u in range(200) for _ in range(5)
        ]
        ratings = spark.createDataFrame(rows, "user int, item int, rating double")
        model = ALS(
            rank=8,
            maxIter=5,
            implicitPrefs=True,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            seed=1,
        ).fit(ratings)
        experiment = setup_mlflow(cfg)
        named = mlflow.spark.get_default_pip_requirements()
        times: dict[str, list[float]] = {"inferred": [], "named": []}
        requirements: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for label in ("inferred", "named"):
                extra = {} if label == "inferred" else {"pip_requirements": named}
                started = time.perf_counter()
                with (
                    mlflow.start_run(experiment_id=experiment),
                    tempfile.TemporaryDirectory() as dfs,
                ):
                    info = mlflow.spark.log_model(
                        model,
                        artifact_path="model",
                        registered_model_name=f"bench_{label}",
                        dfs_tmpdir=dfs,
                        **extra,
                    )
                times[label].append(time.perf_counter() - started)
                local = mlflow.artifacts.download_artifacts(info.model_uri)
                requirements[label] = Path(local, "requirements.txt").read_text().split()
        spark.stop()
    for label, values in times.items():
        print(f"{label:9s} " + " ".join(f"{v:6.2f}" for v in values) + " s")
        print(f"          requirements: {requirements[label]}")
    ratio = (
        sorted(times["inferred"])[len(times["inferred"]) // 2]
        / sorted(times["named"])[len(times["named"]) // 2]
    )
    print(f"median inferred / named: {ratio:.1f}x")


if __name__ == "__main__":
    main()
