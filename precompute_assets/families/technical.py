"""Technical indicators: TA-Lib where it has them, pandas for the Chinese-software ones it lacks.

Every compute takes one stock's valid bars (float64, ascending dates, no missing days) and returns one
column aligned to them. TA-Lib values come from TA-Lib itself, with its own warm-up NaNs; the pandas
ones use rolling windows with min_periods = window, so their warm-up rows are NaN too. Nothing looks
forward: the only shift is Ichimoku's senkou spans, shifted +26 (the cloud drawn at t, known at t - 26).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
import talib

from precompute_assets.families.base import IndicatorRow, register_rows

FAMILY = "technical"
ADDED = "2026-11-25"
TRADING_DAYS = 252
KDJ_SEED = 50.0

Outputs = tuple[pd.Series, ...]


def _col(bars: pd.DataFrame, name: str) -> pd.Series:
    """One input column as float64: TA-Lib accepts nothing else."""
    return bars[name].astype(np.float64)


def _hlc(bars: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    return _col(bars, "high"), _col(bars, "low"), _col(bars, "close")


def _output(fn: Callable[[pd.DataFrame], Outputs], index: int, bars: pd.DataFrame) -> pd.Series:
    """One column of a multi-output indicator (MACD, BBANDS, STOCH, KDJ) as a compute of its own."""
    return fn(bars)[index]


# --- TA-Lib ---------------------------------------------------------------------------------------


def sma(bars: pd.DataFrame, n: int) -> pd.Series:
    """Simple moving average of close."""
    return talib.SMA(_col(bars, "close"), timeperiod=n)


def ema(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """Exponential moving average of close, seeded with the SMA of the first n closes (TA-Lib)."""
    return talib.EMA(_col(bars, "close"), timeperiod=n)


def wma(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """Linearly weighted moving average of close: recent days weigh more."""
    return talib.WMA(_col(bars, "close"), timeperiod=n)


def rsi(bars: pd.DataFrame, n: int = 14) -> pd.Series:
    """Wilder's relative strength index of close."""
    return talib.RSI(_col(bars, "close"), timeperiod=n)


def volume_rsi(bars: pd.DataFrame, n: int = 14) -> pd.Series:
    """Wilder's RSI applied to volume: is volume rising or falling."""
    return talib.RSI(_col(bars, "volume"), timeperiod=n)


def stoch(bars: pd.DataFrame) -> Outputs:
    """Slow stochastic (%K, %D): where close sits in the 14-day range, smoothed twice by SMA(3)."""
    return talib.STOCH(*_hlc(bars), fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0)


def williams_r(bars: pd.DataFrame, n: int = 14) -> pd.Series:
    """Williams %R: close against the n-day high, in -100..0."""
    return talib.WILLR(*_hlc(bars), timeperiod=n)


