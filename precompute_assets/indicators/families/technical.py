"""Technical indicators: TA-Lib where it has them, pandas for the Chinese-software ones it lacks.

Every compute takes one stock's valid bars (float64, ascending dates, no missing days) and returns one
column aligned to them; marked `on_panels`, it also takes a panel of many stocks' valid rows (a column
per stock, a daily update's tails) and returns an array of its shape, TA-Lib run on each stock's
column and pandas' windows on all of them in one call. TA-Lib values come from TA-Lib itself, with
its own warm-up NaNs; the pandas ones use rolling windows with min_periods = window, so their
warm-up rows are NaN too. Nothing looks forward: the only shift is Ichimoku's senkou spans, shifted
+26 (the cloud drawn at t, known at t - 26).
"""

from __future__ import annotations

from functools import partial

import numba
import numpy as np
import pandas as pd
import talib

from precompute_assets.indicators.families.base import (
    Bars,
    Column,
    IndicatorRow,
    Output,
    SameAs,
    aligned,
    by_stock,
    column,
    on_panels,
    ratio,
    register_rows,
    rolling,
    shifted,
)

FAMILY = "technical"
ADDED = "2026-11-25"
TRADING_DAYS = 252
KDJ_SEED = 50.0

Outputs = tuple[Column, ...]


def _hlc(bars: Bars) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return column(bars, "high"), column(bars, "low"), column(bars, "close")


# --- TA-Lib ---------------------------------------------------------------------------------------


@on_panels
def sma(bars: Bars, n: int) -> Column:
    """Simple moving average of close."""
    return aligned(by_stock(talib.SMA, column(bars, "close"), timeperiod=n), bars)


@on_panels
def ema(bars: Bars, n: int = 20) -> Column:
    """Exponential moving average of close, seeded with the SMA of the first n closes (TA-Lib)."""
    return aligned(by_stock(talib.EMA, column(bars, "close"), timeperiod=n), bars)


@on_panels
def wma(bars: Bars, n: int = 20) -> Column:
    """Linearly weighted moving average of close: recent days weigh more."""
    return aligned(by_stock(talib.WMA, column(bars, "close"), timeperiod=n), bars)


@on_panels
def rsi(bars: Bars, n: int = 14) -> Column:
    """Wilder's relative strength index of close."""
    return aligned(by_stock(talib.RSI, column(bars, "close"), timeperiod=n), bars)


@on_panels
def volume_rsi(bars: Bars, n: int = 14) -> Column:
    """Wilder's RSI applied to volume: is volume rising or falling."""
    return aligned(by_stock(talib.RSI, column(bars, "volume"), timeperiod=n), bars)


@on_panels
def stoch(bars: Bars) -> Outputs:
    """Slow stochastic (%K, %D): where close sits in the 14-day range, smoothed twice by SMA(3)."""
    outputs = by_stock(
        talib.STOCH, *_hlc(bars), fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0
    )
    return tuple(aligned(values, bars) for values in outputs)


@on_panels
def williams_r(bars: Bars, n: int = 14) -> Column:
    """Williams %R: close against the n-day high, in -100..0."""
    return aligned(by_stock(talib.WILLR, *_hlc(bars), timeperiod=n), bars)


@on_panels
def cci(bars: Bars, n: int = 20) -> Column:
    """Commodity channel index: typical price's distance from its mean, in mean deviations / 0.015."""
    return aligned(by_stock(talib.CCI, *_hlc(bars), timeperiod=n), bars)


@on_panels
def momentum(bars: Bars, n: int = 10) -> Column:
    """Close minus the close n days ago."""
    return aligned(by_stock(talib.MOM, column(bars, "close"), timeperiod=n), bars)


@on_panels
def roc(bars: Bars, n: int = 10) -> Column:
    """Rate of change in percent: (close / close n days ago - 1) * 100."""
    return aligned(by_stock(talib.ROC, column(bars, "close"), timeperiod=n), bars)


@on_panels
def macd(bars: Bars) -> Outputs:
    """MACD line, signal and histogram (= line - signal, not doubled), 12/26/9."""
    outputs = by_stock(talib.MACD, column(bars, "close"), fastperiod=12, slowperiod=26, signalperiod=9)
    return tuple(aligned(values, bars) for values in outputs)


