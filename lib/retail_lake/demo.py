"""Deterministic demo data with the real sources' schemas, bundled with the package.

The Rossmann files may not be redistributed (see ../shared/data/rossmann/SOURCE.md), so the
demo ships generated files with the same header, quoting, ordering and quirks (closed days
with zero sales, a half-year gap for some stores, `Sept` in PromoInterval, empty
competition fields) and two structurally broken lines that ingest must quarantine.

The Starbucks store directory may not be redistributed either: the demo's store locations
are generated in Luxembourg (the bundled GeoNames sample), with the directory's header and
quoting, placed near the populated places with a chance that grows with their population.

    python -m retail_lake.demo --out lib/retail_lake/demo_data     # regenerate
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
from datetime import date, timedelta
from pathlib import Path

import numpy as np

SALES_HEADER = [
    "Store",
    "DayOfWeek",
    "Date",
    "Sales",
    "Customers",
    "Open",
    "Promo",
    "StateHoliday",
    "SchoolHoliday",
]
STORE_HEADER = [
    "Store",
    "StoreType",
    "Assortment",
    "CompetitionDistance",
    "CompetitionOpenSinceMonth",
    "CompetitionOpenSinceYear",
    "Promo2",
    "Promo2SinceWeek",
    "Promo2SinceYear",
    "PromoInterval",
]
# The days after the data whose covariates are known in advance (the competition's test.csv
# without its Id column): what the forecast job forecasts beyond the backtest.
PLAN_HEADER = ["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]
PLAN_DAYS = 42
INTERVALS = ["Jan,Apr,Jul,Oct", "Feb,May,Aug,Nov", "Mar,Jun,Sept,Dec"]
START, END = date(2013, 1, 1), date(2015, 7, 31)
GAP = (date(2014, 7, 1), date(2014, 12, 31))
# Fixed public holidays (month, day, code); Easter-like and Christmas codes as in the data.
HOLIDAYS = {(1, 1): "a", (5, 1): "a", (10, 3): "a", (12, 25): "c", (12, 26): "c"}
EASTER = {
    date(2013, 3, 29),
    date(2013, 4, 1),
    date(2014, 4, 18),
    date(2014, 4, 21),
    date(2015, 4, 3),
    date(2015, 4, 6),
}
# Two broken records (line numbers are decided when writing): too few fields, bad date.
BROKEN_LINES = ['7,5,2015-07-31,6123,640,1,1,"0"', '9,5,2015-31-07,5011,590,1,1,"0","1"']


def _gzip_bytes(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    return buf.getvalue()


def stores(n: int, rng: np.random.Generator) -> list[list[str]]:
    rows = []
    for s in range(1, n + 1):
        store_type = "abcd"[rng.integers(0, 4)]
        assortment = "ac"[rng.integers(0, 2)] if store_type != "b" else "b"
        distance = "" if s % 17 == 0 else str(int(rng.integers(2, 300)) * 10)
        if s % 3 == 0 or distance == "":
            comp_month = comp_year = ""
        else:
            comp_month, comp_year = str(rng.integers(1, 13)), str(rng.integers(2000, 2015))
        promo2 = s % 2 == 0
        rows.append(
            [
                str(s),
                store_type,
                assortment,
                distance,
                comp_month,
                comp_year,
                "1" if promo2 else "0",
                str(rng.integers(1, 50)) if promo2 else "",
                str(rng.integers(2009, 2015)) if promo2 else "",
                INTERVALS[s % 3] if promo2 else "",
            ]
        )
    return rows


def _calendar(offset: int) -> tuple[date, int, str, int, int]:
    """(day, ISO weekday, state holiday code, school holiday, promo) of START + offset days:
    promotions run on weekdays of every other week."""
    day = START + timedelta(days=offset)
    dow = day.isoweekday()
    holiday = HOLIDAYS.get((day.month, day.day), "b" if day in EASTER else "0")
    school = 1 if day.month in (7, 8) or (day.month == 12 and day.day > 22) else 0
    promo = 1 if (offset // 7) % 2 == 0 and dow <= 5 else 0
    return day, dow, holiday, school, promo


def plans(n: int, days: int = PLAN_DAYS) -> list[str]:
    """The `days` days after END for every store: open, promo and holidays, no sales.

    Store 3's first day has an empty Open field, as store 622 has in the competition's
    test.csv: cleanse quarantines it, so store 3 gets no forecast beyond the data.
    """
    first = (END - START).days + 1
    lines = []
    for offset in range(first, first + days):
        day, dow, holiday, school, promo = _calendar(offset)
        is_open = dow != 7 and holiday == "0"
        for s in range(1, n + 1):
            opened = "" if (s == 3 and offset == first) else str(int(is_open))
            lines.append(
                f'{s},{dow},{day.isoformat()},{opened},{promo if is_open else 0},"{holiday}",'
                f'"{school}"'
            )
    return lines


def sales(store_rows: list[list[str]], rng: np.random.Generator) -> list[str]:
    """Daily sales lines. A store's turnover is its level x weekday x promo x December,
    times a yearly trend of its own, a slowly drifting local factor (AR(1) on the log scale,
    half-life about 3 weeks: recent weeks say something about the next ones, as in the real
    data) and 5% day-to-day noise. A store's median by weekday and promo over its history
    misses the trend and the drift; a forecaster that reads recent weeks can beat it."""
    n = len(store_rows)
    level = rng.lognormal(8.6, 0.3, n)
    per_customer = rng.uniform(7.5, 11.0, n)
    trend = rng.uniform(-0.10, 0.15, n)  # per year
    days = (END - START).days + 1
    drift = np.zeros((n, days))
    shocks = rng.normal(0.0, 0.025, (n, days))
    for d in range(1, days):
        drift[:, d] = 0.97 * drift[:, d - 1] + shocks[:, d]
    noise = rng.normal(1.0, 0.05, (days, n))
    gap_stores = {s for s in range(1, n + 1) if s % 6 == 0}
    dow_factor = [1.15, 1.0, 0.95, 0.95, 1.05, 0.9, 0.0]
    lines = []
    for offset in range(days - 1, -1, -1):  # newest date first, as in the real file
        day, dow, holiday, school, promo = _calendar(offset)
        years = offset / 365.25
        for s in range(1, n + 1):
            if s in gap_stores and GAP[0] <= day <= GAP[1]:
                continue
            is_open = dow != 7 and holiday == "0"
            if is_open:
                season = 1.15 if day.month == 12 else 1.0
                value = level[s - 1] * dow_factor[dow - 1] * season * (1.2 if promo else 1.0)
                value *= (1 + trend[s - 1]) ** years * np.exp(drift[s - 1, offset])
                value *= noise[offset, s - 1]
                amount = max(round(value), 0)
                customers = round(amount / per_customer[s - 1])
            else:
                amount = customers = 0
            lines.append(
                f"{s},{dow},{day.isoformat()},{amount},{customers},"
                f'{1 if is_open else 0},{promo if is_open else 0},"{holiday}","{school}"'
            )
    # The broken lines go among the newest rows, where a reader looks first.
    lines.insert(5, BROKEN_LINES[0])
    lines.insert(11, BROKEN_LINES[1])
    return lines


DIRECTORY_HEADER = [
    "Brand",
    "Store Number",
    "Store Name",
    "Ownership Type",
    "Street Address",
    "City",
    "State/Province",
    "Country",
    "Postcode",
    "Phone Number",
    "Timezone",
    "Longitude",
    "Latitude",
]
OWNERSHIP = ["Company Owned", "Licensed", "Joint Venture", "Franchise"]


def store_directory(places_file: Path, n: int, rng: np.random.Generator) -> str:
    """A store directory in Luxembourg: `n` stores near the bundled places, bigger ones first.

    Each store picks a place with probability proportional to population ** 1.2 and lies a
    normally distributed 1.5 km (sd) from it; coordinates are rounded to 2 decimals as in
    the real directory.
    """
    with gzip.open(places_file, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    weights = np.array([max(int(r["population"]), 100) ** 1.2 for r in rows], dtype=float)
    picks = rng.choice(len(rows), size=n, p=weights / weights.sum())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DIRECTORY_HEADER)
    km_per_deg = 111.195
    for i, k in enumerate(picks):
        place = rows[k]
        lat = float(place["latitude"]) + rng.normal(0, 1.5) / km_per_deg
        lon = float(place["longitude"]) + rng.normal(0, 1.5) / (km_per_deg * 0.646)
        writer.writerow(
            [
                "Starbucks",
                f"{90000 + i}-{rng.integers(100000, 999999)}",
                f"Demo {place['name']} {i + 1}",
                OWNERSHIP[int(rng.choice(4, p=[0.5, 0.35, 0.1, 0.05]))],
                f"{rng.integers(1, 120)} Rue Principale",
                place["name"].upper(),
                place["admin1code"],
                "LU",
                f"L-{rng.integers(1000, 9999)}",
                f"352{rng.integers(200000, 999999)}",
                "GMT+1:00 Europe/Luxembourg",
                f"{lon:.2f}",
                f"{lat:.2f}",
            ]
        )
    return out.getvalue().rstrip("\n")


def generate(out: Path, n_stores: int = 12, seed: int = 20150731) -> list[Path]:
    """Writes rossmann/{train,store,plans}.csv.gz and the store directory under `out`; the
    same bytes per seed."""
    rng = np.random.default_rng(seed)
    store_rows = stores(n_stores, rng)
    folder = out / "rossmann"
    folder.mkdir(parents=True, exist_ok=True)
    # As in the real file: numbers bare, empty numbers bare, text (and PromoInterval) quoted.
    lines = [",".join(f'"{h}"' for h in STORE_HEADER)]
    for row in store_rows:
        *head, interval = row
        lines.append(
            ",".join(v if v.isdigit() or v == "" else f'"{v}"' for v in head) + f',"{interval}"'
        )
    store_path = folder / "store.csv.gz"
    store_path.write_bytes(_gzip_bytes("\n".join(lines) + "\n"))
    header = ",".join(f'"{h}"' for h in SALES_HEADER)
    train_path = folder / "train.csv.gz"
    train_path.write_bytes(_gzip_bytes(header + "\n" + "\n".join(sales(store_rows, rng)) + "\n"))
    plan_path = folder / "plans.csv.gz"
    plan_header = ",".join(f'"{h}"' for h in PLAN_HEADER)
    plan_path.write_bytes(_gzip_bytes(plan_header + "\n" + "\n".join(plans(n_stores)) + "\n"))
    directory = out / "starbucks_stores"
    directory.mkdir(parents=True, exist_ok=True)
    directory_path = directory / "directory_lu_demo.csv.gz"
    # The places are the bundled GeoNames sample, whatever folder is written to.
    places = Path(__file__).parent / "demo_data" / "geonames_cities" / "cities1000_lu.csv.gz"
    text = store_directory(places, 30, np.random.default_rng(seed + 1))
    directory_path.write_bytes(_gzip_bytes(text))
    return [store_path, train_path, plan_path, directory_path]


HISTORY = Path("online_retail") / "online_retail_history.csv.gz"


def online_retail_history(full_file: Path, out: Path) -> Path:
    """Writes `out`/online_retail/online_retail_history.csv.gz from the full UCI Online Retail
    file (../shared/data/online_retail/online_retail.csv.gz), the same bytes each time: the
    recommendations demo's year of history (selection in demo_data/online_retail/SOURCE.md).

    Not in the repository (3 MB of a data set that lives in ../shared/data):
    `setup_cluster.sh install` writes it beside the bundled sample.
    """
    with gzip.open(full_file, "rt", encoding="utf-8", newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    fields = list(csv.reader(lines[1:]))
    # Columns: InvoiceNo, ..., InvoiceDate (4), ..., CustomerID (6).
    first_day = {f[6] for f in fields if f[4].startswith("2010-12-01") and f[6]}
    half = {
        f[6]
        for f in fields
        if f[6] and int(hashlib.sha256(f[6].encode()).hexdigest(), 16) % 1000 < 500
    }
    keep = first_day | half
    body = [
        line
        for line, f in zip(lines[1:], fields, strict=True)
        if f[6] in keep and not f[4].startswith("2010-12-01") and not f[0].startswith("A56318")
    ]
    path = out / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress((lines[0] + "".join(body)).encode(), compresslevel=9, mtime=0))
    return path


FASHION = "fashion_mnist"
# The demo's product images: the first this many training and test images of Fashion-MNIST
# (MIT licence). Enough for the CNN to beat its baselines in a short run (bench/RESULTS.md).
FASHION_TRAIN, FASHION_TEST = 4000, 1000


def _idx_head(data: bytes, n: int) -> bytes:
    """The first `n` records of an IDX file (its header rewritten to say `n`)."""
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    if n > shape[0]:
        raise ValueError(f"the IDX file holds {shape[0]} records, fewer than {n}")
    record = int(np.prod(shape[1:], dtype=np.int64)) if dims > 1 else 1
    head = 4 + 4 * dims
    return data[:4] + n.to_bytes(4, "big") + data[8:head] + data[head : head + n * record]


def fashion_sample(
    full_folder: Path, out: Path, train: int = FASHION_TRAIN, test: int = FASHION_TEST
) -> list[Path]:
    """Writes `out`/fashion_mnist/ with the first `train` training and `test` test images and
    their labels from the full Fashion-MNIST files in `full_folder` (gzip -9, no timestamp:
    the same bytes each time)."""
    folder = out / FASHION
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for prefix, n in (("train", train), ("t10k", test)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte.gz"
            data = gzip.decompress((full_folder / name).read_bytes())
            path = folder / name
            path.write_bytes(gzip.compress(_idx_head(data, n), compresslevel=9, mtime=0))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="regenerate the bundled demo data")
    parser.add_argument("--out", default=str(Path(__file__).parent / "demo_data"))
    parser.add_argument("--stores", type=int, default=12)
    parser.add_argument(
        "--history-from",
        metavar="ONLINE_RETAIL_CSV_GZ",
        help="write only the Online Retail history, from the full file "
        "(../shared/data/online_retail/online_retail.csv.gz)",
    )
    parser.add_argument(
        "--fashion-from",
        metavar="FASHION_MNIST_FOLDER",
        help="write only the Fashion-MNIST sample, from the full files "
        "(../shared/data/fashion_mnist)",
    )
    args = parser.parse_args(argv)
    if args.fashion_from:
        written = fashion_sample(Path(args.fashion_from), Path(args.out))
    elif args.history_from:
        written = [online_retail_history(Path(args.history_from), Path(args.out))]
    else:
        written = generate(Path(args.out), args.stores)
    for p in written:
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
