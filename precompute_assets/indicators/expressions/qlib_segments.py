"""Qlib's operators, made to respect stock boundaries inside one long pseudo-instrument.

Qlib's cost is mostly per call (instrument x operator), so the engine lays a batch of stocks end to end
as one instrument, each stock preceded by NaN pad rows at least as long as any window. Then:
- rolling operators that skip NaN (Mean, Std, Max, Quantile, Corr, Ref, ...) need nothing: a window at
  a stock's start sees pads and that stock only, as a partial window would;
- element-wise operators need nothing either: they never look at another row;
- every other rolling operator (IdxMax/IdxMin, Rank, Count, Delta, Slope/Rsquare/Resi with their running
  sums, EMA/WMA, expanding windows), and a NaN-skipping one above an operator that turns NaN into a
  number (comparisons, And/Or/Not, If, Mask), runs Qlib's own implementation once per stock segment
  (IdxMax/IdxMin as `qlib_argext`'s numpy windows, equal to Qlib's bit for bit).
The result is bit for bit what `D.features` gives stock by stock (the Alpha158 parity tests check it).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import numpy as np
import pandas as pd
from qlib.data.base import Expression

from precompute_assets.indicators.expressions.qlib_argext import vectorised_load

SEGMENTS: dict[str, list[tuple[int, int]]] = {}
"""Pseudo-instrument (lower case, as Qlib passes it) -> inclusive calendar spans, one per stock."""


class GivenSeries(Expression):
    """A child expression whose value is already known: the slice of one stock segment."""

    def __init__(self, series: pd.Series) -> None:
        self.series = series

    def __str__(self) -> str:
        return f"Given({id(self.series)})"

    def load(self, *args: object) -> pd.Series:
        return self.series

    def _load_internal(self, *args: object) -> pd.Series:
        return self.series

    def get_longest_back_rolling(self) -> int:
        return 0

    def get_extended_window_size(self) -> tuple[int, int]:
        return 0, 0


def _segmented_load(self, original, instrument: str, start_index: int, end_index: int, *args) -> pd.Series:
    """Qlib's own `_load_internal` of the operator, once per stock segment of a pseudo-instrument."""
    spans = SEGMENTS.get(instrument.lower())
    if spans is None:
        return original(self, instrument, start_index, end_index, *args)
    children = {
        name: getattr(self, name)
        for name in ("feature", "feature_left", "feature_right")
        if isinstance(getattr(self, name, None), Expression)
    }
    loaded = {name: child.load(instrument, start_index, end_index, *args) for name, child in children.items()}
    parts = []
    for lo, hi in spans:
        lo, hi = max(lo, start_index), min(hi, end_index)
        if lo > hi:
            continue
        clone = copy.copy(self)
        for name, series in loaded.items():
            setattr(clone, name, GivenSeries(series.loc[lo:hi]))
        parts.append(original(clone, instrument, lo, hi, *args))
    index = pd.RangeIndex(start_index, end_index + 1)
    return pd.concat(parts).reindex(index) if parts else pd.Series(index=index, dtype=float)


def _windowed_load(self, original, instrument: str, start_index: int, end_index: int, *args) -> pd.Series:
    """A NaN-skipping rolling operator: over the whole series when its window is fixed and its input is
    NaN on the pads; by segment when expanding, EWM, or above an operator that turns NaN into numbers."""
    if isinstance(self.N, int) and self.N > 0 and _nan_on_pads(self):
        return original(self, instrument, start_index, end_index, *args)
    return _segmented_load(self, original, instrument, start_index, end_index, *args)


def _nan_on_pads(node: object) -> bool:
    """True when no operator below `node` can turn the pads' NaN into a number."""
    if not isinstance(node, Expression):
        return True
    if type(node).__name__ in _NAN_TO_NUMBER:
        return False
    if type(node).__name__ in _BY_SEGMENT:
        return True  # its output is NaN on the pads (see `_segmented_load`)
    return all(_nan_on_pads(getattr(node, a, None)) for a in ("feature", "feature_left", "feature_right"))


_NAN_SKIPPING = {"Ref", "Mean", "Sum", "Std", "Var", "Max", "Min", "Quantile", "Med", "Corr", "Cov"}
_NAN_TO_NUMBER = {"Gt", "Ge", "Lt", "Le", "Eq", "Ne", "And", "Or", "Not", "Mask", "If"}
_VECTORISED = {"IdxMax": np.argmax, "IdxMin": np.argmin}
_BY_SEGMENT = {
    "IdxMax",
    "IdxMin",
    "Rank",
    "Count",
    "Delta",
    "Slope",
    "Rsquare",
    "Resi",
    "Skew",
    "Kurt",
    "Mad",
    "WMA",
    "EMA",
}


@functools.cache
def segment_aware_ops() -> list[type]:
    """Subclasses of Qlib's operators, same names, for `qlib.init(custom_ops=...)`."""
    from qlib.data import ops

    def override(op: type, loader: Callable[..., pd.Series]) -> type:
        own = _VECTORISED.get(op.__name__)
        original = vectorised_load(own, op._load_internal) if own is not None else op._load_internal
        return type(op.__name__, (op,), {"_load_internal": functools.partialmethod(loader, original)})

    found = [op for op in vars(ops).values() if isinstance(op, type) and issubclass(op, ops.ExpressionOps)]
    rolling = [op for op in found if issubclass(op, ops.Rolling | ops.PairRolling)]
    rolling = [op for op in rolling if op not in (ops.Rolling, ops.PairRolling)]
    return [override(op, _windowed_load if op.__name__ in _NAN_SKIPPING else _segmented_load) for op in rolling]
