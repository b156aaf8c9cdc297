"""The LSTM sales forecaster: inputs from a sales window, the network, and its training task.

No Spark import: ranks and scoring workers import only torch and numpy.

A window (`gold.sales_windows`) holds `lookback + horizon` consecutive days of one store as
per-day arrays. The encoder reads the lookback days: sales and customers (log, relative to
the store's level), open, promo, holidays, weekday. The decoder reads the horizon days'
covariates known in advance (open, promo, holidays, Promo2, calendar), the store's
attributes, two seasonal hints computed from the lookback only (the same weekday's sales
a week before the horizon, and the lookback's mean for that weekday), what surrounds each
day (`neighbour_features`: the decoder reads the days in order, so without them it would
not know on a Saturday that Monday is a holiday) and the store's profile: its median log
sales by weekday and promo state over the training period (`score.levels`), read at each
horizon day's weekday and planned promo. It never sees a
horizon day's sales or customers. The output is log(1 + sales) relative to the store's level
for each horizon day, as a correction to the profile (the last layer starts at zero, so an
untrained network forecasts the store's weekday x promo median); closed days are forecast 0.
The point forecast trains on the squared percentage error (`ForecastTask`, loss `rmspe`,
the metric it is judged on, which weighs a forecast above the sales more than one below it
by the same amount) or on the squared error of log sales (`mse_log`).

Beside the point forecast, a second head gives each day's 10th and 90th percentiles (P10,
P90) as distances below and above it, trained with the pinball (quantile) loss. It reads
the decoder's states detached from the graph, so the quantiles never change what the point
forecast learns. Quantiles of log sales are quantiles of sales: the interval maps to EUR
through the same expm1. Errors on unseen weeks are larger than on the weeks trained on, so
the trained interval is too narrow; `calibration` moves each end by the amount that makes
it hold on the validation period (conformalized quantile regression, Romano et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from retail_lake.forecasting.inputs import (  # noqa: F401 (part of this module's API)
    ASSORTMENTS,
    DAY_COLUMNS,
    LOSSES,
    N_FUTURE,
    N_FUTURE_V3,
    N_NEIGHBOURS,
    N_PAST,
    N_PROFILE,
    N_STATIC,
    NETWORK_VERSION,
    ROW_COLUMNS,
    STORE_TYPES,
)


def static_features(
    store_type: str, assortment: str, distance_m: float | None, competition_open: bool
) -> list[float]:
    """The store's attributes as the N_STATIC numbers the decoder reads."""
    known = distance_m is not None and not (
        isinstance(distance_m, float) and math.isnan(distance_m)
    )
    return [
        *[1.0 if store_type == t else 0.0 for t in STORE_TYPES],
        *[1.0 if assortment == a else 0.0 for a in ASSORTMENTS],
        math.log1p(distance_m) / 10.0 if known else 0.0,
        0.0 if known else 1.0,
        1.0 if competition_open else 0.0,
    ]


def _one_hot_weekday(dow):
    return torch.nn.functional.one_hot((dow.long() - 1).clamp(0, 6), 7).float()


def _days_since(hit, cap: int):
    """Per day of (B, n) booleans: days since the last True at or before it (0 on a True
    day), at most `cap` (also before the first True)."""
    index = torch.arange(hit.shape[-1], dtype=torch.float32).expand_as(hit)
    last = torch.where(hit, index, torch.full_like(index, -float(cap)))
    return (index - torch.cummax(last, dim=-1).values).clamp(max=cap)


# Flags whose next and previous day the decoder reads (`neighbour_features`).
NEIGHBOUR_FLAGS = ("open", "promo", "state_holiday", "school_holiday")
# Caps (days) of the distances to a closed day and of a run of school holidays.
_CLOSED_CAP, _SCHOOL_CAP = 7, 42


