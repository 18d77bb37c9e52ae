"""Price and volume features ("fundamental" in the seed plan): returns, ranges, ratios, numpy and pandas windows.

Every compute takes one stock's valid bars (float64, ascending dates) and returns one column aligned
to them. Windows use min_periods = window, so warm-up rows are NaN; only positive shifts are used, so
a value at t depends on rows up to t. Division by zero (volume 0 on suspended days, a flat range)
yields NaN or inf, which the family runner stores as NaN.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from precompute_assets.indicators.families import technical  # noqa: F401 (registers VOLATILITY, volatility_20d's source)
from precompute_assets.indicators.families.base import (
    IndicatorRow,
    SameAs,
    aligned,
    column,
    ratio,
    register_rows,
    rolling,
    shifted,
)

FAMILY = "fundamental"
ADDED = "2026-11-25"


def _mean(x: np.ndarray, n: int) -> np.ndarray:
    return rolling(x, n).mean().to_numpy()


def _returns(bars: pd.DataFrame, n: int) -> np.ndarray:
    close = column(bars, "close")
    return ratio(close, shifted(close, n)) - 1


def price_change(bars: pd.DataFrame, n: int = 1) -> pd.Series:
    """Simple return over n days: close / close n days ago - 1."""
    return aligned(_returns(bars, n), bars)


def price_position(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """Where close sits in the n-day low..high range, 0..1; NaN on a flat range."""
    lowest = rolling(column(bars, "low"), n).min().to_numpy()
    highest = rolling(column(bars, "high"), n).max().to_numpy()
    return aligned(ratio(column(bars, "close") - lowest, highest - lowest), bars)


def volume_change(bars: pd.DataFrame) -> pd.Series:
    """Day-on-day volume change: volume / yesterday's volume - 1."""
    volume = column(bars, "volume")
    return aligned(ratio(volume, shifted(volume, 1)) - 1, bars)


def volume_ma_ratio(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """Today's volume against its n-day mean (including today): unusual activity."""
    volume = column(bars, "volume")
    return aligned(ratio(volume, _mean(volume, n)), bars)


def volatility(bars: pd.DataFrame, n: int) -> pd.Series:
    """Sample std (ddof=1) of the daily return over n days, not annualised."""
    return aligned(rolling(_returns(bars, 1), n).std().to_numpy(), bars)


def momentum(bars: pd.DataFrame, n: int) -> pd.Series:
    """Close against its n-day mean (including today) - 1: trend strength, unlike the point-to-point change."""
    close = column(bars, "close")
    return aligned(ratio(close, _mean(close, n)) - 1, bars)


def volume_momentum(bars: pd.DataFrame, n: int) -> pd.Series:
    """Mean volume of the last n days against the n days before them - 1: is trading picking up."""
    mean = _mean(column(bars, "volume"), n)
    return aligned(ratio(mean, shifted(mean, n)) - 1, bars)


def price_range(bars: pd.DataFrame) -> pd.Series:
    """The day's range high - low, in (adjusted) price units."""
    return aligned(column(bars, "high") - column(bars, "low"), bars)


def price_range_ratio(bars: pd.DataFrame) -> pd.Series:
    """The day's range as a fraction of close: comparable across stocks."""
    return aligned(ratio(column(bars, "high") - column(bars, "low"), column(bars, "close")), bars)


def close_ratio(bars: pd.DataFrame, field: str) -> pd.Series:
    """open, high or low over close: the shape of the day's candle."""
    return aligned(ratio(column(bars, field), column(bars, "close")), bars)


# fmt: off
# name, compute, formula, warm-up rows, history, params
INDICATORS: list[IndicatorRow] = [
    ("price_change", price_change, "c / c[t-1] - 1", 1, "windowed", {"n": 1}),
    ("price_change_5d", partial(price_change, n=5), "c / c[t-5] - 1", 5, "windowed", {"n": 5}),
    ("price_change_20d", partial(price_change, n=20), "c / c[t-20] - 1", 20, "windowed", {"n": 20}),
    ("price_position", price_position, "(c - min(l, 20)) / (max(h, 20) - min(l, 20))", 19, "windowed", {"window": 20}),
    ("volume_change", volume_change, "v / v[t-1] - 1", 1, "windowed", {"n": 1}),
    ("volume_ma_ratio", volume_ma_ratio, "v / mean(v, 20)", 19, "windowed", {"window": 20}),
    ("volatility_5d", partial(volatility, n=5), "std(c / c[t-1] - 1, 5, ddof=1)", 5, "windowed",
     {"window": 5, "ddof": 1}),
    ("volatility_20d", SameAs("VOLATILITY"), "std(c / c[t-1] - 1, 20, ddof=1)", 20, "windowed",
     {"window": 20, "ddof": 1}),
    ("momentum_5d", partial(momentum, n=5), "c / mean(c, 5) - 1", 4, "windowed", {"window": 5}),
    ("momentum_20d", partial(momentum, n=20), "c / mean(c, 20) - 1", 19, "windowed", {"window": 20}),
    ("volume_momentum_5d", partial(volume_momentum, n=5), "mean(v, 5) / mean(v, 5)[t-5] - 1", 9, "windowed",
     {"window": 5}),
    ("volume_momentum_20d", partial(volume_momentum, n=20), "mean(v, 20) / mean(v, 20)[t-20] - 1", 39, "windowed",
     {"window": 20}),
    ("price_range", price_range, "h - l", 0, "point", {}),
    ("price_range_ratio", price_range_ratio, "(h - l) / c", 0, "point", {}),
    ("open_close_ratio", partial(close_ratio, field="open"), "o / c", 0, "point", {}),
    ("high_close_ratio", partial(close_ratio, field="high"), "h / c", 0, "point", {}),
    ("low_close_ratio", partial(close_ratio, field="low"), "l / c", 0, "point", {}),
]
# fmt: on

register_rows(FAMILY, INDICATORS, ADDED)
