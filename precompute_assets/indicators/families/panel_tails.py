"""A daily update's appended days of the `on_panels` computes, for every stock of a run at once.

Each stock's tail is its last valid rows before the new days (as many as the longest history need)
and its new valid rows; stocks with the same new days are stacked into one panel (a column per
stock), and each indicator runs once on the panel's last `need` + new rows, so a value at a new day
sees exactly the rows a per-stock tail of that need would. A stock with fewer stored valid rows than
the longest need is left to the caller (its tail is its whole history, computed per stock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.indicators.families.base import (
    REQUIRED,
    FamilyResult,
    Output,
    required_values,
)
from precompute_assets.indicators.registry import Indicator


@dataclass(frozen=True)
class _Tail:
    """One stock's part of a panel: the positions of its tail's rows, and its new calendar rows."""

    code: str
    rows: np.ndarray
    new_dates: pd.DatetimeIndex
    new_valid: np.ndarray


def panel_tails(
    bars_by_code: Mapping[str, pd.DataFrame],
    new_from: Mapping[str, pd.Timestamp],
    indicators: Sequence[Indicator],
    needs: Mapping[str, int],
    carry: Mapping[str, Mapping[str, float]],
) -> tuple[FamilyResult, dict[str, list[str]]]:
    """The new days' columns of `indicators` (all `on_panels`) for the stocks in `new_from`.

    `needs[name]` is the indicator's history need in valid rows, the new day included. A cumulative
    column continues from `carry[code][name]`, the stored value before the new days (NaN without
    one). Returns the result, frames on each stock's new days, and what is left to compute a stock at
    a time, per stock the indicators: all of them for a stock too short for a panel, and a column
    that failed on a panel for each of its stocks (so the failure is found, and kept, stock by stock).
    """
    longest = max(needs[i.name] for i in indicators)
    groups: dict[tuple, list[_Tail]] = {}
    left: dict[str, list[str]] = {}
    fields: dict[str, np.ndarray] = {}
    for code, first_day in new_from.items():
        bars = bars_by_code[code]
        first_new = int(bars.index.searchsorted(first_day))
        block = required_values(bars)
        present = ~np.isnan(block).any(axis=1)  # `valid_rows`, on the one array read here
        valid = np.flatnonzero(present)
        stored = int(np.searchsorted(valid, first_new))
        if stored < longest:
            left[code] = [i.name for i in indicators]
            continue
        new_valid = present[first_new:]
        tail = _Tail(code, valid[stored - longest :], bars.index[first_new:], new_valid)
        fields[code] = block
        groups.setdefault((tail.new_dates.asi8.tobytes(), new_valid.tobytes()), []).append(tail)
    result = FamilyResult()
    for tails in groups.values():
        for name in _compute_group(tails, fields, indicators, needs, longest, carry, result):
            for tail in tails:
                left.setdefault(tail.code, []).append(name)
    return result, left


def _compute_group(
    tails: list[_Tail],
    fields: Mapping[str, np.ndarray],
    indicators: Sequence[Indicator],
    needs: Mapping[str, int],
    longest: int,
    carry: Mapping[str, Mapping[str, float]],
    result: FamilyResult,
) -> list[str]:
    """One panel of stocks with the same new days: every indicator once, then a frame per stock.
    Returns the indicators that failed on the panel."""
    new_rows = int(tails[0].new_valid.sum())
    height = longest + new_rows  # `need` stored rows before the new ones, as `tail_start` cuts a frame's tail
    stacked = np.stack([fields[tail.code][tail.rows] for tail in tails], axis=2)  # rows, fields, stocks
    panel = {name: np.asfortranarray(stacked[:, position, :]) for position, name in enumerate(REQUIRED)}
    values = np.full((len(indicators), new_rows, len(tails)), np.nan)
    failed: set[int] = set()
    outputs: dict[tuple[object, int], Sequence[object]] = {}
    states: dict[str, np.ndarray] = {}
    for position, indicator in enumerate(indicators):
        if not new_rows and indicator.history != "cumulative":  # no new value; a state still carries over
            continue
        rows = needs[indicator.name] + new_rows
        window = {name: column[height - rows :] for name, column in panel.items()}
        compute = indicator.compute
        try:
            if isinstance(compute, Output):
                key = (compute.fn, rows)
                if key not in outputs:
                    outputs[key] = compute.fn(window)  # type: ignore[arg-type]
                computed = np.asarray(outputs[key][compute.index], dtype=np.float64)
            else:
                computed = np.asarray(compute(window), dtype=np.float64)  # type: ignore[misc,arg-type]
            if computed.shape != (rows, len(tails)):
                raise ValueError(f"returned shape {computed.shape} for a panel of {(rows, len(tails))}")
        except Exception:  # each of its stocks is computed again on its own, where the error is reported
            failed.add(position)
            continue
        if indicator.history == "cumulative":
            computed, states[indicator.name] = _continued(
                computed, new_rows, [carry.get(t.code, {}) for t in tails], indicator.name
            )
        values[position] = computed[rows - new_rows :]
    values[np.isinf(values)] = np.nan
    kept = [p for p in range(len(indicators)) if p not in failed]
    names = pd.Index([indicators[p].name for p in kept])
    values = values[kept].astype(np.float32)
    for stock, tail in enumerate(tails):
        out = np.full((len(tail.new_dates), len(kept)), np.nan, dtype=np.float32)
        out[tail.new_valid] = values[:, :, stock].T
        result.frames[tail.code] = pd.DataFrame(out, index=tail.new_dates, columns=names)
        if states:
            result.state[tail.code] = {
                name: float(state[stock]) for name, state in states.items() if np.isfinite(state[stock])
            }
    return [indicators[p].name for p in sorted(failed)]


def _continued(
    computed: np.ndarray, new_rows: int, carried: Sequence[Mapping[str, float]], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A cumulative column from the tail's own start, moved onto the stored one: each stock's stored
    value before the new days plus the change since the tail's last stored row. Also each stock's
    state after the new days (its last value, else the carried one; NaN, no state, if nothing to carry)."""
    before = computed[: len(computed) - new_rows]
    finite = np.isfinite(before)
    last = np.where(finite.any(axis=0), len(before) - 1 - np.argmax(finite[::-1], axis=0), 0)
    reference = np.where(finite.any(axis=0), before[last, np.arange(before.shape[1])], np.nan)
    stored = np.array([c.get(name, np.nan) for c in carried], dtype=np.float64)
    moved = stored + (computed - reference)
    carried_over = np.where(np.isnan(reference), np.nan, stored)
    if not new_rows:
        return moved, carried_over
    new = moved[len(before) :]
    new_finite = np.isfinite(new)
    last_new = len(new) - 1 - np.argmax(new_finite[::-1], axis=0)
    return moved, np.where(new_finite.any(axis=0), new[last_new, np.arange(new.shape[1])], carried_over)
