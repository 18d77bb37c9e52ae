"""multi_factor's `engine="qlib"`: Qlib's own daily backtest with `TopkDropoutStrategy`.

Qlib's `SimulatorExecutor` on a Qlib data directory (the store, or the frames staged in the store's
format when their prices were computed from the input), with `MarketRules` given to Qlib's exchange,
keeping every fill (Qlib reports positions and totals, not fills). The benchmark is the universe's equal-weighted daily
return: in Qlib 0.9.7 `benchmark=None` silently means SH000300, which a store need not hold. Qlib's
global configuration is restored after.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from qlib.backtest import backtest
from qlib.backtest.decision import BaseTradeDecision, Order
from qlib.backtest.executor import SimulatorExecutor
from qlib.contrib.strategy import TopkDropoutStrategy
from qlib.data import D

from precompute_assets.consumers.market_rules import MarketRules
from precompute_assets.consumers.portfolio import TRADE_COLUMNS, Simulation
from precompute_assets.consumers.qlib_session import init_store_qlib, kept_qlib_config


class RecordingExecutor(SimulatorExecutor):
    """Qlib's daily simulator, keeping every fill."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fills: list[tuple] = []

    def _collect_data(self, trade_decision: BaseTradeDecision, level: int = 0) -> tuple[list, dict]:
        execute_result, info = super()._collect_data(trade_decision, level)
        for order, value, cost, price in execute_result:
            if order.deal_amount > 0:
                side = "buy" if order.direction == Order.BUY else "sell"
                self.fills.append((order.start_time, order.stock_id, side, order.deal_amount, price, value, cost))
        return execute_result, info


def qlib_topk_dropout(
    scores: pd.DataFrame,
    frames: Mapping[str, pd.DataFrame],
    store: Path,
    start: pd.Timestamp,
    end: pd.Timestamp,
    rules: MarketRules,
    cash: float,
    topk: int,
    n_drop: int,
) -> Simulation:
    """Qlib's backtest of `scores` (date x code) over the `frames`' stocks, prices read from `store`."""
    signal = scores.stack(future_stack=True).dropna().rename("score").rename_axis(["datetime", "instrument"])
    closes = pd.DataFrame({code: frame["close"] for code, frame in frames.items()}).astype(np.float64)
    benchmark = (closes / closes.shift(1) - 1).mean(axis=1).fillna(0.0)
    with kept_qlib_config(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)  # Qlib's indicators, idle days
        init_store_qlib(store)
        executor = RecordingExecutor(time_per_step="day", generate_portfolio_metrics=True)
        portfolio, _ = backtest(
            start_time=start,
            end_time=min(end, D.calendar()[-2]),  # Qlib needs the day after a step
            strategy=TopkDropoutStrategy(signal=signal, topk=topk, n_drop=n_drop),
            executor=executor,
            benchmark=benchmark,
            account=cash,
            exchange_kwargs={"codes": sorted(frames), "freq": "day", **rules.qlib_exchange_kwargs()},
        )
    equity = portfolio["1day"][0]["account"].astype(np.float64).rename("equity").rename_axis("date")
    trades = pd.DataFrame(executor.fills, columns=TRADE_COLUMNS).sort_values(["date", "code"], kind="stable")
    return Simulation(equity, trades.reset_index(drop=True))
