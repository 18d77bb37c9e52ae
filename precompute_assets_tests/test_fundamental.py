"""The fundamental family against direct numpy computations of its documented formulas on real stocks,
plus point in time (changing later rows never changes earlier values) and missing days."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import leading_nans

import precompute_assets.indicators.families.fundamental  # noqa: F401 - registers the family
from precompute_assets.indicators.families.base import compute_per_stock
from precompute_assets.indicators.registry import REGISTRY

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"
REQUIRED = ["open", "high", "low", "close", "volume"]
CODES = ["SH600000", "SZ000792", "SZ302132"]  # plain; suspensions and a +306% jump; NaN rows in the input

# fmt: off
DESIGN_ORDER = [
    "price_change", "price_change_5d", "price_change_20d", "price_position", "volume_change", "volume_ma_ratio",
    "volatility_5d", "volatility_20d", "momentum_5d", "momentum_20d", "volume_momentum_5d", "volume_momentum_20d",
    "price_range", "price_range_ratio", "open_close_ratio", "high_close_ratio", "low_close_ratio"
]
# fmt: on


@cache
def _real_bars(code: str) -> pd.DataFrame:
    frame = pd.read_parquet(REFDATA / "csi300_daily" / f"{code}.parquet", columns=["date", *REQUIRED, "factor"])
    bars = frame.set_index("date").sort_index().dropna(subset=REQUIRED).astype(np.float64)
    bars["vwap"] = (bars["high"] + bars["low"] + bars["close"]) / 3
    return bars


def real_bars(code: str) -> pd.DataFrame:
    """One real stock's valid rows, shaped as a family compute receives them (a fresh copy)."""
    return _real_bars(code).copy()


def compute(name: str, bars: pd.DataFrame) -> np.ndarray:
    return pd.Series(REGISTRY.get(name).compute(bars), index=bars.index).to_numpy(np.float64)


# --- the formulas again, in numpy ----------------------------------------------------------------------


def lag(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    out[n:] = x[:-n]
    return out


def rolling(x: np.ndarray, n: int, reduce: Callable[..., np.ndarray], **kwargs: object) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if len(x) >= n:
        out[n - 1 :] = reduce(np.lib.stride_tricks.sliding_window_view(x, n), axis=-1, **kwargs)
    return out


def numpy_feature(name: str, bars: pd.DataFrame) -> np.ndarray:
    op, hi, lo, c, v = (bars[field].to_numpy(np.float64) for field in REQUIRED)
    returns = c / lag(c, 1) - 1
    formulas: dict[str, Callable[[], np.ndarray]] = {
        "price_change": lambda: returns,
        "price_change_5d": lambda: c / lag(c, 5) - 1,
        "price_change_20d": lambda: c / lag(c, 20) - 1,
        "price_position": lambda: (c - rolling(lo, 20, np.min)) / (rolling(hi, 20, np.max) - rolling(lo, 20, np.min)),
        "volume_change": lambda: v / lag(v, 1) - 1,
        "volume_ma_ratio": lambda: v / rolling(v, 20, np.mean),
        "volatility_5d": lambda: rolling(returns, 5, np.std, ddof=1),
        "volatility_20d": lambda: rolling(returns, 20, np.std, ddof=1),
        "momentum_5d": lambda: c / rolling(c, 5, np.mean) - 1,
        "momentum_20d": lambda: c / rolling(c, 20, np.mean) - 1,
        "volume_momentum_5d": lambda: rolling(v, 5, np.mean) / lag(rolling(v, 5, np.mean), 5) - 1,
        "volume_momentum_20d": lambda: rolling(v, 20, np.mean) / lag(rolling(v, 20, np.mean), 20) - 1,
        "price_range": lambda: hi - lo,
        "price_range_ratio": lambda: (hi - lo) / c,
        "open_close_ratio": lambda: op / c,
        "high_close_ratio": lambda: hi / c,
        "low_close_ratio": lambda: lo / c,
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        return formulas[name]()


def as_stored(values: np.ndarray) -> np.ndarray:
    """inf (a division by a zero volume or a flat range) is stored as NaN."""
    return np.where(np.isfinite(values), values, np.nan)


# --- tests ------------------------------------------------------------------------------------------------


def test_registered_in_design_order() -> None:
    assert REGISTRY.names("fundamental") == DESIGN_ORDER
    for indicator in REGISTRY.all("fundamental"):
        assert indicator.compute is not None and indicator.formula and "\n" not in indicator.formula
        assert indicator.added == "2026-11-25" and indicator.version == "1"


def test_momentum_is_not_a_duplicate_of_price_change() -> None:
    bars = real_bars("SH600000")
    for n in (5, 20):
        assert not np.allclose(compute(f"momentum_{n}d", bars), compute(f"price_change_{n}d", bars), equal_nan=True)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("name", DESIGN_ORDER)
def test_matches_numpy_formula(code: str, name: str) -> None:
    bars = real_bars(code)
    actual, expected = as_stored(compute(name, bars)), as_stored(numpy_feature(name, bars))
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{code} {name}: NaN pattern")
    finite = ~np.isnan(expected)
    scale = float(np.max(np.abs(expected[finite])))
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-8, atol=1e-12 * scale, err_msg=name)


@pytest.mark.parametrize("name", DESIGN_ORDER)
def test_warmup_is_the_leading_nan_count(name: str) -> None:
    assert leading_nans(compute(name, real_bars("SH600000"))) == REGISTRY.get(name).warmup


@pytest.mark.parametrize("name", DESIGN_ORDER)
@pytest.mark.parametrize("cut", [10, 1500])
def test_point_in_time(name: str, cut: int) -> None:
    bars = real_bars("SZ000792")
    changed = bars.copy()
    rng = np.random.default_rng(11)
    changed.iloc[cut + 1 :] = changed.iloc[cut + 1 :].to_numpy() * rng.uniform(0.5, 1.5, changed.iloc[cut + 1 :].shape)
    before, after = compute(name, bars), compute(name, changed)
    assert not np.array_equal(before[cut + 1 :], after[cut + 1 :], equal_nan=True), "perturbation had no effect"
    np.testing.assert_array_equal(after[: cut + 1], before[: cut + 1], err_msg=name)


def test_missing_day_is_nan_and_left_out() -> None:
    bars = real_bars("SH600519")
    missing = bars.index[1000] + pd.Timedelta(hours=12)
    nan_row = pd.DataFrame(np.nan, index=pd.DatetimeIndex([missing], name=bars.index.name), columns=bars.columns)
    with_gap = pd.concat([bars, nan_row]).sort_index()
    indicators = REGISTRY.all("fundamental")
    gapped = compute_per_stock("fundamental", {"SH600519": with_gap}, indicators)
    plain = compute_per_stock("fundamental", {"SH600519": bars}, indicators)
    assert not gapped.errors
    frame = gapped.frames["SH600519"]
    assert list(frame.columns) == DESIGN_ORDER and frame.loc[missing].isna().all()
    pd.testing.assert_frame_equal(frame.drop(index=missing), plain.frames["SH600519"])
