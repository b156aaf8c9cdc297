"""Online Retail `ingest + cleanse` (gates, MERGE and pseudonymisation included) against a bare
Spark read-CSV / write-Parquet of the same file, side by side in one Spark session.

    python bench/bench_ingest_cleanse.py                     # 1x (the real file) and 10x
    python bench/bench_ingest_cleanse.py --sizes 1 --repeats 3
    python bench/bench_ingest_cleanse.py --quick             # smoke run on a small sample
    python bench/bench_ingest_cleanse.py --sizes 10 --repeats 1 --floor

`--floor` adds a third side: the least any bronze -> silver layering on Delta costs, with
none of the project's rules (`floor` below): what the aim of issue 16 is measured against.

Sizes are multiples of the real file's 541,909 rows. 1x is the real file itself
(../shared/data/online_retail); any other size is generated (seeded, cached under the
system temp folder): whole copies of the real lines with invoice numbers, customer ids and
dates shifted per copy, so every copy keeps the real file's cancellations, exact duplicates,
guests, non-product codes and rejected lines in the same proportions, and copies never
collide. Runs alternate (bare, retail-lake, bare, ...); each retail-lake run writes a fresh
lake root. Prints the stages of each retail-lake run, then per size the medians, the ratio
retail-lake / bare, and seconds per million rows (whose growth from the smallest size to the
largest shows whether the cost is linear in rows).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib
import io
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_FILE = REPO.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
REAL_ROWS = 541_909
WORK = Path(tempfile.gettempdir()) / "retail-lake-bench"

# Shifts per copy: invoice numbers by a million (real ones are 536365..581587), customer
# ids into their own block of 10,000 (real ones are 12346..18287), dates by 54 weeks (the
# real span is 374 days, so copies do not overlap in time and keep their weekdays).
INVOICE_STEP = 1_000_000
CUSTOMER_STEP = 10_000
CUSTOMER_BASE = 12_000
WEEKS_PER_COPY = 54
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


# ----------------------------------------------------------------------------- generator
def _real_rows(source: Path) -> tuple[list[str], list[list[str]]]:
    with gzip.open(source, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def _shift_invoice(invoice: str, copy: int) -> str:
    prefix = invoice[:1] if invoice[:1].isalpha() else ""
    digits = invoice[len(prefix) :]
    if not digits.isdigit():
        return invoice  # leave a malformed value malformed
    return f"{prefix}{int(digits) + copy * INVOICE_STEP}"


def _customer_map(rows: list[list[str]], copy: int, rng: random.Random) -> dict[str, str]:
    """Each real customer id -> its id in `copy`: a seeded permutation within the copy's block."""
    ids = sorted({r[6] for r in rows if r[6].strip()})
    slots = list(range(len(ids)))
    rng.shuffle(slots)
    base = CUSTOMER_BASE + copy * CUSTOMER_STEP
    out = {}
    for raw, slot in zip(ids, slots, strict=True):
        suffix = raw[raw.index(".") :] if "." in raw else ""  # keep the float export's ".0"
        out[raw] = f"{base + slot}{suffix}"
    return out


def _copy_rows(rows: list[list[str]], copy: int, rng: random.Random) -> Iterator[list[str]]:
    if copy == 0:
        yield from rows
        return
    customers = _customer_map(rows, copy, rng)
    shift = timedelta(weeks=WEEKS_PER_COPY * copy)
    dates: dict[str, str] = {}
    for invoice, code, desc, qty, date, price, customer, country in rows:
        shifted = dates.get(date)
        if shifted is None:
            try:
                shifted = (datetime.strptime(date, DATE_FORMAT) + shift).strftime(DATE_FORMAT)
            except ValueError:
                shifted = date
            dates[date] = shifted
        yield [
            _shift_invoice(invoice, copy),
            code,
            desc,
            qty,
            shifted,
            price,
            customers.get(customer, customer),
            country,
        ]


