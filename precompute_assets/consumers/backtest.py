"""`run_backtest`: load the strategy's columns (store first), generate signals, simulate, measure.

Single-stock strategies run through `portfolio.simulate`; `multi_factor` through `topk_dropout`, a
replay of Qlib's `TopkDropoutStrategy` on arrays that gives Qlib's fills (`engine="replay"`, the
default: Qlib's own loop costs many times the rest of the backtest, so it would hide what the store
saves), or through Qlib's own backtest with `TopkDropoutStrategy` (`engine="qlib"`). Both apply
the same `MarketRules` and the same `metrics.performance`, and with `use_precomputed=False` every
column is computed from the input instead of read from the store, which gives the same frames and
therefore the same trades and metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from precompute_assets.consumers.loader import (
    grid_of_frames,
    load_grid,
    load_multiple_stocks_with_indicators,
    trading_calendar,
)
from precompute_assets.consumers.market_rules import MarketRules
from precompute_assets.consumers.metrics import performance
from precompute_assets.consumers.portfolio import Simulation, simulate
from precompute_assets.consumers.qlib_backtest import qlib_topk_dropout
from precompute_assets.consumers.staging import staged_qlib_dir
from precompute_assets.consumers.strategies import STRATEGIES, MultiFactor
from precompute_assets.consumers.topk_dropout import Market, run_topk_dropout
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.input.codes import canonical_code
from precompute_assets.settings import Settings

RULE_PARAMS = {f.name for f in dataclasses.fields(MarketRules)}
ENGINES = ("qlib", "replay")
PRICE_FIELDS = ("open", "high", "low", "close", "volume", "factor")


@dataclass
class BacktestResult:
    """Daily portfolio value, one row per fill, the metrics, and where each stock's columns came from."""

    strategy: str
    equity: pd.Series
    trades: pd.DataFrame
    metrics: dict[str, float]
    sources: dict[str, dict]


def run_backtest(
    strategy: str,
    codes: Iterable[str],
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    use_precomputed: bool = True,
    *,
    settings: Settings | None = None,
    cash: float = 10_000_000.0,
    engine: str = "replay",
    **params: object,
) -> BacktestResult:
    """Backtest `strategy` (one of `STRATEGIES`) on `codes` over [start, end].

    `params` are the strategy's own (e.g. `short=5, long=20` for ma_cross, `topk`, `n_drop`, `factors`
    for multi_factor) and any `MarketRules` field (`commission`, `stamp_duty`, `min_cost`, `lot`,
    `limit_threshold`). Signals use each stock's whole history up to `end`, so trading starts warm.
    `engine` is multi_factor's: "replay" (Qlib's TopkDropout fills, on arrays) or "qlib" (Qlib's own backtest).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {sorted(STRATEGIES)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; one of {ENGINES}")
    settings = settings or Settings.from_env()
    rules = MarketRules(**{k: params.pop(k) for k in list(params) if k in RULE_PARAMS})  # type: ignore[arg-type]
    spec = STRATEGIES[strategy](**params)
    registry = load_registry()
    columns = [name for name in spec.columns() if name in registry] + ["factor"]
    qlib_codes = sorted({canonical_code(c) for c in codes})  # the order of codes must not change a float
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if isinstance(spec, MultiFactor) and engine == "replay":
        simulation, sources = _replay_multi_factor(
            spec, qlib_codes, columns, settings, use_precomputed, start, end, rules, cash
        )
    else:
        frames = load_multiple_stocks_with_indicators(
            qlib_codes, None, end, columns, settings=settings, use_precomputed=use_precomputed
        )
        sources = {code: frame.attrs for code, frame in frames.items()}
        for frame in frames.values():
            frame.attrs = {}  # pandas deep-copies attrs on every operation; the signals do many
        if isinstance(spec, MultiFactor):
            simulation = _qlib_multi_factor(spec, frames, sources, settings, start, end, rules, cash)
        else:
            wanted = {code: spec.signal(frame) for code, frame in frames.items()}
            simulation = simulate(frames, wanted, rules, cash, start, end)
    metrics = performance(simulation.equity, simulation.trades, cash)
    return BacktestResult(strategy, simulation.equity, simulation.trades, metrics, sources)


def _replay_multi_factor(
    spec: MultiFactor,
    codes: list[str],
    columns: list[str],
    settings: Settings,
    use_precomputed: bool,
    start: pd.Timestamp,
    end: pd.Timestamp,
    rules: MarketRules,
    cash: float,
) -> tuple[Simulation, dict[str, dict]]:
    """The replay, loading the days it trades and the one before (its scores, and the close that limits
    compare with): a score is one day's cross-section, so no earlier day changes a fill."""
    calendar = trading_calendar(settings)
    first = max(int(calendar.searchsorted(start, "left")) - 1, 0)
    since = calendar[first] if len(calendar) else None
    grid = load_grid(codes, since, end, columns, settings=settings, use_precomputed=use_precomputed)
    continues = len(grid.calendar) > 0 and grid.calendar[-1] < calendar[-1]
    market = Market.from_grid(grid, rules, continues=continues)
    return run_topk_dropout(spec.score(grid), market, start, end, rules, cash, spec.topk, spec.n_drop), grid.sources


def _qlib_multi_factor(
    spec: MultiFactor,
    frames: dict[str, pd.DataFrame],
    sources: dict[str, dict],
    settings: Settings,
    start: pd.Timestamp,
    end: pd.Timestamp,
    rules: MarketRules,
    cash: float,
) -> Simulation:
    """Qlib reads prices from the store when they came from it, else from the frames staged for it."""
    calendar = trading_calendar(settings)
    grid = grid_of_frames(frames, calendar, spec.columns())
    scores = pd.DataFrame(spec.score(grid), index=calendar, columns=grid.codes)
    args = (start, end, rules, cash, spec.topk, spec.n_drop)
    if all(set(PRICE_FIELDS) <= set(sources[code].get("from_store", [])) for code in frames):
        return qlib_topk_dropout(scores, frames, settings.qlib_data_path, *args)
    with staged_qlib_dir(frames, calendar, PRICE_FIELDS) as root:
        return qlib_topk_dropout(scores, frames, root, *args)
