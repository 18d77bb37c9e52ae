"""Compute store columns from the parquet input, exactly as the precompute does, for what the store lacks.

Same bars (`load_bars` on the same calendar), same family entry point (`compute_family`), same float32
rounding (`base_fields` and the families' own casts), over each stock's whole history because
indicators need their warm-up; so a computed column equals the stored one bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets.consumers.qlib_session import kept_qlib_config
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.compute import compute_family
from precompute_assets.indicators.registry import FAMILIES
from precompute_assets.input.bars import load_bars
from precompute_assets.store.base_fields import base_fields


@dataclass
class Computed:
    """Per stock a float32 frame over its whole span, columns named by store field; and what failed."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


def compute_fields(
    files: Mapping[str, Path], fields_by_code: Mapping[str, Sequence[str]], calendar: pd.DatetimeIndex
) -> Computed:
    """The requested store fields (base fields or registered indicators, lower case) of each stock.

    A field nobody can produce (`amount` without input amounts, a failing indicator) comes back NaN
    with a note in `errors`; a stock without a readable input file has no frame, only its error.
    """
    out = Computed()
    readable = [code for code in fields_by_code if code in files]
    for code in set(fields_by_code) - set(readable):
        out.errors[code] = ["no input file for this stock"]
    loaded = load_bars(files, readable, calendar)
    for error in loaded.errors:
        out.errors.setdefault(error.code or "", []).append(str(error))
    indicator_columns = _indicator_columns({c: fields_by_code[c] for c in loaded.bars}, loaded.bars, calendar, out)
    for code, bars in loaded.bars.items():
        columns: dict[str, np.ndarray] = {}
        base = base_fields(bars)
        for name in fields_by_code[code]:
            values = base.get(name)
            if values is None:
                values = indicator_columns.get(code, {}).get(name)
            if values is None:
                out.errors.setdefault(code, []).append(f"{name}: not available from the input")
                values = np.full(len(bars), np.nan, dtype=np.float32)
            columns[name] = values
        out.frames[code] = pd.DataFrame(columns, index=bars.index)
    return out


def _indicator_columns(
    fields_by_code: Mapping[str, Sequence[str]],
    bars: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    out: Computed,
) -> dict[str, dict[str, np.ndarray]]:
    """Run each family once over every stock that needs any of its columns (one Qlib session per family).

    An alias (`same_as`) is its source's column under a second name, as in the store: the source is
    computed (once, with the source's family) and copied."""
    registry = load_registry()
    requested = {code: [registry.get(n) for n in names if n in registry] for code, names in fields_by_code.items()}
    wanted = {code: {i.computed_as.field for i in indicators} for code, indicators in requested.items()}
    columns: dict[str, dict[str, np.ndarray]] = {code: {} for code in fields_by_code}
    for family in FAMILIES:
        indicators = [i for i in registry.computed(family) if any(i.field in w for w in wanted.values())]
        codes = [c for c, w in wanted.items() if any(i.field in w for i in indicators)]
        if not codes:
            continue
        with kept_qlib_config():
            result = compute_family(family, {c: bars[c] for c in codes}, calendar, indicators)
        for error in result.errors:
            out.errors.setdefault(error.code, []).append(str(error))
        for code, frame in result.frames.items():
            for indicator in indicators:
                if indicator.name in frame:
                    columns[code][indicator.field] = frame[indicator.name].to_numpy(np.float32)
    for code, indicators in requested.items():
        for alias in (i for i in indicators if i.same_as is not None):
            if alias.computed_as.field in columns[code]:
                columns[code][alias.field] = columns[code][alias.computed_as.field]
    return columns
