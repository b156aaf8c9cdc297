"""What the sales forecaster reads: the window's day arrays and the sizes of its inputs.

No torch import: the Spark side (features, scoring rows) shares these with the network
(`forecasting.network`) without loading torch.
"""

from __future__ import annotations

# Per-day arrays of a window, each lookback + horizon long.
DAY_COLUMNS = (
    "sales",  # log(1 + sales)
    "customers",  # log(1 + customers)
    "open",
    "promo",
    "state_holiday",  # 1 on any state holiday
    "school_holiday",
    "promo2_active",
    "day_of_week",  # 1..7
    "month",  # 1..12
    "day_of_month",  # 1..31
)
STORE_TYPES = "abcd"
ASSORTMENTS = "abc"
# Store attributes: store type and assortment one-hot, log competition distance, its absence,
# competition open at the first forecast day.
N_STATIC = len(STORE_TYPES) + len(ASSORTMENTS) + 3
N_PAST = 6 + 7  # sales, customers, open, promo, state and school holiday + weekday one-hot
# The store's profile: median log sales relative to the level per (weekday, promo), at
# index (day_of_week - 1) * 2 + promo.
N_PROFILE = 14
# Around each horizon day (`network.neighbours`): the next and the previous day's open, promo,
# state and school holiday flags; the days since and until a closed day; the day's place in a
# run of school holidays.
N_NEIGHBOURS = 2 * 4 + 3
# flags, weekday, calendar, seasonal hints, neighbours, store, and last the profile at the day.
N_FUTURE = 5 + 7 + 3 + 2 + N_NEIGHBOURS + N_STATIC + 1
# What networks registered before the neighbours (NETWORK_VERSION 3) read.
N_FUTURE_V3 = N_FUTURE - N_NEIGHBOURS
# Columns a training/scoring row carries besides DAY_COLUMNS.
ROW_COLUMNS = ("level", "customers_level", "static", "profile")
# The point forecast's losses (`forecast.loss`, `network.point_loss`).
LOSSES = ("rmspe", "mse_log")
# Changes whenever the network's inputs or layers change: part of the training fingerprint,
# so a model registered by an older version is never reused for this one.
NETWORK_VERSION = 4  # 3: the P10/P90 head; 4: the neighbours, the RMSPE loss
