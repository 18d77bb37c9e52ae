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
from qlib.data.data import LocalCalendarProvider

from precompute_assets.indicators.expressions.qlib_segments import SEGMENTS, segment_aware_ops
from precompute_assets.indicators.families.base import ComputeError, FamilyResult
from precompute_assets.store.base_fields import BASE_FIELDS, base_fields
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.staging import StagingDir


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
    from qlib.utils import parse_field

    parsed = eval(parse_field(expression), {"Operators": ops.Operators})  # Qlib's own parser, as Qlib does
    left, right = parsed.get_extended_window_size()
    if right > 0:
        raise ValueError(f"{expression!r} reads {right} rows after t: not point in time")
    return left + 1


MAX_STAGING_ROWS = 60_000
"""Rows per Qlib call: Qlib's memory grows with the rows of a call and its speed does not, so calls stay
this small; fake daily dates from 1678 allow about 213k at most."""
FAKE_START = pd.Timestamp("1678-01-01")
BATCH = "ZZBATCH"


def evaluate_expressions(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    expressions: Mapping[str, str],
) -> FamilyResult:
    """Columns named like `expressions`' keys for every stock (bars aligned to `calendar`).

    Qlib's cost is mostly per call (instrument x operator), not per row, so the batch's stocks are
    laid end to end as one pseudo-instrument and evaluated in one `D.features` call, with Qlib's rolling
    operators confined to each stock's segment (`qlib_segments`). If that call fails, the stocks are
    evaluated one by one to name the ones that fail.
    """
    result = FamilyResult()
    codes = [c for c, bars in bars_by_code.items() if not bars.empty]
    columns: dict[str, dict[str, np.ndarray]] = {code: {} for code in codes}
    names, fields = list(expressions), list(expressions.values())
    pad = max((expression_history(e) for e in fields), default=1)  # no window reaches the stock before
    for group in _staging_groups({c: bars_by_code[c] for c in codes}, pad):
        with tempfile.TemporaryDirectory(prefix="qlib_engine_", dir=staging_parent()) as tmp:
            staging = _StagingStore(Path(tmp), {c: bars_by_code[c] for c in group}, pad)
            SEGMENTS.clear()
            SEGMENTS[BATCH.lower()] = [(lo, hi - 1) for lo, hi in staging.spans.values()]
            # ERROR: Qlib warns once per operator that the segment-aware ones override its own
            init_qlib(
                Path(tmp),
                custom_ops=segment_aware_ops(),
                calendar_provider={"class": "StagingCalendarProvider", "module_path": __name__},
                logging_level=logging.ERROR,
            )
            try:
                values = _features([BATCH], fields, staging.calendar).to_numpy()
                for code in group:
                    lo, hi = staging.spans[code]
                    columns[code].update(zip(names, values[lo:hi].T, strict=True))
            except Exception:
                SEGMENTS.clear()
                staging.add_stocks()
                _evaluate_per_stock(family, group, expressions, staging.calendar, columns, result)
            finally:
                SEGMENTS.clear()
    for code, found in columns.items():
        if found:
            frame = pd.DataFrame(found, index=bars_by_code[code].index).reindex(columns=names)
            result.frames[code] = frame.astype(np.float32).replace([np.inf, -np.inf], np.nan)
    return result


def _fake_dates(count: int) -> list[pd.Timestamp]:
    """The first `count` days of the staging calendar as Timestamps, built once per process and grown."""
    if len(_FAKE_DATES) < count:
        _FAKE_DATES[:] = list(pd.date_range(FAKE_START, periods=max(count, 2 * len(_FAKE_DATES)), freq="D"))
    return _FAKE_DATES[:count]


_FAKE_DATES: list[pd.Timestamp] = []


class StagingCalendarProvider(LocalCalendarProvider):
    """Qlib's local calendar provider, except that a staging calendar (consecutive days from
    `FAKE_START`) comes from a list built once per process: Qlib parses a Timestamp per line, again
    for every staging store of a step."""

    def load_calendar(self, freq: str, future: bool) -> list[pd.Timestamp]:
        lines = self.backend_obj(freq=freq, future=future).data
        dates = _fake_dates(len(lines))
        if len(lines) and str(lines[0]) == f"{dates[0]:%Y-%m-%d}" and str(lines[-1]) == f"{dates[-1]:%Y-%m-%d}":
            return dates
        return super().load_calendar(freq, future)


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


def staging_parent() -> str | None:
    """Memory (/dev/shm) when the machine has it: the staging store is read once, and creating files
    on disk costs a round trip each; otherwise the system's temporary folder."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


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
    """A temporary Qlib store on a fake daily calendar holding the batch as one pseudo-instrument
    `ZZBATCH`, each stock's rows preceded by `pad` NaN rows; `add_stocks` adds each stock as its own
    instrument too, for the stock-by-stock evaluation that names a failing stock."""

    def __init__(self, root: Path, bars_by_code: Mapping[str, pd.DataFrame], pad: int) -> None:
        self.spans: dict[str, tuple[int, int]] = {}
        fields: dict[str, list[np.ndarray]] = {}
        offset = 0
        self._per_stock: dict[str, tuple[int, dict[str, np.ndarray]]] = {}
        for code, bars in bars_by_code.items():
            values = base_fields(bars)
            offset += pad
            self.spans[code] = (offset, offset + len(bars))
            self._per_stock[code] = (offset, {name: values[name] for name in BASE_FIELDS})
            for name in BASE_FIELDS:
                fields.setdefault(name, []).extend([np.full(pad, np.nan, np.float32), values[name]])
            offset += len(bars)
        self.calendar = pd.date_range(FAKE_START, periods=offset, freq="D")
        self._dir = StagingDir(root, self.calendar)
        self._dir.add(BATCH, 0, {n: np.concatenate(v) for n, v in fields.items()})
        self._dir.write_instruments()

    @property
    def layout(self) -> StoreLayout:
        return self._dir.layout

    def add_stocks(self) -> None:
        for code, (start, values) in self._per_stock.items():
            self._dir.add(code, start, values)
        self._dir.write_instruments()