def generate(source: Path, multiplier: float, seed: int = 7) -> Path:
    """An Online Retail-shaped gzip CSV of `multiplier` x the rows of `source` (cached).

    Copy 0 is the real rows as they are; copy k shifts invoice numbers, customer ids (a
    seeded permutation per copy) and dates; a fractional multiplier ends with the first
    rows of one more copy. Deterministic for a given source, multiplier and seed.
    """
    dest = WORK / f"online_retail_x{multiplier:g}_seed{seed}" / "online_retail.csv.gz"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    header, rows = _real_rows(source)
    target = round(multiplier * len(rows))
    rng = random.Random(seed)
    partial = dest.with_suffix(".partial")
    written = 0
    with gzip.open(partial, "wb", compresslevel=6) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        copy = 0
        while written < target:
            for row in _copy_rows(rows, copy, rng):
                if written == target:
                    break
                writer.writerow(row)
                written += 1
            copy += 1
        text.flush()
        text.detach()
    partial.rename(dest)
    return dest


# ----------------------------------------------------------------------------- timers
class Stages:
    """Seconds spent per named stage (in the order the stages first started)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        self.seconds.setdefault(name, 0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0


class Probe:
    """Wraps the runner's pieces (not their code) so each run reports where its time went.

    Installed once; `stages` and `job` (the job running, the stage prefix) are set per run.
    """

    def __init__(self) -> None:
        from retail_lake import cleanse, lake, runner

        self.stages = Stages()
        self.job = "ingest"
        # run_job looks these up as module globals at call time.
        self._wrap(runner, "_audit", lambda a: "gates (GX validation of every output)")
        self._wrap(runner, "validate", lambda a: f"  gates {a[1].name}")
        self._wrap(runner, "_publish", lambda a: "writes (all tables)")
        self._wrap(lake.Lake, "write", lambda a: f"  write {a[2].name}")
        self._wrap(lake.Lake, "_merge", lambda a: f"    of which MERGE {a[2].name}")
        self._wrap(runner, "_ops_write", lambda a: "ops.job_runs / ops.quality_results")
        self._wrap(cleanse, "_count", self._count_label)
        self.counts = 0

    def _count_label(self, args: tuple) -> str:
        # cleanse.run counts bronze, then each output, then quarantine and duplicates.
        names = ("bronze", "silver.transactions", "silver.returns", "quarantine", "duplicates")
        self.counts += 1
        name = names[self.counts - 1] if self.counts <= len(names) else f"#{self.counts}"
        return f"  conservation count {name} (persist + count)"

    def _wrap(self, owner, name: str, stage: Callable[[tuple], str]) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            with self.stages.timed(f"{self.job}: {stage(args)}"):
                return original(*args, **kwargs)

        setattr(owner, name, wrapper)


# ----------------------------------------------------------------------------- experiments
# Bench-only patches that stand in for candidate library changes, so their effect is
# measured side by side with the unchanged code (`--try`); the library itself is not edited.
TRIES = {
    "cache-typed": "persist the typed lines in retail/cleanse.py cleanse_lines",
    "cache-dedup": "persist deduplicate's kept and exact frames in cleanse_lines",
    "append-new": "Lake._merge appends when the target table is new and empty",
}


@contextmanager
def trying(names: Sequence[str], cached: list) -> Iterator[None]:
    from pyspark import StorageLevel

    from retail_lake import lake
    from retail_lake.sources.online_retail import cleanse as retail

    def keep(df):
        df.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(df)
        return df

    saved = []

    def patch(owner, name: str, make: Callable) -> None:
        original = getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, make(original))

    if "cache-typed" in names:
        patch(retail, "typed_lines", lambda f: lambda *a, **k: keep(f(*a, **k)))
    if "cache-dedup" in names:

        def dedup(f):
            def run(*a, **k):
                kept, exact, conflict = f(*a, **k)
                return keep(kept), keep(exact), conflict

            return run

        patch(retail, "deduplicate", dedup)
    if "append-new" in names:

        def merge(f):
            def run(self, rows, contract):
                if self.delta_table(contract.name).history(1).first()["version"] == 0:
                    rows.write.format("delta").mode("append").save(self.location(contract.name))
                    return self._result(contract, "append")
                return f(self, rows, contract)

            return run

        patch(lake.Lake, "_merge", merge)
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


# ----------------------------------------------------------------------------- runs
def bare(spark, source: Path, out: Path) -> float:
    t0 = time.perf_counter()
    spark.read.csv(str(source), header=True).write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - t0


def floor(spark, source: Path, root: Path) -> Stages:
    """The least a bronze -> silver layering on Delta costs, with none of the rules: Spark's
    CSV reader (text columns, the file's name; no line numbers, no broken-line quarantine)
    appended to a bronze Delta table, then bronze typed with casts (no quarantine of what
    does not parse), the customer id hashed (SHA-256, no key), exact duplicates dropped
    (a hash aggregation) and written as a silver Delta table with the Change Data Feed on;
    no gates, no conservation counts, no MERGE, no ops records."""
    from pyspark.sql import functions as F

    stages = Stages()
    bronze, silver = str(root / "bronze"), str(root / "silver")
    with stages.timed("floor: CSV -> bronze Delta append"):
        (
            spark.read.csv(str(source), header=True)
            .withColumn("_source_file", F.input_file_name())
            .withColumn("_ingested_at", F.current_timestamp())
            .write.format("delta")
            .mode("append")
            .save(bronze)
        )
    with stages.timed("floor: bronze -> typed, hashed, deduplicated silver Delta"):
        typed = (
            spark.read.format("delta")
            .load(bronze)
            .select(
                F.col("InvoiceNo").alias("invoice_no"),
                F.col("StockCode").alias("stock_code"),
                F.trim("Description").alias("description"),
                F.col("Quantity").cast("int").alias("quantity"),
                F.to_timestamp("InvoiceDate", "yyyy-MM-dd HH:mm:ss").alias("invoice_ts"),
                F.col("UnitPrice").cast("decimal(12,3)").alias("unit_price"),
                F.sha2(F.col("CustomerID"), 256).alias("customer_token"),
                F.col("Country").alias("country"),
            )
        )
        (
            typed.dropDuplicates()
            .write.format("delta")
            .option("delta.enableChangeDataFeed", "true")
            .mode("overwrite")
            .save(silver)
        )
    return stages


def retail_lake(spark, landing: Path, root: Path, probe: Probe) -> Stages:
    """Ingest then cleanse into a fresh lake root through run_job; the stages it took."""
    from retail_lake.cleanse import run as cleanse
    from retail_lake.config import load_config
    from retail_lake.ingest import run as ingest
    from retail_lake.registry import run_job

    cfg = load_config("local", [f"paths.root={root}", f"paths.landing={landing}"])

    probe.stages = stages = Stages()
    probe.counts = 0

    def timed_job(name: str, fn):
        def run(ctx):
            with stages.timed(f"{name}: job function (parse / compute, counts)"):
                return fn(ctx)

        return run

    for name, fn in (("ingest", ingest), ("cleanse", cleanse)):
        probe.job = name
        with stages.timed(f"{name}: total (run_job)"):
            run_job(spark, cfg, name, timed_job(name, fn))
    return stages


def landing_for(source: Path, label: str) -> Path:
    """A landing folder holding only `source` as online_retail/<name>."""
    landing = WORK / f"landing-{label}"
    folder = landing / "online_retail"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / source.name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(source)
    return landing


def count_lines(source: Path) -> int:
    with gzip.open(source, "rb") as fh:
        return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 24), b"")) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[1, 10],
        help="multiples of the real file's rows (1 = the real file; others generated)",
    )
    parser.add_argument(
        "--repeats", type=int, nargs="+", default=[2, 1], help="runs of each, per size"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--quick", action="store_true", help="smoke run: 0.05x and 0.1x, once")
    parser.add_argument(
        "--try",
        dest="tries",
        nargs="+",
        choices=sorted(TRIES),
        default=[],
        help="also run retail-lake with these bench-only patches, side by side",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run the rule-free bronze -> silver layering on Delta, side by side",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    if args.quick:
        args.sizes, args.repeats = [0.05, 0.1], [1]
    repeats = args.repeats + [args.repeats[-1]] * (len(args.sizes) - len(args.repeats))

    sources = {}
    for size in args.sizes:
        if size == 1:
            sources[size] = REAL_FILE
        else:
            t0 = time.perf_counter()
            sources[size] = generate(REAL_FILE, size, args.seed)
            print(f"generated {size:g}x in {time.perf_counter() - t0:.1f}s: {sources[size]}")

    from retail_lake.config import load_config
    from retail_lake.session import build_session

    WORK.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    cfg = load_config(
        "local",
        [
            f"paths.root={scratch / 'session'}",
            f"spark.master={args.master}",
            f"spark.driver_memory={args.driver_memory}",
            "spark.ui_enabled=false",
            "spark.log_level=ERROR",
        ],
    )
    spark = build_session(cfg, "bench ingest cleanse")
    print(
        f"master={args.master} driver_memory={args.driver_memory} "
        f"shuffle_partitions={cfg.get('spark.shuffle_partitions')}"
    )
    # Warm-up, untimed: JVM/JIT and Python workers, and the Great Expectations import
    # (after retail_lake.quality, which sets its environment: no analytics, no tqdm bars).
    importlib.import_module("retail_lake.quality")
    importlib.import_module("great_expectations")

    bare(spark, sources[args.sizes[0]], scratch / "warmup.parquet")

    probe = Probe()
    summary = []
    for size, n in zip(args.sizes, repeats, strict=True):
        source = sources[size]
        rows = REAL_ROWS if source == REAL_FILE else count_lines(source)
        landing = landing_for(source, f"x{size:g}")
        sides = [
            "bare", "ours", *(["tried"] if args.tries else []), *(["floor"] if args.floor else [])
        ]  # fmt: skip
        secs: dict[str, list[float]] = {side: [] for side in sides}
        for i in range(1, n + 1):
            out = scratch / f"bare-x{size:g}-{i}.parquet"
            # Alternate which side goes first.
            for side in sides if i % 2 == 1 else sides[::-1]:
                if side == "bare":
                    secs[side].append(bare(spark, source, out))
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"{size:g}x run {i}: bare {secs[side][-1]:.1f}s")
                    continue
                if side == "floor":
                    root = scratch / f"floor-x{size:g}-{i}"
                    t0 = time.perf_counter()
                    stages = floor(spark, source, root)
                    secs[side].append(time.perf_counter() - t0)
                    print(f"{size:g}x run {i}: floor {secs[side][-1]:.1f}s")
                    print_stages(stages, secs[side][-1])
                    shutil.rmtree(root, ignore_errors=True)
                    continue
                root = scratch / f"lake-x{size:g}-{i}-{side}"
                label = "retail-lake" if side == "ours" else f"retail-lake + {args.tries}"
                cached: list = []
                t0 = time.perf_counter()
                with trying(args.tries if side == "tried" else (), cached):
                    stages = retail_lake(spark, landing, root, probe)
                secs[side].append(time.perf_counter() - t0)
                for df in cached:
                    df.unpersist()
                print(f"{size:g}x run {i}: {label} {secs[side][-1]:.1f}s")
                print_stages(stages, secs[side][-1])
                shutil.rmtree(root, ignore_errors=True)
        median = {side: statistics.median(v) for side, v in secs.items()}
        summary.append((size, rows, median["bare"], median["ours"], n))
        if args.floor:
            print(
                f"{size:g}x medians: bare {median['bare']:.1f}s, floor {median['floor']:.1f}s "
                f"({median['floor'] / median['bare']:.2f}x bare), retail-lake "
                f"{median['ours']:.1f}s ({median['ours'] / median['floor']:.2f}x the floor)"
            )
        if args.tries:
            print(
                f"{size:g}x medians: retail-lake {median['ours']:.1f}s, with {args.tries} "
                f"{median['tried']:.1f}s ({median['tried'] / median['ours']:.2f}x)"
            )
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)
    print_summary(summary)


def print_stages(stages: Stages, total: float) -> None:
    for name, secs in stages.seconds.items():
        print(f"    {name:<62s} {secs:7.1f}s  {100 * secs / total:5.1f}%")


def print_summary(summary: list[tuple[float, int, float, float, int]]) -> None:
    print()
    print(
        "| size | rows | runs | bare (s) | retail-lake (s) | ratio "
        "| bare s/M rows | retail-lake s/M rows |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, rows, b, o, n in summary:
        m = rows / 1e6
        print(
            f"| {size:g}x | {rows:,} | {n} | {b:.1f} | {o:.1f} | {o / b:.2f} | "
            f"{b / m:.1f} | {o / m:.1f} |"
        )
    if len(summary) > 1:
        (s0, r0, b0, o0, _), (s1, r1, b1, o1, _) = summary[0], summary[-1]
        print(
            f"\ngrowth {s0:g}x -> {s1:g}x ({r1 / r0:.1f}x the rows): bare {b1 / b0:.2f}x the time, "
            f"retail-lake {o1 / o0:.2f}x the time; seconds per million rows: "
            f"bare {b0 / r0 * 1e6:.1f} -> {b1 / r1 * 1e6:.1f}, "
            f"retail-lake {o0 / r0 * 1e6:.1f} -> {o1 / r1 * 1e6:.1f}"
        )


if __name__ == "__main__":
    main()
