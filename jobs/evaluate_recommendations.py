"""Evaluate recommendations: what each A/B variant's customers bought after the snapshot.

The spark-submit entry point of `retail-lake run evaluate_recommendations`:
both call the same library function. Run it from the checkout with the venv active, after
building the archive that ships the library (`python -m retail_lake.package --out
dist/retail_lake.zip`; `./setup_cluster.sh submit-line` prints the line for a running cluster).
Evaluating on the cluster:

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/retail_lake.zip \
      --packages io.delta:delta-spark_2.13:4.0.1 \
      --conf spark.jars.ivy=$HOME/.cache/retail-lake/ivy \
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
      jobs/evaluate_recommendations.py --profile cluster --set spark.master=spark://127.0.0.1:7077

Arguments: --profile P, --set key=value (repeatable), --verbose,
as for `retail-lake run evaluate_recommendations`.
"""

import sys

from retail_lake import cli


def main() -> int:
    """Runs `retail-lake run evaluate_recommendations` with this script's arguments; returns
    the exit status."""
    return cli.main(["run", "evaluate_recommendations", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