def cci(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """Commodity channel index: typical price's distance from its mean, in mean deviations / 0.015."""
    return talib.CCI(*_hlc(bars), timeperiod=n)


def momentum(bars: pd.DataFrame, n: int = 10) -> pd.Series:
    """Close minus the close n days ago."""
    return talib.MOM(_col(bars, "close"), timeperiod=n)


def roc(bars: pd.DataFrame, n: int = 10) -> pd.Series:
    """Rate of change in percent: (close / close n days ago - 1) * 100."""
    return talib.ROC(_col(bars, "close"), timeperiod=n)


def macd(bars: pd.DataFrame) -> Outputs:
    """MACD line, signal and histogram (= line - signal, not doubled), 12/26/9."""
    return talib.MACD(_col(bars, "close"), fastperiod=12, slowperiod=26, signalperiod=9)


def bbands(bars: pd.DataFrame) -> Outputs:
    """Bollinger upper, middle, lower: SMA(20) +- 2 population standard deviations."""
    return talib.BBANDS(_col(bars, "close"), timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)


def sar(bars: pd.DataFrame) -> pd.Series:
    """Parabolic SAR, acceleration 0.02 up to 0.2."""
    return talib.SAR(_col(bars, "high"), _col(bars, "low"), acceleration=0.02, maximum=0.2)


def adx(bars: pd.DataFrame, n: int = 14) -> pd.Series:
    """Average directional index: trend strength, whatever its direction."""
    return talib.ADX(*_hlc(bars), timeperiod=n)


def atr(bars: pd.DataFrame, n: int = 14) -> pd.Series:
    """Average true range, Wilder-smoothed."""
    return talib.ATR(*_hlc(bars), timeperiod=n)


def obv(bars: pd.DataFrame) -> pd.Series:
    """On-balance volume: volume added on up days, subtracted on down days, from the first bar."""
    return talib.OBV(_col(bars, "close"), _col(bars, "volume"))


def ad_line(bars: pd.DataFrame) -> pd.Series:
    """Chaikin accumulation/distribution line: volume weighted by close's place in the day's range."""
    return talib.AD(*_hlc(bars), _col(bars, "volume"))


def midprice(bars: pd.DataFrame, n: int) -> pd.Series:
    """(n-day highest high + n-day lowest low) / 2: Ichimoku's building block."""
    return talib.MIDPRICE(_col(bars, "high"), _col(bars, "low"), timeperiod=n)


# --- pandas ---------------------------------------------------------------------------------------


def ichimoku_senkou_a(bars: pd.DataFrame, lead: int = 26) -> pd.Series:
    """Leading span A shown at t: (tenkan + kijun) / 2 as of t - lead, so only past data."""
    return ((midprice(bars, 9) + midprice(bars, 26)) / 2).shift(lead)


def ichimoku_senkou_b(bars: pd.DataFrame, lead: int = 26) -> pd.Series:
    """Leading span B shown at t: the 52-day midprice as of t - lead."""
    return midprice(bars, 52).shift(lead)


def vwap_tp(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """n-day volume-weighted typical price sum(TP * V) / sum(V), TP = (h + l + c) / 3; NaN if no volume."""
    high, low, close = _hlc(bars)
    volume = _col(bars, "volume")
    traded = ((high + low + close) / 3 * volume).rolling(n, min_periods=n).sum()
    return traded / volume.rolling(n, min_periods=n).sum()


def volatility(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """Sample std (ddof=1) of daily simple returns over n days, not annualised."""
    close = _col(bars, "close")
    return (close / close.shift(1) - 1).rolling(n, min_periods=n).std()


def historical_volatility(bars: pd.DataFrame, n: int = 20) -> pd.Series:
    """Annualised sample std (ddof=1) of daily log returns over n days."""
    close = _col(bars, "close")
    return np.log(close / close.shift(1)).rolling(n, min_periods=n).std() * np.sqrt(TRADING_DAYS)


def rsv(bars: pd.DataFrame, n: int = 9) -> pd.Series:
    """Raw stochastic value (close - LLV(low, n)) / (HHV(high, n) - LLV(low, n)) * 100; NaN on a flat range."""
    high, low, close = _hlc(bars)
    lowest = low.rolling(n, min_periods=n).min()
    return (close - lowest) / (high.rolling(n, min_periods=n).max() - lowest) * 100


def seeded_smooth(x: pd.Series, seed: float = KDJ_SEED) -> pd.Series:
    """y = 2/3 y' + 1/3 x with y' = seed before x's first value (KDJ's SMA(x, 3, 1)).

    Where x is undefined (a flat 9-day range, e.g. a long suspension) y is NaN too, and the recursion
    skips that day and carries on from the last y. Exact recursion via ewm on [seed, x...] (adjust=False,
    NaN skipped).
    """
    seeded = pd.concat([pd.Series([seed]), pd.Series(x.to_numpy(np.float64))], ignore_index=True)
    smoothed = seeded.ewm(alpha=1 / 3, adjust=False, ignore_na=True).mean().to_numpy()[1:]
    return pd.Series(smoothed, index=x.index).where(x.notna())


def kdj(bars: pd.DataFrame, n: int = 9) -> Outputs:
    """KDJ (K, D, J): K smooths RSV(n), D smooths K, J = 3K - 2D; K and D start from 50, NaN where RSV is."""
    raw = rsv(bars, n)
    k = seeded_smooth(raw)
    d = seeded_smooth(k)
    return k, d, 3 * k - 2 * d


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
    ("SMA", partial(sma, n=20), "talib.SMA(c, 20)", 19, "windowed", {"timeperiod": 20}),
    ("EMA", ema, "talib.EMA(c, 20)", 19, "recursive", {"timeperiod": 20}),
    ("WMA", wma, "talib.WMA(c, 20)", 19, "windowed", {"timeperiod": 20}),
    ("RSI14", rsi, "talib.RSI(c, 14)", 14, "recursive", {"timeperiod": 14}),
    ("STOCH_K", partial(_output, stoch, 0), f"slowk of {_S}", 17, "windowed", _STOCH),
    ("STOCH_D", partial(_output, stoch, 1), f"slowd of {_S}", 17, "windowed", _STOCH),
    ("WILLIAMS_R", williams_r, "talib.WILLR(h, l, c, 14)", 13, "windowed", {"timeperiod": 14}),
    ("CCI", cci, "talib.CCI(h, l, c, 20)", 19, "windowed", {"timeperiod": 20}),
    ("MOMENTUM", momentum, "talib.MOM(c, 10) = c - c[t-10]", 10, "windowed", {"timeperiod": 10}),
    ("ROC", roc, "talib.ROC(c, 10) = (c / c[t-10] - 1) * 100", 10, "windowed", {"timeperiod": 10}),
    ("MACD", partial(_output, macd, 0), f"macd of {_M}", 33, "recursive", _MACD),
    ("MACD_SIGNAL", partial(_output, macd, 1), f"signal of {_M}", 33, "recursive", _MACD),
    ("MACD_HIST", partial(_output, macd, 2), f"macd - signal of {_M}", 33, "recursive", _MACD),
    ("BOLLINGER_UPPER", partial(_output, bbands, 0), f"upper of {_B}", 19, "windowed", _BBANDS),
    ("BOLLINGER_MIDDLE", partial(_output, bbands, 1), f"middle of {_B}", 19, "windowed", _BBANDS),
    ("BOLLINGER_LOWER", partial(_output, bbands, 2), f"lower of {_B}", 19, "windowed", _BBANDS),
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
    ("KDJ_K", partial(_output, kdj, 0), f"K of KDJ(9, 3, 3): {_K}", 8, "recursive", {"rsv": 9, "seed": KDJ_SEED}),
    ("KDJ_D", partial(_output, kdj, 1), f"D of KDJ(9, 3, 3): {_K}", 8, "recursive", {"rsv": 9, "seed": KDJ_SEED}),
    ("KDJ_J", partial(_output, kdj, 2), "J = 3K - 2D of KDJ(9, 3, 3), K and D as KDJ_K / KDJ_D", 8, "recursive",
     {"rsv": 9, "seed": KDJ_SEED}),
]
# fmt: on

register_rows(FAMILY, INDICATORS, ADDED)
