"""The forecaster's torch network (no Spark import: it also runs where only torch is)."""

from __future__ import annotations


def build_network(n_features: int, hidden: int = 32):
    """A small MLP; the output is log(1 + sales) relative to the global level."""
    from torch import nn

    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
