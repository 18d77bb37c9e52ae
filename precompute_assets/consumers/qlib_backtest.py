"""Run a score through Qlib's own daily backtest with `TopkDropoutStrategy`, under `MarketRules`.

Qlib's exchange reads prices with `D.features`, so it needs a Qlib data directory: the store itself
when the prices came from it, else `staging.staged_qlib_dir` of the loaded frames (the same float32
values on the same calendar), so both give the same backtest. The benchmark is the
universe's equal-weighted daily return, given to Qlib as a series: in Qlib 0.9.7 `benchmark=None`
silently means SH000300, which a store need not hold. Qlib's global configuration is restored after.
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

PRICE_FIELDS = ("open", "high", "low", "close", "volume", "factor")


class RecordingExecutor(SimulatorExecutor):
    """Qlib's daily simulator, keeping every fill: Qlib reports positions and totals, not fills."""

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


def run_topk_dropout(
    score: pd.Series,
    provider_uri: Path,
    codes: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    rules: MarketRules,
    cash: float,
    topk: int,
    n_drop: int,
    benchmark: pd.Series,
) -> Simulation:
    """Hold the `topk` best-scored stocks, replacing up to `n_drop` a day (scores of day t trade on t+1).

    Qlib needs the day after a step, so the run ends no later than the calendar's second-to-last day.
    """
    with kept_qlib_config(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)  # Qlib's indicators, idle days
        init_store_qlib(provider_uri)
        end = min(end, D.calendar()[-2])
        executor = RecordingExecutor(time_per_step="day", generate_portfolio_metrics=True)
        portfolio, _ = backtest(
            start_time=start,
            end_time=end,
            strategy=TopkDropoutStrategy(signal=score, topk=topk, n_drop=n_drop),
            executor=executor,
            benchmark=benchmark,
            account=cash,
            exchange_kwargs={"codes": codes, "freq": "day", **rules.qlib_exchange_kwargs()},
        )
    report = portfolio["1day"][0]
    equity = report["account"].astype(np.float64).rename("equity").rename_axis("date")
    trades = pd.DataFrame(executor.fills, columns=TRADE_COLUMNS).sort_values(["date", "code"], kind="stable")
    return Simulation(equity, trades.reset_index(drop=True))


def equal_weight_benchmark(frames: Mapping[str, pd.DataFrame]) -> pd.Series:
    """Mean close-to-close return of the stocks trading each day (0 on a day none does)."""
    closes = pd.DataFrame({code: frame["close"] for code, frame in frames.items()}).astype(np.float64)
    return (closes / closes.shift(1) - 1).mean(axis=1).fillna(0.0)
