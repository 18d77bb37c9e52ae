"""The four indicator families. Importing this package registers every built-in column.

`compute_family` is the one entry point that both the precompute (Dagster assets) and the consumers'
fallback call, so a column computed on the fly equals the stored one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from precompute_assets.families import alpha158, fundamental, panel_engine, qlib_engine, qlib_stats, technical  # noqa: F401 - registers
from precompute_assets.families.base import FamilyResult, compute_per_stock
from precompute_assets.registry import FAMILIES, Indicator, load_registry

__all__ = ["FAMILIES", "FamilyResult", "compute_family"]


def compute_family(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    indicators: Sequence[Indicator] | None = None,
) -> FamilyResult:
    """One family's columns (all registered ones, or `indicators`) for calendar-aligned bars.

    Columns defined by a Qlib expression go through the panel engine (`panel_engine`, Qlib's
    expressions on a dates x stocks panel), or Qlib's own engine with PRECOMPUTE_EXPRESSION_ENGINE=qlib;
    the others through their `compute` function on each stock's valid rows.
    """
    chosen = list(indicators) if indicators is not None else load_registry().all(family)
    by_expression = [i for i in chosen if i.expression is not None]
    by_function = [i for i in chosen if i.compute is not None]
    result = FamilyResult()
    if by_expression:
        engine = panel_engine if panel_engine.expression_engine() == "panel" else qlib_engine
        expressions = {i.name: i.expression for i in by_expression}
        result = engine.evaluate_expressions(family, bars_by_code, calendar, expressions)
    if by_function:
        pandas_part = compute_per_stock(family, bars_by_code, by_function)
        result.errors.extend(pandas_part.errors)
        result.state = pandas_part.state
        for code, frame in pandas_part.frames.items():
            existing = result.frames.get(code)
            result.frames[code] = frame if existing is None else existing.join(frame)
    order = [i.name for i in chosen]
    result.frames = {
        code: frame.reindex(columns=[c for c in order if c in frame]) for code, frame in result.frames.items()
    }
    return result