@on_panels
def bbands(bars: Bars) -> Outputs:
    """Bollinger upper, middle, lower: SMA(20) +- 2 population standard deviations."""
    outputs = by_stock(talib.BBANDS, column(bars, "close"), timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    return tuple(aligned(values, bars) for values in outputs)


@on_panels
def sar(bars: Bars) -> Column:
    """Parabolic SAR, acceleration 0.02 up to 0.2."""
    return aligned(by_stock(talib.SAR, column(bars, "high"), column(bars, "low"), acceleration=0.02, maximum=0.2), bars)


@on_panels
def adx(bars: Bars, n: int = 14) -> Column:
    """Average directional index: trend strength, whatever its direction."""
    return aligned(by_stock(talib.ADX, *_hlc(bars), timeperiod=n), bars)


@on_panels
def atr(bars: Bars, n: int = 14) -> Column:
    """Average true range, Wilder-smoothed."""
    return aligned(by_stock(talib.ATR, *_hlc(bars), timeperiod=n), bars)


@on_panels
def obv(bars: Bars) -> Column:
    """On-balance volume: volume added on up days, subtracted on down days, from the first bar."""
    return aligned(by_stock(talib.OBV, column(bars, "close"), column(bars, "volume")), bars)


@on_panels
def ad_line(bars: Bars) -> Column:
    """Chaikin accumulation/distribution line: volume weighted by close's place in the day's range."""
    return aligned(by_stock(talib.AD, *_hlc(bars), column(bars, "volume")), bars)


@on_panels
def midprice(bars: Bars, n: int) -> Column:
    """(n-day highest high + n-day lowest low) / 2: Ichimoku's building block."""
    return aligned(by_stock(talib.MIDPRICE, column(bars, "high"), column(bars, "low"), timeperiod=n), bars)


# --- pandas ---------------------------------------------------------------------------------------


@on_panels
def ichimoku_senkou_a(bars: Bars, lead: int = 26) -> Column:
    """Leading span A shown at t: (tenkan + kijun) / 2 as of t - lead, so only past data."""
    spans = (np.asarray(midprice(bars, 9)) + np.asarray(midprice(bars, 26))) / 2
    return aligned(shifted(spans, lead), bars)


@on_panels
def ichimoku_senkou_b(bars: Bars, lead: int = 26) -> Column:
    """Leading span B shown at t: the 52-day midprice as of t - lead."""
    return aligned(shifted(np.asarray(midprice(bars, 52)), lead), bars)


@on_panels
def vwap_tp(bars: Bars, n: int = 20) -> Column:
    """n-day volume-weighted typical price sum(TP * V) / sum(V), TP = (h + l + c) / 3; NaN if no volume."""
    high, low, close = _hlc(bars)
    volume = column(bars, "volume")
    traded = rolling((high + low + close) / 3 * volume, n, "sum")
    return aligned(ratio(traded, rolling(volume, n, "sum")), bars)


@on_panels
def volatility(bars: Bars, n: int = 20) -> Column:
    """Sample std (ddof=1) of daily simple returns over n days, not annualised."""
    close = column(bars, "close")
    returns = ratio(close, shifted(close, 1)) - 1
    return aligned(rolling(returns, n, "std"), bars)


@on_panels
def historical_volatility(bars: Bars, n: int = 20) -> Column:
    """Annualised sample std (ddof=1) of daily log returns over n days."""
    close = column(bars, "close")
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) on a zero close
        returns = np.log(ratio(close, shifted(close, 1)))
    return aligned(rolling(returns, n, "std") * np.sqrt(TRADING_DAYS), bars)


@on_panels
def rsv(bars: Bars, n: int = 9) -> Column:
    """Raw stochastic value (close - LLV(low, n)) / (HHV(high, n) - LLV(low, n)) * 100; NaN on a flat range."""
    high, low, close = _hlc(bars)
    lowest = rolling(low, n, "min")
    return aligned(ratio(close - lowest, rolling(high, n, "max") - lowest) * 100, bars)


def seeded_smooth(x: np.ndarray, seed: float = KDJ_SEED) -> np.ndarray:
    """y = 2/3 y' + 1/3 x with y' = seed before x's first value (KDJ's SMA(x, 3, 1)), per column of a panel.

    Where x is undefined (a flat 9-day range, e.g. a long suspension) y is NaN too, and the recursion
    skips that day and carries on from the last y. Exact recursion via ewm on [seed, x...] (adjust=False,
    NaN skipped); a panel's columns step through the same arithmetic together, a row at a time.
    """
    if x.ndim == 1:
        seeded = pd.Series(np.concatenate(([seed], x)))
        smoothed = seeded.ewm(alpha=1 / 3, adjust=False, ignore_na=True).mean().to_numpy()[1:]
        return np.where(np.isnan(x), np.nan, smoothed)
    return _seeded_smooth_panel(np.asarray(x, dtype=np.float64), float(seed), 1.0 - _EWM_ALPHA, _EWM_ALPHA)


