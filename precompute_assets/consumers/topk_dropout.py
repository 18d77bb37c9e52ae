"""Qlib's `TopkDropoutStrategy` daily backtest, replayed on numpy arrays instead of Qlib's objects.

Qlib's loop (strategy, `SimulatorExecutor`, `Exchange`, `Account`) spends its time in per-call lookups
and copies, far more than reading the store costs, which buries the store's gain. This replays the same
rules with Qlib's own arithmetic (the tests compare it with Qlib's backtest on real data), with
Qlib 0.9.7's defaults: `method_sell="bottom"`, `method_buy="top"`, `hold_thresh=1`,
`only_tradable=False`, `forbid_all_trade_at_limit=True`, `risk_degree=0.95`, serial orders, no volume
limit, no impact cost. Each day t:

- scores of day t-1 rank the stocks; `today` = the best unheld ones, `n_drop + topk - held` of them;
  the `n_drop` lowest of held + `today` that are held are sold (all held when `n_drop` is 0, as Qlib's
  `[-0:]` slice does), and `today[:sold + topk - held]` are bought;
- a stock trades only when it is open and at neither limit; a sale is the whole holding, and the buy
  budget is 95% of the cash after sales, split evenly and rounded down to lots (`MarketRules`);
- orders fill at the close; when cash runs short a buy shrinks to what it pays for, cost included;
- the day's value is cash plus each holding at its last close.

Where Qlib's order is arbitrary (it iterates holdings as a Python set) stocks go in code order, so
the last bits of a sum may differ from a Qlib run; held stocks without a score rank last, by code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.consumers.loader import StockGrid
from precompute_assets.consumers.market_rules import MarketRules
from precompute_assets.consumers.portfolio import TRADE_COLUMNS, Simulation

RISK_DEGREE = 0.95


@dataclass
class Market:
    """Per (day, stock) on the calendar: close, factor, and whether a buy / a sell may fill."""

    calendar: pd.DatetimeIndex
    codes: list[str]
    close: np.ndarray
    factor: np.ndarray
    can_buy: np.ndarray
    can_sell: np.ndarray

    continues: bool
    """Whether the trading calendar has a day after `calendar[-1]` (a day's orders need the next day)."""

    @classmethod
    def from_grid(cls, grid: StockGrid, rules: MarketRules, continues: bool) -> Market:
        """A grid with close, volume and factor; days a stock has no close are suspended days."""
        close = grid.columns["close"]
        can_buy, can_sell = rules.tradable(close, grid.columns["volume"])
        factor = grid.columns["factor"].astype(np.float64)
        return cls(grid.calendar, list(grid.codes), close.astype(np.float64), factor, can_buy, can_sell, continues)


def run_topk_dropout(
    scores: np.ndarray,
    market: Market,
    start: pd.Timestamp,
    end: pd.Timestamp,
    rules: MarketRules,
    cash: float,
    topk: int,
    n_drop: int,
) -> Simulation:
    """Trade the days of [start, end] that have a next day; `scores` is (day x stock) on the market's
    calendar and codes, NaN for none."""
    first = int(market.calendar.searchsorted(start, "left"))
    last = len(market.calendar) - (0 if market.continues else 1)  # each day needs a next
    stop = min(int(market.calendar.searchsorted(end, "right")), last)
    days = range(first, max(stop, first))
    window = slice(days.start, days.stop)
    by_lots = not (np.isnan(market.factor[window]) & ~np.isnan(market.close[window])).any()  # else Qlib ignores lots
    book = _Book(rules, cash, by_lots)
    equity = np.empty(len(days))
    for k, day in enumerate(days):
        if day > 0:
            book.trade(market, day, scores[day - 1], topk, n_drop)
        book.mark(market, day)
        equity[k] = book.value()
    index = market.calendar[window].rename("date")
    return Simulation(pd.Series(equity, index=index, name="equity"), _trade_table(book.fills, market))


def _trade_table(fills: list[tuple], market: Market) -> pd.DataFrame:
    if not fills:
        return pd.DataFrame(columns=TRADE_COLUMNS)
    trades = pd.DataFrame(fills, columns=TRADE_COLUMNS)
    trades["date"] = market.calendar[trades["date"].to_numpy(np.intp)]
    trades["code"] = np.array(market.codes, dtype=object)[trades["code"].to_numpy(np.intp)]
    return trades.sort_values(["date", "code"], kind="stable").reset_index(drop=True)


class _Book:
    """Cash, holdings (stock -> adjusted shares, last price) and fills, updated as Qlib's Position is."""

    def __init__(self, rules: MarketRules, cash: float, by_lots: bool) -> None:
        self.rules, self.cash, self.by_lots = rules, float(cash), by_lots
        self.amount: dict[int, float] = {}
        self.price: dict[int, float] = {}
        self.fills: list[tuple] = []

    def trade(self, market: Market, day: int, score: np.ndarray, topk: int, n_drop: int) -> None:
        scored = ~np.isnan(score)
        if not scored.any():
            return  # Qlib: no signal that day, no orders
        held = sorted(self.amount)
        unheld = scored.copy()
        unheld[held] = False
        unheld = np.flatnonzero(unheld)
        today = list(_descending(unheld, score[unheld]))[: n_drop + topk - len(held)]
        if not today:
            pool = _descending(np.array(held, dtype=np.intp), score[held])
        else:
            pool = np.array(sorted(held + today) if held else today, dtype=np.intp)
        sell = set(held) & set(_descending(pool, score[pool])[-n_drop:].tolist())
        buy = today[: len(sell) + topk - len(held)]
        both = market.can_buy[day] & market.can_sell[day]  # forbid_all_trade_at_limit
        close = market.close[day]
        for j in held:
            if j in sell and both[j]:
                self._sell(day, j, float(close[j]))
        value = self.cash * RISK_DEGREE / len(buy) if buy else 0.0
        for j in buy:
            if both[j]:
                self._buy(day, j, float(close[j]), float(market.factor[day, j]), value)

    def mark(self, market: Market, day: int) -> None:
        """Holdings not suspended today take today's close."""
        close = market.close[day]
        for j in self.amount:
            price = float(close[j])
            if price == price:  # not NaN
                self.price[j] = price

    def value(self) -> float:
        stocks = 0.0
        for j in sorted(self.amount):
            stocks += self.amount[j] * self.price[j]
        return stocks + self.cash

    def _sell(self, day: int, j: int, price: float) -> None:
        shares = self.amount[j]
        value = shares * price
        cost = self.rules.cost(value, sell=True)
        if self.cash + value < cost:
            return  # Qlib: the sale could not pay its cost
        self._fill(day, j, "sell", shares, price, value, cost)
        self.cash += value - cost
        del self.amount[j], self.price[j]

    def _buy(self, day: int, j: int, price: float, factor: float, budget: float) -> None:
        """The strategy's order (budget / price in lots), then the executor's fill of it."""
        rules = self.rules
        shares = self._round(budget / price, factor)
        value = shares * price
        if self.cash < rules.cost(value, sell=False):
            return
        cash_short = self.cash < value + rules.cost(value, sell=False)
        shares = self._round(min(self._affordable(price, rules.commission), shares) if cash_short else shares, factor)
        value = shares * price
        cost = rules.cost(value, sell=False)
        if value <= 1e-5:
            return
        self._fill(day, j, "buy", shares, price, value, cost)
        self.amount[j] = self.amount.get(j, 0.0) + value / price
        self.price[j] = price
        self.cash -= value + cost

    def _affordable(self, price: float, rate: float) -> float:
        """Qlib's `_get_buy_amount_by_cash_limit`."""
        min_cost = self.rules.min_cost
        if self.cash < min_cost:
            return 0.0
        if self.cash >= min_cost / rate + min_cost:
            return self.cash / (1 + rate) / price
        return (self.cash - min_cost) / price

    def _round(self, shares: float, factor: float) -> float:
        """Down to whole lots of real shares; 0.1 absorbs float error, as in Qlib."""
        if not self.by_lots:
            return shares
        lot = self.rules.lot
        return float((shares * factor + 0.1) // lot * lot / factor)

    def _fill(self, day: int, j: int, side: str, shares: float, price: float, value: float, cost: float) -> None:
        self.fills.append((day, j, side, shares, price, value, cost))


def _descending(items: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`items` by value, highest first, NaN last in their given order: pandas' `sort_values(ascending=False)`
    step for step (its quicksort breaks ties the same way)."""
    nan = np.isnan(values)
    kept, kept_values = items[~nan][::-1], values[~nan][::-1]
    return np.concatenate([kept[np.argsort(kept_values, kind="quicksort")][::-1], items[nan]])
