"""What a `backtest_report` asset shows: every strategy on the stored universe, metrics and an equity chart.

Plain Python, so the Dagster asset stays a thin shell: it calls `backtest_report(settings)` and puts
`metrics` and `equity_png` into its materialization metadata.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from precompute_assets.consumers.backtest import run_backtest
from precompute_assets.consumers.loader import trading_calendar
from precompute_assets.consumers.strategies import STRATEGIES
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import stored_codes

INDEX_PREFIXES = ("SH000", "SZ399")
"""Index codes (SSE 000xxx, SZSE 399xxx) are benchmarks, not tradable stocks."""


@dataclass
class BacktestReport:
    """Per strategy its metrics, the equity curves side by side, and a PNG chart of them."""

    metrics: dict[str, dict[str, float]]
    equity: pd.DataFrame
    equity_png: bytes


def backtest_report(
    settings: Settings | None = None,
    strategies: Sequence[str] = tuple(STRATEGIES),
    codes: Sequence[str] | None = None,
    years: int = 3,
) -> BacktestReport:
    """Run `strategies` with default parameters on `codes` (the stored stocks) over the last `years`."""
    settings = settings or Settings.from_env()
    codes = list(codes) if codes is not None else _stored_stocks(settings)
    calendar = trading_calendar(settings)
    start, end = calendar[max(0, len(calendar) - years * 252)], calendar[-1]
    topk = min(30, max(1, len(codes) // 5))
    metrics, curves = {}, {}
    for name in strategies:
        params = {"topk": topk, "n_drop": max(1, topk // 5)} if name == "multi_factor" else {}
        result = run_backtest(name, codes, start, end, settings=settings, **params)
        metrics[name] = result.metrics
        curves[name] = result.equity
    equity = pd.DataFrame(curves)
    return BacktestReport(metrics, equity, _chart(equity))


def _stored_stocks(settings: Settings) -> list[str]:
    return [c for c in stored_codes(StoreLayout(settings.qlib_data_path)) if not c.startswith(INDEX_PREFIXES)]


def _chart(equity: pd.DataFrame) -> bytes:
    """A PNG rendered without pyplot, so the caller's matplotlib backend and figures are untouched."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), dpi=100)
    ax = fig.subplots()
    (equity / equity.bfill().iloc[0]).plot(ax=ax, linewidth=1.2)
    ax.set_ylabel("equity (start = 1)")
    ax.set_xlabel("")
    ax.grid(alpha=0.3)
    ax.set_title("Backtests on the precomputed store")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