_EWM_ALPHA = 1.0 / (1.0 + (1 - 1 / 3) / (1 / 3))
"""ewm(alpha=1/3)'s weight as pandas' kernel uses it, through the centre of mass com = (1 - alpha) / alpha."""


@numba.jit(nopython=True, nogil=True, cache=True)
def _seeded_smooth_panel(x: np.ndarray, seed: float, old_weight: float, new_weight: float) -> np.ndarray:
    """`seeded_smooth` of each column: pandas' ewm kernel step by step (a loop, not numpy calls per row:
    a tail's few stocks made those calls cost more than the arithmetic)."""
    out = np.full(x.shape, np.nan)
    for stock in range(x.shape[1]):
        weighted = seed
        for row in range(x.shape[0]):
            value = x[row, stock]
            if np.isnan(value):
                continue
            if weighted != value:  # pandas' guard: a constant series stays exact
                weighted = (old_weight * weighted + new_weight * value) / (old_weight + new_weight)
            out[row, stock] = weighted
    return out


@on_panels
def kdj(bars: Bars, n: int = 9) -> Outputs:
    """KDJ (K, D, J): K smooths RSV(n), D smooths K, J = 3K - 2D; K and D start from 50, NaN where RSV is."""
    k = seeded_smooth(np.asarray(rsv(bars, n)))
    d = seeded_smooth(k)
    return aligned(k, bars), aligned(d, bars), aligned(3 * k - 2 * d, bars)


# --- registration, in DESIGN.md's order -------------------------------------------------------------

_S = "talib.STOCH(h, l, c, 14, 3, 0, 3, 0)"
_M = "talib.MACD(c, 12, 26, 9)"
_B = "talib.BBANDS(c, 20, 2.0, 2.0, 0)"
_STOCH = {"fastk": 14, "slowk": 3, "slowd": 3}
_MACD = {"fast": 12, "slow": 26, "signal": 9}
_BBANDS = {"timeperiod": 20, "nbdev": 2.0}
_K = (
    "RSV = (c - LLV(l, 9)) / (HHV(h, 9) - LLV(l, 9)) * 100; K = 2/3 K' + 1/3 RSV; D = 2/3 D' + 1/3 K; K' = D' = 50;"
    " NaN on a flat 9-day range, where the recursion skips the day"
)

