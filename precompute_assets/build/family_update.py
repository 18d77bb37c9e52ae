"""Compute only what changed for a stored stock: appended days from a tail window, stale columns in full.

An appended day is computed from the stock's last rows, enough of them for every column's history
need (`registry.history_need`), counted both in calendar rows (Qlib's windows) and in valid rows
(the pandas families skip missing days). The columns whose compute is `on_panels` (the technical
and price/volume families) are computed for every stock of the run at once, each from its own need
(`families.panel_tails`); the others on a frame per stock, cut at their longest need. A cumulative
column continues from the stored float64 state: value = state + (tail value - tail value at the last
stored row). The result equals a full rebuild within float32 rounding, which the incremental tests
check on real data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.compute import compute_family
from precompute_assets.indicators.expressions import panel_engine
from precompute_assets.indicators.families.base import (
    FamilyResult,
    compute_per_stock,
    last_finite,
    takes_panels,
    valid_rows,
)
from precompute_assets.indicators.families.panel_tails import panel_tails
from precompute_assets.indicators.history import history_need
from precompute_assets.indicators.registry import Indicator


@dataclass(frozen=True)
class StockUpdate:
    """What a stored stock needs: new days from `new_from` on, and `stale` columns over its history."""

    new_from: pd.Timestamp | None = None
    stale: frozenset[str] = frozenset()
    carry: Mapping[str, float] = field(default_factory=dict)


def tail_start(bars: pd.DataFrame, new_from: pd.Timestamp, need: int) -> int:
    """Position of the first bar a tail needs: `need` calendar rows and `need` valid rows before `new_from`."""
    first_new = int(bars.index.searchsorted(new_from))
    valid = np.flatnonzero(valid_rows(bars)[:first_new])
    by_valid = int(valid[-need]) if len(valid) >= need else 0
    return max(0, min(first_new - need, by_valid))


def compute_family_update(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    updates: Mapping[str, StockUpdate | None],
) -> FamilyResult:
    """The family's columns for each stock: in full where `updates[code]` is None, else only what changed.

    An updated stock's frame spans its whole bars when it has stale columns of this family, else only
    the new days; columns neither stale nor new are NaN where they were not computed. Aliases
    (`same_as`) are not computed here: the store step writes them from their sources' columns.
    """
    registry = load_registry()
    indicators = registry.computed(family)  # aliases are copied from their sources by the store step
    computed = {i.name for i in indicators}
    result = FamilyResult()
    full = {c: bars for c, bars in bars_by_code.items() if updates.get(c) is None}
    if full:
        _merge(result, compute_family(family, full, calendar))
    groups: dict[frozenset[str], dict[str, StockUpdate]] = {}
    for code, update in updates.items():
        if update is not None and code in bars_by_code:
            stale = frozenset(n for n in update.stale if n in computed)
            groups.setdefault(stale, {})[code] = update
    for stale, group in groups.items():
        if stale:
            stale_bars = {c: bars_by_code[c] for c in group}
            _merge(result, compute_family(family, stale_bars, calendar, [registry.get(n) for n in sorted(stale)]))
        appended = {c: u for c, u in group.items() if u.new_from is not None}
        fresh = [i for i in indicators if i.name not in stale]
        if appended and fresh:
            _merge(result, _compute_tails(family, bars_by_code, calendar, appended, fresh))
    order = pd.Index([i.name for i in indicators])
    for code, frame in result.frames.items():
        if not frame.columns.equals(order):  # a panel's frames come in order: reindexing each costs more
            result.frames[code] = frame.reindex(columns=[n for n in order if n in frame])
    return result


def _compute_tails(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    appended: Mapping[str, StockUpdate],
    indicators: Sequence[Indicator],
) -> FamilyResult:
    """The appended days: `on_panels` computes for all stocks at once, each from its own history need;
    the others (and stocks too short for a panel) on a frame per stock cut at the longest need."""
    on_panels = [i for i in indicators if i.expression is None and takes_panels(i.compute)]
    if not on_panels:
        return _frame_tails(family, bars_by_code, calendar, appended, indicators)
    needs = {i.name: history_need(i) for i in on_panels}
    new_from = {c: u.new_from for c, u in appended.items()}
    carry = {c: u.carry for c, u in appended.items()}
    result, left = panel_tails(bars_by_code, new_from, on_panels, needs, carry)
    others = [i for i in indicators if i.name not in needs]
    if others:
        _merge(result, _frame_tails(family, bars_by_code, calendar, appended, others))
    by_indicators: dict[tuple[str, ...], dict[str, StockUpdate]] = {}
    for code, names in left.items():
        by_indicators.setdefault(tuple(names), {})[code] = appended[code]
    for names, stocks in by_indicators.items():
        rest = [i for i in on_panels if i.name in names]
        _merge(result, _frame_tails(family, bars_by_code, calendar, stocks, rest))
    return result


def _frame_tails(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    appended: Mapping[str, StockUpdate],
    indicators: Sequence[Indicator],
) -> FamilyResult:
    plain = [i for i in indicators if i.history != "cumulative"]
    cumulative = [i for i in indicators if i.history == "cumulative"]
    # the panel engine cuts each expression's own rows from the full bars: no pads, no shared tail
    on_panel = {i.name: i.expression for i in plain if i.expression is not None and _panel_engine_on()}
    plain = [i for i in plain if i.name not in on_panel]
    tails: dict[str, pd.DataFrame] = {}
    if plain or cumulative:
        need = max(history_need(i) for i in indicators)
        tails = {c: bars_by_code[c].iloc[tail_start(bars_by_code[c], u.new_from, need) :] for c, u in appended.items()}
    result = compute_family(family, tails, calendar, plain) if plain else FamilyResult()
    if on_panel:
        new_from = {c: u.new_from for c, u in appended.items()}
        _merge(result, panel_engine.evaluate_tails(family, bars_by_code, calendar, new_from, on_panel))
    if cumulative:
        carried = compute_per_stock(family, tails, cumulative, dtype=np.float64)
        result.errors.extend(carried.errors)
        for code, frame in carried.frames.items():
            new_from = appended[code].new_from
            state = {}
            for name in frame.columns:
                values = frame[name].to_numpy()
                before = values[: int(frame.index.searchsorted(new_from))]
                reference, carry = last_finite(before), appended[code].carry.get(name)
                if reference is None or carry is None:
                    values = np.full_like(values, np.nan)  # no stored state to continue from
                else:
                    values = carry + (values - reference)
                    last = last_finite(values)
                    state[name] = carry if last is None else last
                frame[name] = values
            result.state[code] = state
            existing = result.frames.get(code)
            frame = frame.astype(np.float32)
            result.frames[code] = frame if existing is None else existing.join(frame)
    for code, update in appended.items():
        frame = result.frames.get(code)
        if frame is not None:
            first = int(frame.index.searchsorted(update.new_from))
            if first:  # the panel engine's frames start at the new days already: no slice per stock
                result.frames[code] = frame.iloc[first:]
    return result


def _panel_engine_on() -> bool:
    return panel_engine.expression_engine() == "panel"


def _merge(into: FamilyResult, part: FamilyResult) -> None:
    """Column-wise union per stock; frames of different spans align on dates (NaN where absent)."""
    into.errors.extend(part.errors)
    for code, state in part.state.items():
        into.state.setdefault(code, {}).update(state)
    for code, frame in part.frames.items():
        existing = into.frames.get(code)
        if existing is None:
            into.frames[code] = frame
        else:
            index = existing.index.union(frame.index)
            into.frames[code] = existing.reindex(index).join(frame.reindex(index), how="left")
