"""The features job: every gold feature table whose silver inputs exist.

- gold.store_day_features and gold.sales_windows (`retail_lake.forecasting.features`) from the
  Rossmann tables;
- gold.location_candidates (`retail_lake.locations.score`) from GeoNames and the store
  directory;
- gold.customer_index, gold.product_index, gold.interactions, gold.customer_features and
  gold.product_features (`retail_lake.recommend.job`) from the Online Retail tables.

A table whose inputs were never loaded is skipped with a warning naming them; when nothing
can be built the job fails.
"""

from __future__ import annotations

from retail_lake.forecasting.features import store_day_outputs
from retail_lake.locations.score import build_candidates
from retail_lake.recommend.job import feature_outputs
from retail_lake.runner import JobContext, JobError, JobResult


def run(ctx: JobContext) -> JobResult:
    """The features job: the gold feature tables, from the silver tables that exist.

    Reads silver.store_daily_sales and silver.stores; silver.places and
    silver.store_locations; silver.transactions, silver.returns and silver.products. Writes
    gold.store_day_features and gold.sales_windows; gold.location_candidates; and
    gold.customer_index, gold.product_index, gold.interactions, gold.customer_features and
    gold.product_features. Each group is a unit of work, skipped when its inputs, settings
    and code (and, for the Online Retail group, the run date) did not change since its last
    successful run.

    Args:
        ctx: the run's context, given by the runner; its `run_date` is the Online Retail
            snapshot day when `recommend.as_of` is empty.

    Returns:
        The feature tables' outputs, unwritten.

    Raises:
        JobError: no feature table has its silver inputs (run ingest and cleanse first).

    Example:
        From the command line::

            retail-lake run features
            retail-lake run features --run-date 2011-12-09

        From Python:

        >>> from datetime import date
        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "features", JOBS["features"], date(2011, 12, 9))
        >>> sorted(writes)
    """
    cached: list = []
    outputs = store_day_outputs(ctx, cached) + build_candidates(ctx) + feature_outputs(ctx, cached)
    if not outputs and not ctx.units:  # units skipped as unchanged are not an error
        raise JobError(
            "features: nothing to build: no silver input of any feature table exists; run "
            "ingest and cleanse first"
        )
    return JobResult(outputs=outputs, cached=cached)
