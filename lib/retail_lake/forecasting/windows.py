"""Sequence windows for the LSTM forecaster, built in Spark (one pandas group per store).

A window is `lookback + horizon` consecutive calendar days of one store: the lookback days
the encoder reads, then the horizon days it forecasts. Windows never span a gap in a store's
series (Rossmann has stores with half a year missing): every day of a window is in the data.

Forecast starts are aligned to the data's last day: the last window forecasts the last
`horizon` days (the test period), and earlier ones start every `stride` days before it, so
with a stride dividing the horizon the validation period (the `horizon` days before the
test) is a window too, and training windows are those that end before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from retail_lake.forecasting.network import DAY_COLUMNS
from retail_lake.sources.rossmann.tables import DATE, STORE

EPOCH = date(1970, 1, 1)


class WindowError(ValueError):
    """Window settings that cannot work."""


@dataclass(frozen=True)
class WindowSpec:
    lookback: int = 56
    horizon: int = 42
    stride: int = 7

    def __post_init__(self) -> None:
        if self.lookback < 7:
            raise WindowError(f"forecast.lookback_days must be at least 7, got {self.lookback}")
        if self.horizon < 1 or self.stride < 1:
            raise WindowError(
                f"forecast.test_days and forecast.window_stride must be positive, got "
                f"{self.horizon} and {self.stride}"
            )

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> WindowSpec:
        return cls(
            lookback=int(section["lookback_days"]),
            horizon=int(section["test_days"]),
            stride=int(section["window_stride"]),
        )

    @property
    def days(self) -> int:
        return self.lookback + self.horizon


# The gold.store_day_features columns a window is built from.
DAY_INPUTS = (
    STORE,
    DATE,
    "sales",
    "customers",
    "open",
    "promo",
    "state_holiday",
    "school_holiday",
    "promo2_active",
    "day_of_week",
    "month",
    "day_of_month",
    "store_type",
    "assortment",
    "competition_distance_m",
    "competition_open",
)


def _values(days: DataFrame) -> DataFrame:
    """The per-day numbers a window holds (DAY_COLUMNS order), plus store attributes."""
    flag = lambda c: F.col(c).cast("float")  # noqa: E731
    return days.select(
        STORE,
        DATE,
        F.log1p("sales").cast("float").alias("sales"),
        F.log1p("customers").cast("float").alias("customers"),
        flag("open").alias("open"),
        flag("promo").alias("promo"),
        (F.col("state_holiday") != "0").cast("float").alias("state_holiday"),
        flag("school_holiday").alias("school_holiday"),
        flag("promo2_active").alias("promo2_active"),
        F.col("day_of_week").cast("float").alias("day_of_week"),
        F.col("month").cast("float").alias("month"),
        F.col("day_of_month").cast("float").alias("day_of_month"),
        "store_type",
        "assortment",
        "competition_distance_m",
        "competition_open",
    )


def schema() -> T.StructType:
    return T.StructType(
        [
            T.StructField(STORE, T.IntegerType(), False),
            T.StructField("forecast_start", T.DateType(), False),
            T.StructField("forecast_end", T.DateType(), False),
            T.StructField("lookback_start", T.DateType(), False),
            *[T.StructField(c, T.ArrayType(T.FloatType(), False), False) for c in DAY_COLUMNS],
            T.StructField("store_type", T.StringType(), False),
            T.StructField("assortment", T.StringType(), False),
            T.StructField("competition_distance_m", T.DoubleType(), True),
            T.StructField("competition_open", T.BooleanType(), False),
        ]
    )


def window_starts(day_numbers: np.ndarray, last_day: int, spec: WindowSpec) -> list[int]:
    """Forecast starts (day numbers) of the complete windows in one store's sorted days."""
    if not len(day_numbers):
        return []
    present = set(int(d) for d in day_numbers)
    first = int(day_numbers[0])
    position = {int(d): i for i, d in enumerate(day_numbers)}
    out = []
    start = last_day - spec.horizon + 1
    while start - spec.lookback >= first:
        lo, hi = start - spec.lookback, start + spec.horizon - 1
        # Days are unique and sorted: both ends present and days-1 positions apart means
        # every day between is present.
        if lo in present and hi in present and position[hi] - position[lo] == spec.days - 1:
            out.append(start)
        start -= spec.stride
    return sorted(out)


def windows(days: DataFrame, spec: WindowSpec, last_day: date | None = None) -> DataFrame:
    """One row per complete window of every store (see the module docstring).

    days: gold.store_day_features rows (one per store and day). last_day: the day the
    windows align to (default: the latest day in `days`).
    """
    if last_day is None:
        last_day = days.agg(F.max(DATE)).first()[0]
    if last_day is None:
        return days.sparkSession.createDataFrame([], schema())
    last = (last_day - EPOCH).days
    out_schema = schema()

    def per_store(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values(DATE, kind="stable").reset_index(drop=True)
        numbers = np.array([(d - EPOCH).days for d in pdf[DATE]], dtype=np.int64)
        starts = window_starts(numbers, last, spec)
        position = {int(d): i for i, d in enumerate(numbers)}
        values = pdf[list(DAY_COLUMNS)].to_numpy(dtype=np.float32)
        rows = []
        for start in starts:
            i = position[start - spec.lookback]
            block = values[i : i + spec.days]
            first_forecast = pdf.iloc[i + spec.lookback]
            rows.append(
                {
                    STORE: int(first_forecast[STORE]),
                    "forecast_start": EPOCH + timedelta(days=start),
                    "forecast_end": EPOCH + timedelta(days=start + spec.horizon - 1),
                    "lookback_start": EPOCH + timedelta(days=start - spec.lookback),
                    **{c: block[:, j] for j, c in enumerate(DAY_COLUMNS)},
                    "store_type": first_forecast["store_type"],
                    "assortment": first_forecast["assortment"],
                    "competition_distance_m": first_forecast["competition_distance_m"],
                    "competition_open": bool(first_forecast["competition_open"]),
                }
            )
        return pd.DataFrame(rows, columns=out_schema.fieldNames())

    return _values(days).groupBy(STORE).applyInPandas(per_store, out_schema)
