"""features + recommend on real data: the demo lake's Online Retail is the real data of one day
plus the year of a fixed half of the customers (2,232 customers, 229k lines; SOURCE.md). The
whole file's numbers (4,334 customers) are in bench/RESULTS.md.

The published ALS model beats every popularity baseline, computed in the same run; the
recommendations never repeat a past purchase and reach every customer with sales; a re-run
changes nothing (test_pipeline checks that for every table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from retail_lake.lake import Lake
from retail_lake.runner import job_runs

from .conftest import copy_lake

pytestmark = pytest.mark.slow

BASELINES = ("global_popularity", "recent_popularity", "country_popularity")


def _recommend_run(spark, cfg):
    runs = job_runs(spark, cfg).where(
        (F.col("job") == "recommend") & (F.col("status") == "succeeded")
    )
    return runs.orderBy("started_at").first()


def test_published_model_beats_every_baseline(spark, demo_lake):
    cfg = demo_lake.cfg
    lake = Lake(spark, cfg.root)
    run = _recommend_run(spark, cfg)
    rows = lake.read("ops.model_metrics").where(F.col("run_id") == run["run_id"]).collect()
    metrics = {(r["split"], r["metric"]): r["value"] for r in rows}
    k = cfg.get("recommend.k")
    for baseline in BASELINES:
        for metric in (f"map@{k}", f"ndcg@{k}"):
            assert metrics[("test", metric)] > metrics[(f"baseline:{baseline}", metric)], (
                baseline,
                metric,
            )
    # Customers with history before and new purchases in the last 30 days.
    assert metrics[("test", "users")] > 500
    # The search tried each configured combination on the validation period.
    searched = {s for s, _ in metrics if s.startswith("validation[")}
    grid = cfg["recommend"]["als"]["search"]
    assert len(searched) == len(grid["rank"]) * len(grid["reg_param"]) * len(grid["alpha"])
    chosen = {m: v for (s, m), v in metrics.items() if s == "chosen"}
    assert chosen["alpha"] in grid["alpha"] and chosen["rank"] in grid["rank"]
    versions = {r["model_version"] for r in rows}
    assert len(versions) == 1 and None not in versions
    # The rows carry the published version and the versions the run read.
    recs = lake.read("gold.recommendations")
    lineage = (
        recs.select("model_name", "model_version", F.to_json("input_versions").alias("v"))
        .distinct()
        .collect()
    )
    assert len(lineage) == 1
    assert lineage[0]["model_name"] == "product_recommender"
    assert lineage[0]["model_version"] == versions.pop()
    assert json.loads(lineage[0]["v"]) == run["versions_read"]


def test_registered_model_loads_and_names_what_serving_it_needs(spark, demo_lake):
    import mlflow
    import mlflow.spark
    import numpy
    import pyspark

    from retail_lake.training.tracking import setup_mlflow

    cfg = demo_lake.cfg
    run = _recommend_run(spark, cfg)
    lake = Lake(spark, cfg.root)
    rows = lake.read("ops.model_metrics").where(F.col("run_id") == run["run_id"]).collect()
    version = {r["model_version"] for r in rows}.pop()
    chosen = {r["metric"]: r["value"] for r in rows if r["split"] == "chosen"}
    setup_mlflow(cfg)
    uri = f"models:/product_recommender/{version}"
    # Named at registration: exactly these three (MLflow's inference, which reloads the
    # model in a child process, also lists scipy).
    requirements = (
        (Path(mlflow.artifacts.download_artifacts(uri)) / "requirements.txt").read_text().split()
    )
    assert [r.split("==")[0] for r in requirements] == ["mlflow", "numpy", "pyspark"]
    assert {f"pyspark=={pyspark.__version__}", f"numpy=={numpy.__version__}"} <= set(requirements)
    model = mlflow.spark.load_model(uri).stages[-1]  # MLflow wraps it in a PipelineModel
    assert model.rank == int(chosen["rank"])
    # One factor row per product the final model was trained on (every interaction).
    trained = lake.read("gold.interactions").select("product_idx").distinct()
    assert model.itemFactors.count() == trained.count()


def test_recommendations_skip_past_purchases_and_reach_every_customer(spark, demo_lake):
    cfg = demo_lake.cfg
    lake = Lake(spark, cfg.root)
    recs = lake.read("gold.recommendations")
    past = lake.read("gold.interactions").select("customer_token", "stock_code")
    assert recs.join(past, on=["customer_token", "stock_code"], how="inner").count() == 0
    with_sales = lake.read("silver.customers").where(F.col("sales_lines") > 0)
    assert with_sales.join(recs, on="customer_token", how="left_anti").count() == 0
    top_n = cfg.get("recommend.top_n")
    sizes = recs.groupBy("customer_token", "source").agg(
        F.count(F.lit(1)).alias("n"), F.max("rank").alias("last")
    )
    assert sizes.where((F.col("n") != top_n) | (F.col("last") != top_n)).count() == 0
    # Everyone who bought a product gets the model's list; the others (postage or returns
    # only) the popularity list.
    by_source = {r["source"]: r["count"] for r in sizes.groupBy("source").count().collect()}
    buyers = lake.read("gold.customer_index").count()
    assert by_source == {
        "als": buyers,
        "popularity": lake.read("silver.customers").count() - buyers,
    }

    similar = lake.read("gold.similar_products")
    assert similar.where(F.col("stock_code") == F.col("similar_stock_code")).count() == 0
    assert (
        similar.select("stock_code").distinct().count() == lake.read("gold.product_index").count()
    )
    assert similar.where(~F.col("similarity").between(-1.0001, 1.0001)).count() == 0


def test_gold_features_agree_with_silver(spark, demo_lake):
    lake = Lake(spark, demo_lake.root)
    sales = lake.read("silver.transactions").where("is_product and customer_token is not null")
    pairs = sales.groupBy("customer_token", "stock_code").agg(
        F.countDistinct("invoice_no").alias("invoices"), F.sum("quantity").alias("units")
    )
    inter = lake.read("gold.interactions")
    assert inter.count() == pairs.count()
    joined = inter.join(pairs, on=["customer_token", "stock_code"])
    assert (
        joined.where(
            (inter["invoices"] != pairs["invoices"]) | (inter["units"] != pairs["units"])
        ).count()
        == 0
    )
    index = lake.read("gold.customer_index")
    buyers = sales.select("customer_token").distinct().count()
    assert index.count() == buyers
    assert index.agg(F.min("customer_idx"), F.max("customer_idx")).first() == (0, buyers - 1)
    profiles = lake.read("gold.customer_features")
    assert profiles.count() == buyers
    assert (
        profiles.where(F.col("segment").isNull() | (F.col("segment_method") != "rfm")).count() == 0
    )


def test_a_model_that_loses_to_a_baseline_is_not_published(spark, demo_lake, tmp_path):
    """A crippled search (rank 1, one iteration, a huge regularisation: factors near zero)
    cannot beat popularity: the job fails naming the baseline, records the numbers with no
    model version, registers nothing and leaves gold.recommendations as it was."""
    from retail_lake.config import load_config
    from retail_lake.recommend.job import run as recommend
    from retail_lake.registry import run_job
    from retail_lake.runner import JobError

    cfg = load_config(
        "test",
        [
            f"paths.root={copy_lake(demo_lake.root, tmp_path / 'lake')}",
            "recommend.als.search.rank=[1]",
            "recommend.als.search.reg_param=[1000.0]",
            "recommend.als.search.alpha=[1.0]",
            "recommend.als.max_iter=1",
        ],
    )
    lake = Lake(spark, cfg.root)
    before = {t: lake.version(t) for t in ("gold.recommendations", "gold.similar_products")}
    with pytest.raises(JobError, match=r"does not beat the baselines .* Not published") as err:
        run_job(spark, cfg, "recommend", recommend)
    assert "recent_popularity map" in str(err.value)
    failed = job_runs(spark, cfg).where(
        (F.col("job") == "recommend") & (F.col("status") == "failed")
    )
    run_id = failed.orderBy(F.col("started_at").desc()).first()["run_id"]
    rows = lake.read("ops.model_metrics").where(F.col("run_id") == run_id).collect()
    assert rows and {r["model_version"] for r in rows} == {None}
    assert {r["split"] for r in rows} >= {"test", "chosen", *(f"baseline:{b}" for b in BASELINES)}
    assert {t: lake.version(t) for t in before} == before
