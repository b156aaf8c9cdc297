"""Replays an A/B test of recommendations on the real Online Retail file (issue 19 part 3).

The whole file is ingested and cleansed into a fresh lake; features and recommend run as of
`--as-of` (default 2011-11-09, four weeks before the data ends) with the customers split
between the ALS model and the popularity control (`--shares`); evaluate_recommendations
measures what each group bought in the `--window` days after the snapshot. Prints the
results as a markdown table (for bench/RESULTS.md) and the seconds each step took.

    PYTHONPATH=lib python bench/bench_ab_replay.py [--profile test] [--as-of 2011-11-09]

Quality numbers, not timings: the test profile's two-fit ALS search keeps it to minutes.
"""

from __future__ import annotations

import argparse
import time

from real_lake import landed  # bench/ is on the path of a bench run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="test")
    parser.add_argument("--as-of", default="2011-11-09")
    parser.add_argument("--shares", default="{als: 0.5, popularity: 0.5}")
    parser.add_argument("--salt", default="replay-2011-11")
    parser.add_argument("--window", type=int, default=28)
    args = parser.parse_args()

    from retail_lake.config import load_config
    from retail_lake.lake import Lake
    from retail_lake.pipeline import run_single
    from retail_lake.session import build_session

    with landed("online_retail") as lake_items:
        overrides = [
            *lake_items,
            f"recommend.as_of={args.as_of}",
            f"recommend.ab_test.salt={args.salt}",
            f"recommend.ab_test.shares={args.shares}",
            f"recommend.ab_test.window_days={args.window}",
        ]
        cfg = load_config(args.profile, overrides)
        spark = build_session(cfg, "bench: A/B replay", register=False)
        seconds = {}
        for job in ("ingest", "cleanse", "features", "recommend", "evaluate_recommendations"):
            started = time.monotonic()
            run_single(cfg, job, overrides=overrides, spark=spark)
            seconds[job] = time.monotonic() - started
        lake = Lake(spark, cfg.root)
        assigned = lake.read("gold.recommendation_assignments").groupBy("variant").count()
        print("assigned:", {r["variant"]: r["count"] for r in assigned.collect()})
        rows = lake.read("gold.recommendation_ab_results").orderBy("metric", "variant").collect()
        first = rows[0]
        print(
            f"\nsnapshot {first['as_of_date']}, purchases {first['window_start']}.."
            f"{first['window_end']}, k = {first['k']}, salt {first['salt']}\n"
        )
        print("| metric | variant | customers | value | 95% interval | vs control | p |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            diff = "" if r["difference"] is None else f"{r['difference']:+.4f}"
            p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
            print(
                f"| {r['metric']} | {r['variant']} | {r['customers']} | {r['value']:.4f} | "
                f"{r['ci_low']:.4f}-{r['ci_high']:.4f} | {diff} | {p} |"
            )
        print("\nseconds:", {k: round(v, 1) for k, v in seconds.items()})
        spark.stop()


if __name__ == "__main__":
    main()