# fmt: off
# name, compute, formula, warm-up rows, history, params
INDICATORS: list[IndicatorRow] = [
    ("MA5", partial(sma, n=5), "talib.SMA(c, 5)", 4, "windowed", {"timeperiod": 5}),
    ("MA10", partial(sma, n=10), "talib.SMA(c, 10)", 9, "windowed", {"timeperiod": 10}),
    ("MA20", partial(sma, n=20), "talib.SMA(c, 20)", 19, "windowed", {"timeperiod": 20}),
    ("MA60", partial(sma, n=60), "talib.SMA(c, 60)", 59, "windowed", {"timeperiod": 60}),
    ("SMA", SameAs("MA20"), "talib.SMA(c, 20)", 19, "windowed", {"timeperiod": 20}),
    ("EMA", ema, "talib.EMA(c, 20)", 19, "recursive", {"timeperiod": 20}),
    ("WMA", wma, "talib.WMA(c, 20)", 19, "windowed", {"timeperiod": 20}),
    ("RSI14", rsi, "talib.RSI(c, 14)", 14, "recursive", {"timeperiod": 14}),
    ("STOCH_K", Output(stoch, 0), f"slowk of {_S}", 17, "windowed", _STOCH),
    ("STOCH_D", Output(stoch, 1), f"slowd of {_S}", 17, "windowed", _STOCH),
    ("WILLIAMS_R", williams_r, "talib.WILLR(h, l, c, 14)", 13, "windowed", {"timeperiod": 14}),
    ("CCI", cci, "talib.CCI(h, l, c, 20)", 19, "windowed", {"timeperiod": 20}),
    ("MOMENTUM", momentum, "talib.MOM(c, 10) = c - c[t-10]", 10, "windowed", {"timeperiod": 10}),
    ("ROC", roc, "talib.ROC(c, 10) = (c / c[t-10] - 1) * 100", 10, "windowed", {"timeperiod": 10}),
    ("MACD", Output(macd, 0), f"macd of {_M}", 33, "recursive", _MACD),
    ("MACD_SIGNAL", Output(macd, 1), f"signal of {_M}", 33, "recursive", _MACD),
    ("MACD_HIST", Output(macd, 2), f"macd - signal of {_M}", 33, "recursive", _MACD),
    ("BOLLINGER_UPPER", Output(bbands, 0), f"upper of {_B}", 19, "windowed", _BBANDS),
    ("BOLLINGER_MIDDLE", Output(bbands, 1), f"middle of {_B}", 19, "windowed", _BBANDS),
    ("BOLLINGER_LOWER", Output(bbands, 2), f"lower of {_B}", 19, "windowed", _BBANDS),
    ("SAR", sar, "talib.SAR(h, l, 0.02, 0.2)", 1, "recursive", {"acceleration": 0.02, "maximum": 0.2}),
    ("ADX", adx, "talib.ADX(h, l, c, 14)", 27, "recursive", {"timeperiod": 14}),
    ("ICHIMOKU_TENKAN", partial(midprice, n=9), "talib.MIDPRICE(h, l, 9) = (HHV(h, 9) + LLV(l, 9)) / 2", 8, "windowed",
     {"timeperiod": 9}),
    ("ICHIMOKU_KIJUN", partial(midprice, n=26), "talib.MIDPRICE(h, l, 26) = (HHV(h, 26) + LLV(l, 26)) / 2", 25,
     "windowed", {"timeperiod": 26}),
    ("ICHIMOKU_SENKOU_A", ichimoku_senkou_a, "((MIDPRICE(h, l, 9) + MIDPRICE(h, l, 26)) / 2).shift(26)", 51,
     "windowed", {"tenkan": 9, "kijun": 26, "lead": 26}),
    ("ICHIMOKU_SENKOU_B", ichimoku_senkou_b, "MIDPRICE(h, l, 52).shift(26)", 77, "windowed",
     {"window": 52, "lead": 26}),
    ("VWAP_20", vwap_tp, "sum(TP * v, 20) / sum(v, 20), TP = (h + l + c) / 3; NaN if sum(v, 20) = 0", 19, "windowed",
     {"window": 20}),
    ("OBV", obv, "talib.OBV(c, v)", 0, "cumulative", {}),
    ("AD_LINE", ad_line, "talib.AD(h, l, c, v)", 0, "cumulative", {}),
    ("VOLUME_RSI", volume_rsi, "talib.RSI(v, 14)", 14, "recursive", {"timeperiod": 14}),
    ("ATR14", atr, "talib.ATR(h, l, c, 14)", 14, "recursive", {"timeperiod": 14}),
    ("VOLATILITY", volatility, "std(c / c[t-1] - 1, 20, ddof=1)", 20, "windowed", {"window": 20, "ddof": 1}),
    ("HISTORICAL_VOLATILITY", historical_volatility, "std(ln(c / c[t-1]), 20, ddof=1) * sqrt(252)", 20, "windowed",
     {"window": 20, "ddof": 1, "annualisation": TRADING_DAYS}),
    ("KDJ_K", Output(kdj, 0), f"K of KDJ(9, 3, 3): {_K}", 8, "recursive", {"rsv": 9, "seed": KDJ_SEED}),
    ("KDJ_D", Output(kdj, 1), f"D of KDJ(9, 3, 3): {_K}", 8, "recursive", {"rsv": 9, "seed": KDJ_SEED}),
    ("KDJ_J", Output(kdj, 2), "J = 3K - 2D of KDJ(9, 3, 3), K and D as KDJ_K / KDJ_D", 8, "recursive",
     {"rsv": 9, "seed": KDJ_SEED}),
]
# fmt: on

# Stored valid rows an appended day needs to equal a full rebuild within a float32 ulp, for the
# recursions (a seed's effect fades geometrically, so no warm-up says it): the length measured by
# bench/tail_lengths.py on the CSI300 and synthetic stocks (bench/results/tail_lengths.txt), and half
# as much again. KDJ's recursion skips a flat range's days, so a long flat stretch needs more rows.
TAIL_ROWS = {
    "EMA": 300,
    "RSI14": 450,
    "MACD": 600,
    "MACD_SIGNAL": 600,
    "MACD_HIST": 600,
    "SAR": 600,
    "ADX": 900,
    "VOLUME_RSI": 450,
    "ATR14": 600,
    "KDJ_K": 600,
    "KDJ_D": 600,
    "KDJ_J": 600,
}

register_rows(FAMILY, INDICATORS, ADDED, TAIL_ROWS)
