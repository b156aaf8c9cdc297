"""Trains the product-image classifier (Horovod on Spark) from silver.

The spark-submit entry point of `retail-lake run train_image_classifier`:
both call the same library function. Run it from the checkout with the venv active, after
building the archive that ships the library (`python -m retail_lake.package --out
dist/retail_lake.zip`; `./setup_cluster.sh submit-line` prints the line for a running cluster).
Training the CNN on the cluster's executors:

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/retail_lake.zip \
      --packages io.delta:delta-spark_2.13:4.0.1 \
      --conf spark.jars.ivy=$HOME/.cache/retail-lake/ivy \
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
      jobs/train_image_classifier.py --profile cluster --set spark.master=spark://127.0.0.1:7077

Arguments: --profile P, --set key=value (repeatable), --verbose,
as for `retail-lake run train_image_classifier`.
"""

import sys

from retail_lake import cli


def main() -> int:
    """Runs `retail-lake run train_image_classifier` with this script's arguments; the exit
    status."""
    return cli.main(["run", "train_image_classifier", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
