"""A small long-only portfolio simulation for single-stock signals, under `MarketRules`.

The cash is split into equal sleeves, one per stock; a sleeve is all in the stock while its signal
is long and all cash otherwise. The loop runs over trades, not days: from each fill it jumps to the
next day on which the opposite order can fill (the signal wants it, the stock is not suspended or at
its limit, and for a sell the shares were bought on an earlier day: T+1). It works on row numbers;
dates, the trade table and the equity are built once at the end (boxing a Timestamp per fill cost
more than the whole loop).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.consumers.market_rules import MarketRules

TRADE_COLUMNS = ["date", "code", "side", "shares", "price", "value", "cost"]


@dataclass
class Simulation:
    """Daily portfolio value and one row per fill (shares are adjusted shares, value and cost in cash)."""

    equity: pd.Series
    trades: pd.DataFrame


def simulate(
    frames: Mapping[str, pd.DataFrame],
    wanted: Mapping[str, pd.Series],
    rules: MarketRules,
    cash: float,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> Simulation:
    """Trade each stock's `wanted` position (known at a close, filled at the next trading day's close)."""
    sleeve = cash / max(len(frames), 1)
    curves: list[tuple[np.ndarray, np.ndarray]] = []
    fills: list[tuple[str, np.ndarray, np.ndarray]] = []
    for code, frame in frames.items():
        want = wanted[code].reindex(frame.index, fill_value=False).to_numpy(bool)
        execute = np.concatenate([[False], want[:-1]])
        can_buy, can_sell = rules.tradable(
            frame["close"].to_numpy(), frame["volume"].to_numpy()
        )  # on the whole frame: the window's first day has a previous close
        window = slice(frame.index.searchsorted(start, "left"), frame.index.searchsorted(end, "right"))
        price = frame["close"].to_numpy(np.float64)[window]
        lot = rules.lot / frame["factor"].to_numpy(np.float64)[window]
        buy_days = np.flatnonzero((execute & can_buy)[window])
        sell_days = np.flatnonzero((~execute & can_sell)[window])
        equity, rows = _run_sleeve(price, lot, buy_days, sell_days, rules, sleeve)
        dates = frame.index[window].to_numpy()
        curves.append((dates, equity))
        if len(rows):
            fills.append((code, dates[rows[:, 0].astype(np.intp)], rows))
    days = np.unique(np.concatenate([d for d, _ in curves])) if curves else np.array([], "datetime64[ns]")
    if not days.size:
        return Simulation(pd.Series(dtype=np.float64, name="equity"), pd.DataFrame(columns=TRADE_COLUMNS))
    equity = pd.Series(_total(days, curves, sleeve), index=pd.DatetimeIndex(days, name="date"), name="equity")
    return Simulation(equity, _trade_table(fills))


def _run_sleeve(
    price: np.ndarray, lot: np.ndarray, buy_days: np.ndarray, sell_days: np.ndarray, rules: MarketRules, cash: float
) -> tuple[np.ndarray, np.ndarray]:
    """One sleeve's equity per row, and its fills as rows of (row number, side (1 buy, 0 sell), shares,
    price, value, cost). The loop uses Python lists and `bisect`: numpy's per-call overhead on scalars
    was most of its time."""
    closes, lots, buys, sells = price.tolist(), lot.tolist(), buy_days.tolist(), sell_days.tolist()
    fills: list[tuple[int, int, float, float, float, float]] = []
    initial, shares, day = cash, 0.0, 0
    while True:
        days = sells if shares else buys
        k = bisect.bisect_left(days, day)
        if k == len(days):
            break
        day = days[k]
        close = closes[day]
        if shares:
            value = shares * close
            cost = rules.cost(value, sell=True)
            fills.append((day, 0, shares, close, value, cost))
            cash += value - cost
            shares = 0.0
        else:
            bought = _affordable(cash, close, lots[day], rules)
            if bought:
                value = bought * close
                cost = rules.cost(value, sell=False)
                fills.append((day, 1, bought, close, value, cost))
                cash -= value + cost
                shares = bought
        day += 1  # T+1: the earliest sell of today's buy is the next trading day
    rows = np.array(fills, dtype=np.float64).reshape(-1, 6)
    day_of, bought_on = rows[:, 0].astype(np.intp), rows[:, 1] == 1
    cash_delta, share_delta = np.zeros(len(price)), np.zeros(len(price))
    cash_delta[day_of] = np.where(bought_on, -(rows[:, 4] + rows[:, 5]), rows[:, 4] - rows[:, 5])
    share_delta[day_of] = np.where(bought_on, rows[:, 2], -rows[:, 2])  # at most one fill a day (T+1)
    marked = np.nan_to_num(_ffill(price), nan=0.0)
    return initial + np.cumsum(cash_delta) + np.cumsum(share_delta) * marked, rows


def _affordable(cash: float, price: float, lot: float, rules: MarketRules) -> float:
    """The most whole lots (in adjusted shares) that cash pays for, cost included."""
    lots = math.floor(cash / (price * lot * (1 + rules.commission)))
    while lots > 0 and lots * lot * price + rules.cost(lots * lot * price, sell=False) > cash:
        lots -= 1
    return lots * lot


def _ffill(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last value before it (leading NaNs stay)."""
    last = np.maximum.accumulate(np.where(np.isnan(values), 0, np.arange(len(values))))
    return values[last]


def _total(days: np.ndarray, curves: list[tuple[np.ndarray, np.ndarray]], sleeve: float) -> np.ndarray:
    """Sum of the sleeves on `days`: a sleeve keeps its last value after its stock's last row and is
    cash before its first; added one sleeve after the other, in order."""
    total = np.zeros(len(days))
    for dates, equity in curves:
        column = np.full(len(days), np.nan)
        column[np.searchsorted(days, dates)] = equity
        total += np.nan_to_num(_ffill(column), nan=sleeve)
    return total


def _trade_table(fills: list[tuple[str, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    if not fills:
        return pd.DataFrame(columns=TRADE_COLUMNS)
    rows = np.concatenate([r for _, _, r in fills])
    trades = pd.DataFrame(
        {
            "date": np.concatenate([d for _, d, _ in fills]),
            "code": np.repeat([c for c, _, _ in fills], [len(r) for _, _, r in fills]).astype(object),
            "side": np.where(rows[:, 1] == 1, "buy", "sell").astype(object),
            "shares": rows[:, 2],
            "price": rows[:, 3],
            "value": rows[:, 4],
            "cost": rows[:, 5],
        }
    )
    return trades.sort_values(["date", "code"], kind="stable").reset_index(drop=True)