def neighbour_features(t: Mapping[str, Any], lookback: int):
    """(B, H, N_NEIGHBOURS) for the horizon days of windows `t` (tensors of whole windows):
    each NEIGHBOUR_FLAGS' value on the next and on the previous day (the window's last day
    counts as its own next day), the days since and until a closed day (at most 7, over 7),
    and how many school-holiday days in a row end at the day (at most 42, over 42). All are
    known in advance: a horizon day's sales and customers are never read."""
    parts = []
    for flag in NEIGHBOUR_FLAGS:
        v = t[flag]
        parts.append(torch.cat([v[:, 1:], v[:, -1:]], dim=1))
        parts.append(torch.cat([v[:, :1], v[:, :-1]], dim=1))
    closed = t["open"] <= 0
    parts.append(_days_since(closed, _CLOSED_CAP) / _CLOSED_CAP)
    parts.append(_days_since(closed.flip(-1), _CLOSED_CAP).flip(-1) / _CLOSED_CAP)
    parts.append(_days_since(t["school_holiday"] <= 0, _SCHOOL_CAP) / _SCHOOL_CAP)
    out = torch.stack(parts, dim=-1)[:, lookback:]
    assert out.shape[-1] == N_NEIGHBOURS
    return out


def prepare(
    batch: Mapping[str, Any], lookback: int, horizon: int, neighbours: bool = True
) -> dict[str, Any]:
    """Network inputs and targets from a batch of windows (tensors or numpy arrays).

    Returns past (B, L, N_PAST), future (B, H, N_FUTURE; N_FUTURE_V3 without the
    `neighbours`, as networks of NETWORK_VERSION 3 read it), target (B, H: log sales
    relative to the level), mask (B, H: open days with sales, the days the metric judges),
    sales (B, H: EUR) and open (B, H).
    """
    t = {
        k: (
            batch[k] if torch.is_tensor(batch[k]) else torch.as_tensor(np.asarray(batch[k]))
        ).float()
        for k in (*DAY_COLUMNS, *ROW_COLUMNS)
    }
    n = lookback + horizon
    for k in DAY_COLUMNS:
        if t[k].shape[-1] != n:
            raise ValueError(f"window column {k} has {t[k].shape[-1]} days, expected {n}")
    if t["profile"].shape[-1] != N_PROFILE:
        raise ValueError(f"profile has {t['profile'].shape[-1]} values, expected {N_PROFILE}")
    level = t["level"].view(-1, 1)
    opened = t["open"]
    sold = (opened > 0) & (t["sales"] > 0)
    rel_sales = torch.where(sold, t["sales"] - level, torch.zeros_like(t["sales"]))
    rel_customers = torch.where(
        sold, t["customers"] - t["customers_level"].view(-1, 1), torch.zeros_like(t["customers"])
    )
    past_slice = slice(0, lookback)
    future_slice = slice(lookback, n)
    flags = ("open", "promo", "state_holiday", "school_holiday")
    past = torch.cat(
        [
            rel_sales[:, past_slice, None],
            rel_customers[:, past_slice, None],
            *[t[f][:, past_slice, None] for f in flags],
            _one_hot_weekday(t["day_of_week"][:, past_slice]),
        ],
        dim=-1,
    )
    # Seasonal hints from the lookback only: the same weekday's relative sales in the last
    # lookback week, and the lookback's mean for that weekday over days with sales.
    last_week = rel_sales[:, lookback - 7 : lookback]
    offsets = torch.arange(horizon) % 7
    same_day = last_week[:, offsets]
    dow_past = t["day_of_week"][:, past_slice].long() - 1
    sums = torch.zeros(len(level), 7).scatter_add_(
        1, dow_past.clamp(0, 6), rel_sales[:, past_slice]
    )
    counts = torch.zeros(len(level), 7).scatter_add_(
        1, dow_past.clamp(0, 6), sold[:, past_slice].float()
    )
    lookback_profile = sums / counts.clamp(min=1.0)
    dow_future = (t["day_of_week"][:, future_slice].long() - 1).clamp(0, 6)
    weekday_mean = torch.gather(lookback_profile, 1, dow_future)
    promo_future = t["promo"][:, future_slice].long().clamp(0, 1)
    profile_day = torch.gather(t["profile"], 1, dow_future * 2 + promo_future)
    angle = (t["month"][:, future_slice] - 1) * (2 * math.pi / 12)
    static = t["static"].view(len(level), 1, -1).expand(-1, horizon, -1)
    future = torch.cat(
        [
            *[t[f][:, future_slice, None] for f in (*flags, "promo2_active")],
            _one_hot_weekday(t["day_of_week"][:, future_slice]),
            torch.sin(angle)[..., None],
            torch.cos(angle)[..., None],
            (t["day_of_month"][:, future_slice] / 31.0)[..., None],
            same_day[..., None],
            weekday_mean[..., None],
            *([neighbour_features(t, lookback)] if neighbours else []),
            static,
            profile_day[..., None],
        ],
        dim=-1,
    )
    sales = torch.expm1(t["sales"][:, future_slice])
    return {
        "past": past,
        "future": future,
        "target": rel_sales[:, future_slice],
        "mask": sold[:, future_slice].float(),
        "sales": sales,
        "open": opened[:, future_slice],
        "level": level,
    }


