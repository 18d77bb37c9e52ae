"""Backtest metrics from the equity curve and the fills, the same formulas for every engine.

- total_return: final value / initial cash - 1; annual_return: compounded over 252 trading days a year;
- sharpe: mean / std (ddof=1) of daily returns * sqrt(252), risk-free rate 0 (0 when flat);
- max_drawdown: the deepest fall from a running peak (<= 0), the initial cash counting as a peak;
- win_rate: share of sells that realised a profit after costs, against the average cost of the
  shares sold (0 when nothing was sold);
- turnover: traded value (buys + sells) over the mean portfolio value; trades: number of fills.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd

TRADING_DAYS = 252
RATIOS = ("total_return", "annual_return", "sharpe", "max_drawdown", "win_rate", "turnover")


def performance(equity: pd.Series, trades: pd.DataFrame, initial: float) -> dict[str, float]:
    """The metrics of one backtest (all 0 for an empty period)."""
    values = equity.to_numpy(np.float64)
    if values.size == 0:
        return {**dict.fromkeys(RATIOS, 0.0), "trades": 0}
    path = np.concatenate([[initial], values])
    returns = path[1:] / path[:-1] - 1
    total = values[-1] / initial - 1
    std = returns.std(ddof=1) if returns.size > 1 else 0.0
    return {
        "total_return": float(total),
        "annual_return": float((1 + total) ** (TRADING_DAYS / values.size) - 1) if total > -1 else -1.0,
        "sharpe": float(returns.mean() / std * math.sqrt(TRADING_DAYS)) if std > 0 else 0.0,
        "max_drawdown": float((path / np.maximum.accumulate(path) - 1).min()),
        "win_rate": _win_rate(trades),
        "turnover": float(trades["value"].sum() / values.mean()) if len(trades) else 0.0,
        "trades": len(trades),
    }


def _win_rate(trades: pd.DataFrame) -> float:
    """Average-cost bookkeeping per stock: engines may sell part of a position (Qlib's rounding)."""
    held: dict[str, float] = defaultdict(float)
    paid: dict[str, float] = defaultdict(float)
    wins = sells = 0
    columns = (trades[name].tolist() for name in ("code", "side", "shares", "value", "cost"))  # no dates boxed
    for code, side, shares, value, cost in zip(*columns, strict=True):
        if side == "buy":
            held[code] += shares
            paid[code] += value + cost
            continue
        basis = paid[code] * shares / held[code] if held[code] else 0.0
        wins += value - cost > basis
        sells += 1
        paid[code] -= basis
        held[code] -= shares
    return wins / sells if sells else 0.0
