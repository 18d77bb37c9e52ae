"""How many past input rows an appended day needs, per column (the tails of a daily update)."""

from __future__ import annotations

from precompute_assets.indicators.expressions.qlib_engine import expression_history
from precompute_assets.indicators.registry import Indicator

RECURSIVE_HISTORY_PER_WARMUP_ROW = 40
RECURSIVE_HISTORY_MIN = 300


def history_need(indicator: Indicator) -> int:
    """Input rows up to and including t that a value at t depends on, for computing appended days.

    Windowed: the warm-up plus the day itself. Recursive (EMA-like): long enough for the seed's
    effect to decay below float32 rounding (a Wilder smoothing of 14 needs about 250 rows).
    Cumulative (a running sum like OBV): two rows, the rest is carried from the stored state.
    Qlib expressions are measured by Qlib itself (`expressions.qlib_engine.expression_history`).
    """
    if indicator.history_rows is not None:
        return indicator.history_rows
    if indicator.expression is not None:
        return expression_history(indicator.expression)
    if indicator.history == "recursive":
        return max(RECURSIVE_HISTORY_MIN, RECURSIVE_HISTORY_PER_WARMUP_ROW * (indicator.warmup + 1))
    if indicator.history == "cumulative":
        return 2
    return indicator.warmup + 1