# The interval's quantiles: P10 and P90, an 80% interval.
QUANTILES = (0.1, 0.9)
# The quantile head starts at this distance (log units) on either side of the point.
_START_SPREAD = 0.1


class Forecaster(nn.Module):
    """Encoder-decoder LSTM: (past, future) -> (B, H) log sales relative to the level, as a
    correction to the store's profile at each day (the last future column); `quantiles`
    gives the P10 and P90 as well."""

    def __init__(self, hidden: int = 64, layers: int = 1, future: int = N_FUTURE) -> None:
        super().__init__()
        self.encoder = nn.LSTM(N_PAST, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.LSTM(future, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + future, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        # Start from the profile: training learns what the weekday x promo median misses.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # Made after the point forecast's layers, so their initial weights (drawn in order
        # from the seeded generator) are the ones a network without it would get.
        self.spread = nn.Sequential(
            nn.Linear(hidden + future, hidden), nn.ReLU(), nn.Linear(hidden, len(QUANTILES))
        )
        nn.init.zeros_(self.spread[-1].weight)
        nn.init.constant_(self.spread[-1].bias, math.log(math.expm1(_START_SPREAD)))

    def _decode(self, past, future):
        _, state = self.encoder(past)
        out, _ = self.decoder(future, state)
        return torch.cat([out, future], dim=-1)

    def forward(self, past, future):
        return self.point(self._decode(past, future), future)

    def point(self, decoded, future):
        return future[..., -1] + self.head(decoded).squeeze(-1)

    def quantiles(self, past, future):
        """(point, P10, P90), each (B, H) log sales relative to the level. The P10 and P90
        are the point less and plus a positive spread read from detached states: training
        them moves only the spread head."""
        decoded = self._decode(past, future)
        point = self.point(decoded, future)
        below, above = nn.functional.softplus(self.spread(decoded.detach())).unbind(-1)
        return point, point.detach() - below, point.detach() + above

    @property
    def neighbours(self) -> bool:
        """Whether it reads `neighbour_features` (NETWORK_VERSION 4 on) or not (3)."""
        return self.decoder.input_size == N_FUTURE


def pinball(pred, target, q: float, mask):
    """The mean pinball (quantile) loss of `pred` as the `q` quantile, over `mask`."""
    diff = target - pred
    loss = torch.maximum(q * diff, (q - 1) * diff) * mask
    return loss.sum() / mask.sum().clamp(min=1.0)


def build_network(hidden: int = 64, layers: int = 1, future: int = N_FUTURE) -> Forecaster:
    """A fresh network; `future=N_FUTURE_V3` builds one that loads a version-3 model."""
    if future not in (N_FUTURE, N_FUTURE_V3):
        raise ValueError(
            f"a forecaster reads {N_FUTURE} or {N_FUTURE_V3} future inputs, not {future}"
        )
    return Forecaster(hidden, layers, future)


def _eur(rel, prepared: Mapping[str, Any]):
    eur = torch.expm1(rel + prepared["level"]).clamp(min=0.0)
    return torch.where(prepared["open"] > 0, eur, torch.zeros_like(eur))


def forecast_eur(net, prepared: Mapping[str, Any]):
    """Forecast sales (EUR) per horizon day; 0 on closed days."""
    return _eur(net(prepared["past"], prepared["future"]), prepared)


def interval_eur(net, prepared: Mapping[str, Any], offsets=(0.0, 0.0)):
    """(forecast, P10, P90) in EUR per horizon day; 0 on closed days. `offsets` (log units,
    from `calibration`) move the P10 and the P90; neither passes the forecast."""
    point, low, high = net.quantiles(prepared["past"], prepared["future"])
    low = torch.minimum(low + float(offsets[0]), point)
    high = torch.maximum(high + float(offsets[1]), point)
    return tuple(_eur(rel, prepared) for rel in (point, low, high))


def calibration(net, prepared: Mapping[str, Any]) -> tuple[float, float]:
    """The offsets (log units) that make the P10 and P90 hold on held-out windows: the
    0.1-quantile of (target - P10) and the 0.9-quantile of (target - P90) over open days
    with sales, so that a tenth of those days falls below the moved P10 and a tenth above
    the moved P90."""
    with torch.no_grad():
        _, low, high = net.quantiles(prepared["past"], prepared["future"])
    mask = prepared["mask"] > 0
    if not bool(mask.any()):
        return 0.0, 0.0
    target = prepared["target"][mask]
    q_low, q_high = QUANTILES
    return (
        float(torch.quantile(target - low[mask], q_low)),
        float(torch.quantile(target - high[mask], q_high)),
    )


# Log units a forecast may exceed the sales by in the percentage loss before it saturates
# (e^3 = 20 times the sales), so a wild early step cannot overflow.
_MAX_OVER = 3.0


def point_loss(pred, target, mask, loss: str = "rmspe"):
    """The point forecast's mean loss over `mask` (log sales relative to the level):
    `rmspe`, the squared percentage error (1 - forecast / sales)^2, or `mse_log`, the
    squared error of log sales."""
    diff = pred - target
    if loss == "rmspe":
        err = (1.0 - torch.exp(diff.clamp(max=_MAX_OVER))) ** 2
    elif loss == "mse_log":
        err = diff**2
    else:
        raise ValueError(f"forecast.loss must be one of {', '.join(LOSSES)}, not {loss!r}")
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


class ForecastTask:
    """The forecaster's `training.loop.Task`: the point loss (`point_loss`) for the forecast,
    plus the pinball loss of the P10 and P90 (which train only the spread head); validation
    reports the squared and absolute percentage errors over open days with sales (RMSPE =
    sqrt(mspe)), and how many of those days fall below the P10, above the P90."""

    name = "sales_forecaster"
    monitor = "mspe"
    higher_is_better = False

    def __init__(
        self, lookback: int, horizon: int, hidden: int = 64, layers: int = 1, loss: str = "rmspe"
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"forecast.loss must be one of {', '.join(LOSSES)}, not {loss!r}")
        self.lookback, self.horizon, self.hidden, self.layers = lookback, horizon, hidden, layers
        self.loss = loss

    def build(self):
        return build_network(self.hidden, self.layers)

    def batch_loss(self, net, batch, device):
        p = {k: v.to(device) for k, v in prepare(batch, self.lookback, self.horizon).items()}
        pred, low, high = net.quantiles(p["past"], p["future"])
        q_low, q_high = QUANTILES
        return (
            point_loss(pred, p["target"], p["mask"], self.loss)
            + pinball(low, p["target"], q_low, p["mask"])
            + pinball(high, p["target"], q_high, p["mask"])
        )

    def evaluate(self, net, data, device) -> dict[str, float]:
        if not len(data["level"]):
            return {
                "count": 0.0, "mspe": 0.0, "mape": 0.0, "mse_log": 0.0,
                "below_p10": 0.0, "above_p90": 0.0,
            }  # fmt: skip
        p = {k: v.to(device) for k, v in prepare(data, self.lookback, self.horizon).items()}
        rel, low, high = net.quantiles(p["past"], p["future"])
        eur = _eur(rel, p)
        mask = p["mask"] > 0
        pct = torch.where(
            mask, (p["sales"] - eur) / p["sales"].clamp(min=1.0), torch.zeros_like(eur)
        )
        return {
            "count": float(mask.sum()),
            "mspe": float((pct**2).sum()),
            "mape": float(pct.abs().sum()),
            "mse_log": float((((rel - p["target"]) ** 2) * p["mask"]).sum()),
            "below_p10": float((mask & (p["target"] < low)).sum()),
            "above_p90": float((mask & (p["target"] > high)).sum()),
        }
