"""`compute_family`: one family's columns for calendar-aligned bars.

It is the one entry point that both the precompute (Dagster assets) and the consumers'
fallback call, so a column computed on the fly equals the stored one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.expressions import panel_engine, qlib_engine
from precompute_assets.indicators.families.base import ComputeError, FamilyResult, compute_per_stock
from precompute_assets.indicators.registry import Indicator


def compute_family(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    indicators: Sequence[Indicator] | None = None,
) -> FamilyResult:
    """One family's columns (the ones it computes, or `indicators`) for calendar-aligned bars.

    Columns defined by a Qlib expression go through the panel engine (`panel_engine`, Qlib's
    expressions on a dates x stocks panel), or Qlib's own engine with PRECOMPUTE_EXPRESSION_ENGINE=qlib;
    the others through their `compute` function on each stock's valid rows. An alias (`same_as`) is
    computed only when asked for by name, as its source (of whatever family) under its own name.
    """
    chosen = list(indicators) if indicators is not None else load_registry().computed(family)
    own = [i for i in chosen if i.same_as is None]
    by_expression = [i for i in own if i.expression is not None]
    by_function = [i for i in own if i.compute is not None]
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
    aliases = [i for i in chosen if i.same_as is not None]
    if aliases:
        _add_aliases(result, aliases, own, bars_by_code, calendar)
    order = [i.name for i in chosen]
    result.frames = {
        code: frame.reindex(columns=[c for c in order if c in frame]) for code, frame in result.frames.items()
    }
    return result


def _add_aliases(
    result: FamilyResult,
    aliases: Sequence[Indicator],
    computed: Sequence[Indicator],
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
) -> None:
    """Each alias as a copy of its source's column: the one in `result` when `computed` has the source,
    else one computed here (once per source, by the source's family)."""
    done = {i.name for i in computed}
    needed: dict[str, dict[str, Indicator]] = {}
    for alias in aliases:
        source = alias.computed_as
        if source.name not in done:
            needed.setdefault(source.family, {})[source.name] = source
    sources = FamilyResult(errors=[e for e in result.errors if e.indicator in {a.computed_as.name for a in aliases}])
    for family, indicators in needed.items():
        part = compute_family(family, bars_by_code, calendar, list(indicators.values()))
        sources.errors.extend(part.errors)
        for code, frame in part.frames.items():
            existing = sources.frames.get(code)
            sources.frames[code] = frame if existing is None else existing.join(frame)
    for error in sources.errors:  # a failed source is a failed alias, reported under the alias's name too
        for alias in aliases:
            if alias.computed_as.name == error.indicator:
                result.errors.append(ComputeError(error.code, alias.family, alias.name, error.message))
    for code in bars_by_code:
        frame, extra = result.frames.get(code), sources.frames.get(code)
        copies = {}
        for alias in aliases:
            name = alias.computed_as.name
            holder = frame if name in done else extra
            if holder is not None and name in holder:
                copies[alias.name] = holder[name]
        if copies:
            block = pd.DataFrame(copies)
            result.frames[code] = block if frame is None else frame.join(block)
