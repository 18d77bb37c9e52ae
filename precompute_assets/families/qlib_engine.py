"""Evaluate Qlib expressions with Qlib's own engine on a batch of stocks held in memory.

The batch's base fields are written, exactly as the store holds them, into a temporary Qlib data
directory, and `D.features` evaluates the expressions there. So a stored `alpha_001` is what
`D.features(["SH600000"], ["($close-$open)/$open"])` gives on the store, bit for bit.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets.families.base import ComputeError, FamilyResult
from precompute_assets.store.base_fields import base_fields
from precompute_assets.store.bin_file import write_bin
from precompute_assets.store.calendar import write_calendar
from precompute_assets.store.layout import StoreLayout


def qlib_kernels() -> int:
    """Qlib's worker processes; 1 by default because Dagster already runs buckets in parallel."""
    return int(os.environ.get("QLIB_KERNELS", "1"))


def init_qlib(provider_uri: Path, **overrides: object) -> None:
    """`qlib.init` for a local CN store, quiet, without on-disk caches that could go stale."""
    import qlib
    from qlib.constant import REG_CN

    options = {
        "provider_uri": str(provider_uri),
        "region": REG_CN,
        "kernels": qlib_kernels(),
        "expression_cache": None,
        "dataset_cache": None,
        "logging_level": logging.WARNING,
        **overrides,
    }
    qlib.init(**options)


@functools.cache
def expression_history(expression: str) -> int:
    """Rows up to and including t that Qlib reads for a value at t (its left extended window + 1)."""
    from qlib.config import C
    from qlib.data import ops
    from qlib.utils import parse_field

    ops.register_all_ops(C)
    parsed = eval(parse_field(expression), {"Operators": ops.Operators})  # Qlib's own parser, as Qlib does
    left, right = parsed.get_extended_window_size()
    if right > 0:
        raise ValueError(f"{expression!r} reads {right} rows after t: not point in time")
    return left + 1


def evaluate_expressions(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    expressions: Mapping[str, str],
) -> FamilyResult:
    """Columns named like `expressions`' keys for every stock; bars are aligned to `calendar`."""
    result = FamilyResult()
    codes = [c for c, bars in bars_by_code.items() if not bars.empty]
    if not codes:
        return result
    with tempfile.TemporaryDirectory(prefix="qlib_engine_") as tmp:
        _write_staging_store(Path(tmp), bars_by_code, calendar)
        init_qlib(Path(tmp))
        names, fields = list(expressions), list(expressions.values())
        try:
            joined = _features(codes, fields, calendar)
            frames = {code: joined.xs(code, level="instrument") for code in joined.index.unique("instrument")}
        except Exception:
            frames = {}
            for code in codes:
                try:
                    frames[code] = _features([code], fields, calendar).xs(code, level="instrument")
                except Exception as exc:
                    result.errors.append(ComputeError(code, family, None, f"{type(exc).__name__}: {exc}"))
        for code, frame in frames.items():
            frame.columns = names
            out = frame.reindex(bars_by_code[code].index).astype(np.float32)
            result.frames[code] = out.replace([np.inf, -np.inf], np.nan)
    return result


def _features(codes: list[str], fields: list[str], calendar: pd.DatetimeIndex) -> pd.DataFrame:
    from qlib.data import D

    return D.features(codes, fields, start_time=calendar[0], end_time=calendar[-1], freq="day")


def _write_staging_store(root: Path, bars_by_code: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex) -> None:
    layout = StoreLayout(root)
    write_calendar(layout, calendar)
    lines = []
    for code, bars in bars_by_code.items():
        if bars.empty:
            continue
        layout.stock_dir(code).mkdir(parents=True, exist_ok=True)
        start = int(calendar.get_loc(bars.index[0]))
        for field, values in base_fields(bars).items():
            write_bin(layout.bin_path(code, field), start, values)
        lines.append(f"{code}\t{bars.index[0]:%Y-%m-%d}\t{bars.index[-1]:%Y-%m-%d}\n")
    layout.instruments_path.parent.mkdir(parents=True, exist_ok=True)
    layout.instruments_path.write_text("".join(lines))
