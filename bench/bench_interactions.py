"""gold.interactions: the incremental update from silver's Change Data Feed vs a rebuild.

A fresh lake gets the real silver Online Retail lines up to a cut-off day; gold.interactions is
built; then the lines of the following `--days` days are merged into silver (as a daily load
would) and gold.interactions is brought up to date twice, side by side on the same data:

- incremental (`recommend.incremental_min_pairs=0`): `retail_lake.recommend.job.
  interaction_outputs` reads the change feed, recomputes the touched (customer, product)
  pairs and merges them;
- rebuild: the same function with `recommend.as_of` set, which recomputes every pair and
  overwrites the table.

Both results are compared row for row. Needs a lake with the real silver tables (e.g. one built
by `retail-lake run ingest/cleanse --set paths.landing=../shared/data`).

    python bench/bench_interactions.py --source-root /tmp/real_lake --days 1 7 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date, timedelta

from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.recommend.als import RecommendConfig
from retail_lake.recommend.interactions import new_indices
from retail_lake.recommend.job import interaction_outputs
from retail_lake.recommend.model_tables import INTERACTIONS
from retail_lake.registry import COMPONENTS, CONTRACTS
from retail_lake.runner import JobContext
from retail_lake.session import build_session

SALES, RETURNS = "silver.transactions", "silver.returns"
COLUMNS = [
    "customer_token",
    "stock_code",
    "invoices",
    "units",
    "units_returned",
    "first_purchase_at",
    "last_purchase_at",
    "preference",
]


def _indices(sales):
    seen = sales.where("customer_token is not null and is_product")
    customers = new_indices(
        None,
        seen.select("customer_token", F.col("invoice_date").alias("t")),
        "customer_token",
        "customer_idx",
        "t",
    )
    products = new_indices(
        None,
        seen.select("stock_code", F.col("invoice_date").alias("t")),
        "stock_code",
        "product_idx",
        "t",
    )
    return customers.cache(), products.cache()


def _update(spark, cfg, lake, run_id, as_of):
    """Brings gold.interactions up to date; returns (mode, seconds)."""
    ctx = JobContext(spark, cfg, lake, "bench", run_id, None, components=COMPONENTS)
    conf = RecommendConfig.from_config(cfg["recommend"])
    started = time.monotonic()
    sales, returns = ctx.read(SALES), ctx.read(RETURNS)
    customers, products = _indices(sales)
    outputs = interaction_outputs(ctx, sales, returns, as_of, conf, customers, products)
    for out in outputs:
        lake.write(out.df, CONTRACTS[out.table], run_id, mode=out.mode)
    return [o.mode for o in outputs], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-root", required=True, help="lake with the real silver tables")
    parser.add_argument("--days", type=int, nargs="+", default=[1, 7, 30])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    cfg0 = load_config("test", [f"paths.root={args.source_root}"])
    spark = build_session(cfg0)
    source = Lake(spark, args.source_root)
    keep = {
        t: [c.name for c in CONTRACTS[t].columns if c.name not in ("_run_id", "_content_hash")]
        for t in (SALES, RETURNS)
    }
    sales_all = source.read(SALES).select(*keep[SALES]).cache()
    returns_all = source.read(RETURNS).select(*keep[RETURNS]).cache()
    last: date = sales_all.agg(F.max("invoice_day")).first()[0]
    results = []
    for days in args.days:
        cut = last - timedelta(days=days)
        with tempfile.TemporaryDirectory(prefix="bench-interactions-") as root:
            inc_cfg = load_config(
                "test", [f"paths.root={root}/inc", "recommend.incremental_min_pairs=0"]
            )
            reb_cfg = load_config("test", [f"paths.root={root}/reb", f"recommend.as_of={last}"])
            lakes = [(Lake(spark, c.root), c) for c in (inc_cfg, reb_cfg)]
            for lake, _ in lakes:
                for table, df in ((SALES, sales_all), (RETURNS, returns_all)):
                    lake.write(df.where(F.col("invoice_day") <= F.lit(cut)), CONTRACTS[table], "r0")
            inc_lake, _ = lakes[0]
            reb_lake, _ = lakes[1]
            _update(spark, inc_cfg, inc_lake, "r1", last)
            _update(spark, reb_cfg, reb_lake, "r1", last)
            added = 0
            for lake, _ in lakes:
                for table, df in ((SALES, sales_all), (RETURNS, returns_all)):
                    new = df.where(F.col("invoice_day") > F.lit(cut))
                    added = new.count() if table == SALES else added
                    lake.write(new, CONTRACTS[table], "r2")
            inc_modes, inc_s = _update(spark, inc_cfg, inc_lake, "r3", last)
            reb_modes, reb_s = _update(spark, reb_cfg, reb_lake, "r3", last)
            a = inc_lake.read(INTERACTIONS).select(*COLUMNS)
            b = reb_lake.read(INTERACTIONS).select(*COLUMNS)
            equal = a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0
            row = {
                "days_added": days,
                "sales_lines_added": added,
                "pairs": b.count(),
                "incremental": {"modes": inc_modes, "seconds": round(inc_s, 1)},
                "rebuild": {"modes": reb_modes, "seconds": round(reb_s, 1)},
                "speedup": round(reb_s / inc_s, 2),
                "equal": equal,
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
