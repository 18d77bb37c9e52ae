"""The backtest strategies: which columns each wants, and its vectorised signal or score.

A strategy names the registry columns it wants (`columns()`); the backtest loads them (from the store,
or computed by the loader's fallback) and the strategy reads them from the frame. Only a column the
registry does not have (a non-default window) is computed here, with TA-Lib on the frame's prices.
Single-stock strategies return the wanted position at each close (True = long); `MultiFactor` returns a
cross-sectional score for Qlib's `TopkDropoutStrategy` (or its replay, `topk_dropout`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import talib

from precompute_assets.consumers.loader import StockGrid
from precompute_assets.indicators.catalog import load_registry


def indicator(frame: pd.DataFrame, name: str | None, compute: Callable[[pd.Series], np.ndarray]) -> pd.Series:
    """The loaded column `name`; when the frame lacks it (or it has no registry name), `compute(close)`
    on the days with a close."""
    if name is not None and name in frame:
        return frame[name].astype(np.float64)
    close = frame["close"].dropna().astype(np.float64)
    return pd.Series(compute(close), index=close.index).reindex(frame.index)


def hold(entry: pd.Series, leave: pd.Series) -> pd.Series:
    """Long from an entry until an exit (an exit wins on a day with both); flat before the first entry."""
    state = pd.Series(np.where(leave, 0.0, np.where(entry, 1.0, np.nan)), index=entry.index)
    return state.ffill().fillna(0.0).astype(bool)


@dataclass(frozen=True)
class MaCross:
    """Long while the short moving average is above the long one (ma_diff = sma_short - sma_long > 0)."""

    short: int = 5
    long: int = 20

    def columns(self) -> list[str]:
        return [f"MA{self.short}", f"MA{self.long}"]

    def signal(self, frame: pd.DataFrame) -> pd.Series:
        sma_short = indicator(frame, f"MA{self.short}", lambda c: talib.SMA(c, self.short))
        sma_long = indicator(frame, f"MA{self.long}", lambda c: talib.SMA(c, self.long))
        ma_diff = sma_short - sma_long
        return ma_diff > 0


@dataclass(frozen=True)
class RsiTrend:
    """Buy weakness inside an uptrend: enter when RSI < entry and close > MA(trend); leave on RSI > exit or
    when the trend breaks."""

    period: int = 14
    trend: int = 60
    entry: float = 40.0
    exit: float = 70.0

    def columns(self) -> list[str]:
        return [f"RSI{self.period}", f"MA{self.trend}"]

    def signal(self, frame: pd.DataFrame) -> pd.Series:
        rsi = indicator(frame, f"RSI{self.period}", lambda c: talib.RSI(c, self.period))
        trend = indicator(frame, f"MA{self.trend}", lambda c: talib.SMA(c, self.trend))
        uptrend = frame["close"] > trend
        return hold(entry=(rsi < self.entry) & uptrend, leave=(rsi > self.exit) | ~uptrend)


@dataclass(frozen=True)
class MacdCross:
    """Long while the MACD line is above its signal line."""

    fast: int = 12
    slow: int = 26
    signal_period: int = 9

    def columns(self) -> list[str]:
        """The registry's MACD is 12/26/9; other periods are computed here."""
        return ["MACD", "MACD_SIGNAL"] if (self.fast, self.slow, self.signal_period) == (12, 26, 9) else []

    def signal(self, frame: pd.DataFrame) -> pd.Series:
        line_name, signal_name = self.columns() or (None, None)
        line = indicator(frame, line_name, lambda c: self._macd(c)[0])
        signal = indicator(frame, signal_name, lambda c: self._macd(c)[1])
        return line > signal

    def _macd(self, close: pd.Series) -> tuple[np.ndarray, ...]:
        return talib.MACD(close, fastperiod=self.fast, slowperiod=self.slow, signalperiod=self.signal_period)


@dataclass(frozen=True)
class BollingerReversion:
    """Mean reversion: enter on a close below the lower band, leave on a close above the middle band."""

    window: int = 20
    width: float = 2.0

    def columns(self) -> list[str]:
        """The registry's bands are 20 days, 2 std; other settings are computed here."""
        return ["BOLLINGER_LOWER", "BOLLINGER_MIDDLE"] if (self.window, self.width) == (20, 2.0) else []

    def signal(self, frame: pd.DataFrame) -> pd.Series:
        lower_name, middle_name = self.columns() or (None, None)
        lower = indicator(frame, lower_name, lambda c: self._bands(c)[2])
        middle = indicator(frame, middle_name, lambda c: self._bands(c)[1])
        close = frame["close"]
        return hold(entry=close < lower, leave=close > middle)

    def _bands(self, close: pd.Series) -> tuple[np.ndarray, ...]:
        return talib.BBANDS(close, timeperiod=self.window, nbdevup=self.width, nbdevdn=self.width, matype=0)


DEFAULT_FACTORS = {
    "momentum_20d": 1.0,
    "volatility_20d": -1.0,
    "volume_ma_ratio": -0.5,
    # Alpha158 columns, as a multi-factor model on this store would use them:
    "alpha_016": -1.0,  # ROC20 = close 20 days ago / close: high after a fall
    "alpha_026": -0.5,  # STD20 of close / close: low volatility
    "alpha_091": -0.5,  # CORR20 of close and log volume: price moves without volume
    "alpha_071": 0.5,  # RSV20: where the close sits in its 20-day range
    "alpha_136": -0.5,  # VSTD20: steady volume
}
"""Weights of the default multi_factor score (registry names; Qlib's Alpha158 names in the comments)."""


@dataclass(frozen=True)
class MultiFactor:
    """Weighted sum of cross-sectional z-scores of stored columns, traded as Qlib's TopkDropoutStrategy."""

    factors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FACTORS))
    topk: int = 5
    n_drop: int = 1
    benchmark: str | None = None

    def columns(self) -> list[str]:
        if not self.factors:
            raise ValueError("multi_factor needs at least one factor")
        registry = load_registry()
        return [registry.get(name).name for name in self.factors]

    def score(self, grid: StockGrid) -> np.ndarray:
        """Score per (day, stock) of the grid: the weighted sum of the z-scores a stock has that day (NaN:
        none). A z-score is against the day's mean and sample std (ddof 1) of the stocks with a value;
        none on a day with fewer than two such stocks or no spread."""
        total = np.zeros((len(grid.calendar), len(grid.codes)))
        scored = np.zeros(total.shape, dtype=bool)
        for column, weight in zip(self.columns(), self.factors.values(), strict=True):
            values = grid.columns[column].astype(np.float64)
            valid = ~np.isnan(values)
            count = valid.sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.where(valid, values, 0.0).sum(axis=1, keepdims=True) / count
                deviation = values - mean
                variance = np.where(valid, deviation * deviation, 0.0).sum(axis=1, keepdims=True) / (count - 1)
                std = np.where((count > 1) & (variance > 0), np.sqrt(variance), np.nan)
                z = deviation / std * weight
            has = ~np.isnan(z)
            total += np.where(has, z, 0.0)
            scored |= has
        return np.where(scored, total, np.nan)


STRATEGIES: dict[str, type] = {
    "ma_cross": MaCross,
    "rsi": RsiTrend,
    "macd": MacdCross,
    "bollinger": BollingerReversion,
    "multi_factor": MultiFactor,
}
