"""Price and volume features ("fundamental" in the seed plan): returns, ranges, ratios, numpy and pandas windows.

Every compute takes one stock's valid bars (float64, ascending dates) and returns one column aligned
to them, or (`on_panels`) a panel of many stocks' valid rows and returns an array of its shape.
Windows use min_periods = window, so warm-up rows are NaN; only positive shifts are used, so a value
at t depends on rows up to t. Division by zero (volume 0 on suspended days, a flat range)
yields NaN or inf, which the family runner stores as NaN.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from precompute_assets.indicators.families import technical  # noqa: F401 (registers VOLATILITY, volatility_20d's source)
from precompute_assets.indicators.families.base import (
    Bars,
    Column,
    IndicatorRow,
    SameAs,
    aligned,
    column,
    on_panels,
    ratio,
    register_rows,
    rolling,
    shifted,
)

FAMILY = "fundamental"
ADDED = "2026-11-25"


def _mean(x: np.ndarray, n: int) -> np.ndarray:
    return rolling(x, n, "mean")


def _returns(bars: Bars, n: int) -> np.ndarray:
    close = column(bars, "close")
    return ratio(close, shifted(close, n)) - 1


@on_panels
def price_change(bars: Bars, n: int = 1) -> Column:
    """Simple return over n days: close / close n days ago - 1."""
    return aligned(_returns(bars, n), bars)


@on_panels
def price_position(bars: Bars, n: int = 20) -> Column:
    """Where close sits in the n-day low..high range, 0..1; NaN on a flat range."""
    lowest = rolling(column(bars, "low"), n, "min")
    highest = rolling(column(bars, "high"), n, "max")
    return aligned(ratio(column(bars, "close") - lowest, highest - lowest), bars)


@on_panels
def volume_change(bars: Bars) -> Column:
    """Day-on-day volume change: volume / yesterday's volume - 1."""
    volume = column(bars, "volume")
    return aligned(ratio(volume, shifted(volume, 1)) - 1, bars)


@on_panels
def volume_ma_ratio(bars: Bars, n: int = 20) -> Column:
    """Today's volume against its n-day mean (including today): unusual activity."""
    volume = column(bars, "volume")
    return aligned(ratio(volume, _mean(volume, n)), bars)


@on_panels
def volatility(bars: Bars, n: int) -> Column:
    """Sample std (ddof=1) of the daily return over n days, not annualised."""
    return aligned(rolling(_returns(bars, 1), n, "std"), bars)


@on_panels
def momentum(bars: Bars, n: int) -> Column:
    """Close against its n-day mean (including today) - 1: trend strength, unlike the point-to-point change."""
    close = column(bars, "close")
    return aligned(ratio(close, _mean(close, n)) - 1, bars)


@on_panels
def volume_momentum(bars: Bars, n: int) -> Column:
    """Mean volume of the last n days against the n days before them - 1: is trading picking up."""
    mean = _mean(column(bars, "volume"), n)
    return aligned(ratio(mean, shifted(mean, n)) - 1, bars)


@on_panels
def price_range(bars: Bars) -> Column:
    """The day's range high - low, in (adjusted) price units."""
    return aligned(column(bars, "high") - column(bars, "low"), bars)


@on_panels
def price_range_ratio(bars: Bars) -> Column:
    """The day's range as a fraction of close: comparable across stocks."""
    return aligned(ratio(column(bars, "high") - column(bars, "low"), column(bars, "close")), bars)


@on_panels
def close_ratio(bars: Bars, field: str) -> Column:
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
