"""A small long-only portfolio simulation for single-stock signals, under `MarketRules`.

The cash is split into equal sleeves, one per stock; a sleeve is all in the stock while its signal
is long and all cash otherwise. The loop runs over trades, not days: from each fill it jumps to the
next day on which the opposite order can fill (the signal wants it, the stock is not suspended or at
its limit, and for a sell the shares were bought on an earlier day: T+1). Equity is then vectorised.
"""

from __future__ import annotations

import functools
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
    sleeves, fills = [], []
    for code, frame in frames.items():
        want = wanted[code].reindex(frame.index, fill_value=False).to_numpy(bool)
        execute = np.concatenate([[False], want[:-1]])
        can_buy, can_sell = rules.tradable(frame)  # on the whole frame: the window's first day has a previous close
        window = slice(frame.index.searchsorted(start, "left"), frame.index.searchsorted(end, "right"))
        equity, trades = _run_sleeve(
            code, frame.iloc[window], execute[window], can_buy[window], can_sell[window], rules, sleeve
        )
        sleeves.append(equity)
        fills.extend(trades)
    days = functools.reduce(pd.Index.union, (s.index for s in sleeves), pd.DatetimeIndex([], name="date"))
    if days.empty:
        return Simulation(pd.Series(dtype=np.float64, name="equity"), pd.DataFrame(columns=TRADE_COLUMNS))
    total = sum(s.reindex(days).ffill().fillna(sleeve) for s in sleeves).rename("equity")
    trades = pd.DataFrame(fills, columns=TRADE_COLUMNS).sort_values(["date", "code"], kind="stable")
    return Simulation(total, trades.reset_index(drop=True))


def _run_sleeve(
    code: str,
    frame: pd.DataFrame,
    execute: np.ndarray,
    can_buy: np.ndarray,
    can_sell: np.ndarray,
    rules: MarketRules,
    cash: float,
) -> tuple[pd.Series, list[tuple]]:
    price = frame["close"].to_numpy(np.float64)
    factor = frame["factor"].to_numpy(np.float64)
    buy_days = np.flatnonzero(execute & can_buy)
    sell_days = np.flatnonzero(~execute & can_sell)
    cash_delta = np.zeros(len(frame))
    share_delta = np.zeros(len(frame))
    fills: list[tuple] = []
    initial, shares, day = cash, 0.0, 0
    while True:
        days = sell_days if shares else buy_days
        k = int(np.searchsorted(days, day))
        if k == len(days):
            break
        day = int(days[k])
        if shares:
            value = shares * price[day]
            cost = rules.cost(value, sell=True)
            fills.append((frame.index[day], code, "sell", shares, price[day], value, cost))
            cash_delta[day] += value - cost
            share_delta[day] -= shares
            cash += value - cost
            shares = 0.0
        else:
            bought = _affordable(cash, price[day], rules.lot / factor[day], rules)
            if bought:
                value = bought * price[day]
                cost = rules.cost(value, sell=False)
                fills.append((frame.index[day], code, "buy", bought, price[day], value, cost))
                cash_delta[day] -= value + cost
                share_delta[day] += bought
                cash -= value + cost
                shares = bought
        day += 1  # T+1: the earliest sell of today's buy is the next trading day
    held = np.cumsum(share_delta)
    marked = pd.Series(price, index=frame.index).ffill().fillna(0.0).to_numpy()
    equity = initial + np.cumsum(cash_delta) + held * marked
    return pd.Series(equity, index=frame.index), fills


def _affordable(cash: float, price: float, lot: float, rules: MarketRules) -> float:
    """The most whole lots (in adjusted shares) that cash pays for, cost included."""
    lots = math.floor(cash / (price * lot * (1 + rules.commission)))
    while lots > 0 and lots * lot * price + rules.cost(lots * lot * price, sell=False) > cash:
        lots -= 1
    return lots * lot
