"""ALS variants on the recommend job's validation (or test) period: the recency half-life and
(rank, reg_param, alpha) combinations, MAP@k / NDCG@k / coverage for each.

Choose settings on `--period validation` (the 30 days before the test period, as the job's
search does); `--period test` reports the held-out numbers of settings already chosen.

    python bench/tune_recommend.py --root <lake with silver Online Retail and the gold indices> \
        --period validation --half-life 0 30 90 180 --params 48,0.1,5 48,0.1,1 64,0.3,2
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import timedelta

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.recommend import features as feats
from retail_lake.recommend.als import Params, RecommendConfig, evaluate_als, fit, split_at
from retail_lake.session import build_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--period", choices=("validation", "test"), default="validation")
    parser.add_argument("--half-life", type=float, nargs="+", default=[0.0, 30.0])
    parser.add_argument("--params", nargs="+", default=["48,0.1,5"], help="rank,reg_param,alpha")
    parser.add_argument("--max-iter", type=int, default=None)
    args = parser.parse_args()
    cfg = load_config("test", [f"paths.root={args.root}"])
    spark = build_session(cfg)
    lake = Lake(spark, args.root)
    sales, returns = lake.read("silver.transactions"), lake.read("silver.returns")
    cidx, pidx = lake.read("gold.customer_index"), lake.read("gold.product_index")
    base = RecommendConfig.from_config(cfg["recommend"])
    last = feats.snapshot_day(sales, base.as_of or None)
    test_start = last - timedelta(days=base.test_days - 1)
    if args.period == "validation":
        start, end = test_start - timedelta(days=base.validation_days), test_start
        end -= timedelta(days=1)
    else:
        start, end = test_start, last
    print(f"period {args.period}: {start}..{end}", flush=True)
    for half_life in args.half_life:
        conf = dataclasses.replace(
            base, half_life_days=half_life, max_iter=args.max_iter or base.max_iter
        )
        split = split_at(sales, returns, cidx, pidx, start, end, conf).cache()
        for spec in args.params:
            rank, reg, alpha = spec.split(",")
            params = Params(int(rank), float(reg), float(alpha))
            started = time.monotonic()
            m = evaluate_als(fit(split.train, params, conf), split, conf)
            print(
                f"half_life={half_life:g} {params.label()}: MAP@{conf.k} {m['map']:.4f} "
                f"NDCG@{conf.k} {m['ndcg']:.4f} coverage {m['coverage']:.3f} "
                f"users {m['users']:.0f} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
        split.unpersist()


if __name__ == "__main__":
    main()
