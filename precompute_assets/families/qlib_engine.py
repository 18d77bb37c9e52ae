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
from precompute_assets.store.base_fields import BASE_FIELDS, base_fields
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

    ops.register_all_ops(C)
    parsed = eval(parse_expression(expression), {"Operators": ops.Operators})  # Qlib's own parser, as Qlib does
    left, right = parsed.get_extended_window_size()
    if right > 0:
        raise ValueError(f"{expression!r} reads {right} rows after t: not point in time")
    return left + 1


# Operators whose value at t, over a stock preceded by NaN rows, equals their value on the stock alone
# (NaN in, NaN out; rolling windows that skip NaN). Comparisons, IdxMax/IdxMin, Count and the like turn
# NaN into numbers, and Slope/Rsquare/Resi carry running sums across the gap (a last-bit difference),
# so expressions using them are evaluated stock by stock.
_PADDING_SAFE = {
    "Feature", "Abs", "Sign", "Log", "Power", "Add", "Sub", "Mul", "Div", "Greater", "Less",
    "Ref", "Mean", "Sum", "Std", "Var", "Max", "Min", "Quantile", "Med", "Corr", "Cov",
}  # fmt: skip
MAX_STAGING_ROWS = 150_000  # fake daily dates from 1700 must stay inside pandas' Timestamp range
FAKE_START = pd.Timestamp("1700-01-01")


@functools.cache
def batchable(expression: str) -> bool:
    """True when the expression can be evaluated on many stocks laid end to end with NaN gaps."""
    from qlib.config import C
    from qlib.data import ops

    ops.register_all_ops(C)

    def safe(node: object) -> bool:
        if not isinstance(node, ops.Expression):
            return True  # a number
        if type(node).__name__ not in _PADDING_SAFE or getattr(node, "N", 1) in (0, None):
            return False
        if isinstance(getattr(node, "N", 1), float) or getattr(node, "N", 1) < 0:
            return False
        return all(safe(getattr(node, a, None)) for a in ("feature", "feature_left", "feature_right"))

    return safe(eval(parse_expression(expression), {"Operators": ops.Operators}))


def parse_expression(expression: str) -> str:
    from qlib.utils import parse_field

    return parse_field(expression)


def evaluate_expressions(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    expressions: Mapping[str, str],
) -> FamilyResult:
    """Columns named like `expressions`' keys for every stock (bars aligned to `calendar`).

    Qlib's cost is mostly per call (instrument x expression), not per row, so padding-safe expressions
    are evaluated on a few long pseudo-instruments: the batch's stocks end to end, each preceded by
    enough NaN rows that no window reaches the stock before it. The other expressions go stock by
    stock. Both read the same base fields and give what `D.features` gives on the store, which the
    Alpha158 parity tests check bit for bit.
    """
    result = FamilyResult()
    codes = [c for c, bars in bars_by_code.items() if not bars.empty]
    columns: dict[str, dict[str, np.ndarray]] = {code: {} for code in codes}
    batched = {n: e for n, e in expressions.items() if batchable(e)}
    per_stock = {n: e for n, e in expressions.items() if n not in batched}
    pad = max((expression_history(e) for e in batched.values()), default=1)
    for group in _staging_groups({c: bars_by_code[c] for c in codes}, pad):
        with tempfile.TemporaryDirectory(prefix="qlib_engine_") as tmp:
            staging = _StagingStore(Path(tmp), {c: bars_by_code[c] for c in group}, pad)
            init_qlib(Path(tmp))
            if batched:
                values = _features(staging.chunks, list(batched.values()), staging.calendar)
                for code in group:
                    chunk, lo, hi = staging.spans[code]
                    block = values.xs(chunk, level="instrument").to_numpy()[lo:hi]
                    columns[code].update(zip(batched, block.T, strict=True))
            if per_stock:
                _evaluate_per_stock(family, group, per_stock, staging.calendar, columns, result)
    for code, found in columns.items():
        if found or not per_stock:
            frame = pd.DataFrame(found, index=bars_by_code[code].index).reindex(columns=list(expressions))
            result.frames[code] = frame.astype(np.float32).replace([np.inf, -np.inf], np.nan)
    return result


def _evaluate_per_stock(
    family: str,
    codes: list[str],
    expressions: Mapping[str, str],
    calendar: pd.DatetimeIndex,
    columns: dict[str, dict[str, np.ndarray]],
    result: FamilyResult,
) -> None:
    """One `D.features` call for the group; a failure is narrowed down to the stocks that cause it."""
    names, fields = list(expressions), list(expressions.values())
    try:
        joined = _features(codes, fields, calendar)
        found = {code: joined.xs(code, level="instrument") for code in joined.index.unique("instrument")}
    except Exception:
        found = {}
        for code in codes:
            try:
                found[code] = _features([code], fields, calendar).xs(code, level="instrument")
            except Exception as exc:
                result.errors.append(ComputeError(code, family, None, f"{type(exc).__name__}: {exc}"))
    for code, frame in found.items():
        columns[code].update(zip(names, frame.to_numpy().T, strict=True))


def _features(codes: list[str], fields: list[str], calendar: pd.DatetimeIndex) -> pd.DataFrame:
    from qlib.data import D

    return D.features(codes, fields, start_time=calendar[0], end_time=calendar[-1], freq="day")


def _staging_groups(bars_by_code: Mapping[str, pd.DataFrame], pad: int) -> list[list[str]]:
    """Stocks split so each staging store's fake calendar stays within `MAX_STAGING_ROWS`."""
    groups: list[list[str]] = [[]]
    rows = 0
    for code, bars in bars_by_code.items():
        need = len(bars) + pad
        if groups[-1] and rows + need > MAX_STAGING_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(code)
        rows += need
    return [g for g in groups if g]


class _StagingStore:
    """A temporary Qlib store on a fake daily calendar: each stock as its own instrument, and the
    same rows again in one pseudo-instrument `ZZBATCH` that holds them all, NaN gaps between them."""

    def __init__(self, root: Path, bars_by_code: Mapping[str, pd.DataFrame], pad: int) -> None:
        self.spans: dict[str, tuple[str, int, int]] = {}
        fields: dict[str, list[np.ndarray]] = {}
        offset = 0
        per_stock = {}
        for code, bars in bars_by_code.items():
            values = base_fields(bars)
            offset += pad
            self.spans[code] = ("ZZBATCH", offset, offset + len(bars))
            per_stock[code] = (offset, values)
            for name in BASE_FIELDS:
                fields.setdefault(name, []).extend([np.full(pad, np.nan, np.float32), values[name]])
            offset += len(bars)
        self.calendar = pd.date_range(FAKE_START, periods=offset, freq="D")
        self.chunks = ["ZZBATCH"]
        layout = StoreLayout(root)
        write_calendar(layout, self.calendar)
        lines = [self._write(layout, "ZZBATCH", 0, {n: np.concatenate(v) for n, v in fields.items()})]
        for code, (start, values) in per_stock.items():
            lines.append(self._write(layout, code, start, values))
        layout.instruments_path.parent.mkdir(parents=True, exist_ok=True)
        layout.instruments_path.write_text("".join(lines))

    def _write(self, layout: StoreLayout, code: str, start: int, values: Mapping[str, np.ndarray]) -> str:
        layout.stock_dir(code).mkdir(parents=True, exist_ok=True)
        for name in BASE_FIELDS:
            write_bin(layout.bin_path(code, name), start, values[name])
        end = start + len(values["close"]) - 1
        return f"{code}\t{self.calendar[start]:%Y-%m-%d}\t{self.calendar[end]:%Y-%m-%d}\n"
