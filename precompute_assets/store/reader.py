"""Fast reads straight from the bin files (no Qlib), aligned to the store calendar: the one read path of
the loader (`StoreReader.read`, per stock), `StoreHandler` (`read_panel`, Qlib's panel layout), the
cross-sectional backtests (`read_grid`, one (dates, stocks) array per field) and the `D.features`
provider (`window`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from precompute_assets.store.bin_columns import MISSING, Paths, read_into_grid, read_into_rows
from precompute_assets.store.bin_file import read_raw
from precompute_assets.store.calendar import read_calendar
from precompute_assets.store.layout import BIN_SUFFIX, FREQ, StoreLayout

_readers: dict[tuple[str, int, int], StoreReader] = {}


def cached_reader(layout: StoreLayout) -> StoreReader | None:
    """The store's reader (its calendar parsed once per calendar file version), None without a store."""
    try:
        stat = layout.calendar_path.stat()
    except FileNotFoundError:
        return None
    key = (str(layout.root), stat.st_mtime_ns, stat.st_size)
    if key not in _readers:
        _readers[key] = StoreReader(layout)
    return _readers[key]


@dataclass
class StoreReader:
    """Reads fields of stocks as date-indexed float32 frames; the calendar is read once."""

    layout: StoreLayout

    def __post_init__(self) -> None:
        self.calendar = read_calendar(self.layout)

    def has_stock(self, code: str) -> bool:
        return self.layout.stock_dir(code).is_dir()

    def fields(self, code: str) -> list[str]:
        """Field names stored for a stock (lower case, as the files are named)."""
        directory = self.layout.stock_dir(code)
        if not directory.is_dir():
            return []
        return sorted(p.name.split(".")[0] for p in directory.glob("*.day.bin"))

    def read(self, code: str, fields: Sequence[str], start: str | None = None, end: str | None = None) -> pd.DataFrame:
        """Columns named as `fields` (missing files are left out) over [start, end] of the stock's span.

        Plain string paths and one float32 block: a read is a few hundred small files, so per-file
        overhead (pathlib, one array per column) is what there is to save.
        """
        directory = str(self.layout.stock_dir(code))
        names, starts, arrays = [], [], []
        for name in fields:
            try:
                data = read_raw(os.path.join(directory, f"{name.lower()}.{FREQ}.bin"))
            except FileNotFoundError:
                continue
            if data.size < 1:
                continue
            names.append(name)
            starts.append(int(data[0]))
            arrays.append(data[1:])
        if not names:
            return pd.DataFrame(index=pd.DatetimeIndex([], name="date"))
        first = min(starts)
        last = max(s + len(a) - 1 for s, a in zip(starts, arrays, strict=True))
        last = min(last, len(self.calendar) - 1)  # rows past the published calendar are not committed yet
        lo, hi = self._window(first, last, start, end)
        index = self.calendar[lo : hi + 1]
        block = np.full((len(index), len(names)), np.nan, dtype=np.float32)
        for j, (start_index, values) in enumerate(zip(starts, arrays, strict=True)):
            src_lo, src_hi = max(lo, start_index), min(hi, start_index + len(values) - 1)
            if src_hi >= src_lo:
                block[src_lo - lo : src_hi - lo + 1, j] = values[src_lo - start_index : src_hi - start_index + 1]
        return pd.DataFrame(block, index=index, columns=names)

    def _window(self, first: int, last: int, start: str | None, end: str | None) -> tuple[int, int]:
        lo = first if start is None else max(first, int(self.calendar.searchsorted(pd.Timestamp(start), "left")))
        hi = last if end is None else min(last, int(self.calendar.searchsorted(pd.Timestamp(end), "right")) - 1)
        return lo, max(hi, lo - 1)


def window(data: np.ndarray, lo: int | None, hi: int | None) -> tuple[int, np.ndarray]:
    """A raw field (header first, as `read_raw` gives it) cut to calendar positions [lo, hi]:
    (position of the first value, values); empty values when the file has none there."""
    first, values = int(data[0]), data[1:]
    lo = first if lo is None else max(int(lo), first)
    hi = first + len(values) - 1 if hi is None else min(int(hi), first + len(values) - 1)
    return lo, values[lo - first : max(hi, lo - 1) - first + 1]


@dataclass
class Grid:
    """Fields of many stocks over a window of the store calendar (`calendar`, every trading day in it):
    `values[k]` is `fields[k]` as a (dates, stocks) float32 array, NaN where a stock has no value.
    `missing` lists the (code, field) pairs whose file the store lacks, `absent` the codes it has no
    folder for."""

    calendar: pd.DatetimeIndex
    codes: list[str]
    fields: list[str]
    values: np.ndarray
    missing: list[tuple[str, str]]
    absent: list[str]


def read_grid(
    reader: StoreReader,
    codes: Sequence[str],
    fields: Sequence[str],
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    *,
    threads: int = 2,
) -> Grid:
    """Read `fields` of `codes` (sorted) on the calendar days of [start, end] into one preallocated
    (fields, dates, stocks) block, each file's values written straight into its stock's column."""
    codes = sorted(dict.fromkeys(codes))
    lo, hi = reader._window(0, len(reader.calendar) - 1, start, end)
    directories = [str(reader.layout.stock_dir(code)) for code in codes]
    absent = [code for code, directory in zip(codes, directories, strict=True) if not os.path.isdir(directory)]
    values = np.full((len(fields), hi - lo + 1, len(codes)), np.nan, dtype=np.float32)
    missing: list[tuple[str, str]] = []
    skipped = set(absent)

    def fill_field(k: int, name: str) -> None:
        file_name = f"{name.lower()}{BIN_SUFFIX}"
        spans = read_into_grid(Paths.of([os.path.join(d, file_name) for d in directories]), lo, hi, values[k])
        missing.extend((codes[j], name) for j in np.flatnonzero(spans.first == MISSING) if codes[j] not in skipped)

    with ThreadPoolExecutor(max(1, threads)) as pool:  # the compiled reads release the GIL
        list(pool.map(fill_field, range(len(fields)), fields))
    return Grid(reader.calendar[lo : hi + 1], codes, list(fields), values, sorted(missing), absent)


@dataclass
class _Stock:
    """One stock's rows in a panel: its calendar positions (sorted) and their rows in the panel."""

    directory: str
    positions: np.ndarray
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def contiguous(self) -> bool:
        return len(self.positions) == 0 or self.positions[-1] - self.positions[0] + 1 == len(self.positions)


@dataclass
class Panel:
    """Fields of many stocks in Qlib's (datetime, instrument) row order, as one float32 block.

    `values` is (columns, rows), so `values.T` is the frame's column-major data and pandas wraps it
    without a copy. Rows are the dates each stock has in its files (within the window and, when given,
    its instrument spans), as Qlib's `D.features` gives them. Columns past `fields` are the caller's
    (filled with `fill`); `missing` lists the (code, field) pairs whose file the store lacks, `absent`
    the codes it has no folder for.
    """

    calendar: pd.DatetimeIndex
    codes: list[str]
    fields: list[str]
    values: np.ndarray
    index: pd.MultiIndex
    stocks: dict[str, _Stock]
    missing: list[tuple[str, str]]
    absent: list[str]

    def positions(self, code: str) -> np.ndarray:
        return self.stocks[code].positions

    def fill(self, column: int, code: str, first: int, values: np.ndarray) -> None:
        """Put a stock's values (calendar positions `first`, `first + 1`, ...) into `column`."""
        stock = self.stocks.get(code)
        if stock is not None and len(values):
            _scatter(self.values[column], stock, first, values)

    def frame(self, columns: Sequence[object] | pd.Index) -> pd.DataFrame:
        return pd.DataFrame(self.values.T, index=self.index, columns=columns, copy=False)


def read_panel(
    reader: StoreReader,
    codes: Sequence[str],
    fields: Sequence[str],
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    *,
    spans: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]] | None = None,
    extra_columns: int = 0,
    probe: str = "close",
    threads: int = 2,
) -> Panel:
    """Read `fields` of `codes` straight into their final layout: one preallocated block filled column
    by column from the bin files, with no per-stock frame, concatenation or sort (the peak is the block).

    A stock's rows come from one probe file (`probe`, else its first field); the store writes every
    field of a stock over the same dates, and a field found reaching past them lays the panel out again.
    """
    codes = sorted(dict.fromkeys(codes))
    lo, hi = reader._window(0, len(reader.calendar) - 1, start, end)
    stocks, absent = {}, []
    for code in codes:
        directory = str(reader.layout.stock_dir(code))
        span = _probe(directory, [probe, *fields], lo, hi)
        if span is None:
            absent.append(code)
            continue
        stocks[code] = _Stock(directory, _kept(reader.calendar, span, (spans or {}).get(code)))
    index = _layout(reader.calendar, stocks)
    values, missing, beyond = _fill(stocks, fields, len(index), extra_columns, lo, hi, threads)
    if beyond:  # a field wider than the probe: widen those stocks and read again
        for code, first, last in beyond:
            stock = stocks[code]
            known = (int(stock.positions[0]), int(stock.positions[-1])) if len(stock.positions) else (first, last)
            span = (min(first, known[0]), max(last, known[1]))
            stocks[code] = _Stock(
                stock.directory, np.union1d(stock.positions, _kept(reader.calendar, span, (spans or {}).get(code)))
            )
        del values
        index = _layout(reader.calendar, stocks)
        values, missing, _ = _fill(stocks, fields, len(index), extra_columns, lo, hi, threads)
    return Panel(reader.calendar, list(stocks), list(fields), values, index, stocks, sorted(set(missing)), absent)


def _fill(
    stocks: dict[str, _Stock], fields: Sequence[str], rows: int, extra: int, lo: int, hi: int, threads: int
) -> tuple[np.ndarray, list[tuple[str, str]], list[tuple[str, int, int]]]:
    """The block, filled column by column; missing files; stocks with a field outside their probed rows."""
    values = np.full((len(fields) + extra, rows), np.nan, dtype=np.float32)
    codes = list(stocks)
    sizes = np.array([len(stocks[code].positions) for code in codes], dtype=np.int64)
    position_starts = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=position_starts[1:])
    positions = _concat([stocks[code].positions for code in codes])
    stock_rows = _concat([stocks[code].rows for code in codes])
    probed_first = np.array([p[0] if len(p) else 0 for p in (stocks[c].positions for c in codes)], dtype=np.int64)
    probed_last = np.array([p[-1] if len(p) else -1 for p in (stocks[c].positions for c in codes)], dtype=np.int64)
    missing: list[tuple[str, str]] = []
    beyond: list[tuple[str, int, int]] = []

    def fill_column(j: int, name: str) -> None:
        file_name = f"{name.lower()}{BIN_SUFFIX}"
        paths = Paths.of([os.path.join(stocks[code].directory, file_name) for code in codes])
        spans = read_into_rows(paths, lo, hi, positions, position_starts, stock_rows, values[j])
        missing.extend((codes[i], name) for i in np.flatnonzero(spans.first == MISSING))
        last = spans.first + spans.count - 1
        outside = (spans.count > 0) & ((sizes == 0) | (spans.first < probed_first) | (last > probed_last))
        beyond.extend((codes[i], int(spans.first[i]), int(last[i])) for i in np.flatnonzero(outside))

    with ThreadPoolExecutor(max(1, threads)) as pool:  # the compiled reads release the GIL
        list(pool.map(fill_column, range(len(fields)), fields))
    return values, missing, beyond


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.int64, copy=False) if arrays else np.empty(0, dtype=np.int64)


def _probe(directory: str, names: Sequence[str], lo: int, hi: int) -> tuple[int, int] | None:
    """The positions [first, last] within [lo, hi] of the first of `names` the stock has a file for."""
    for name in names:
        try:
            data = read_raw(os.path.join(directory, f"{name.lower()}{BIN_SUFFIX}"))
        except FileNotFoundError:
            continue
        if data.size < 2:
            return (lo, lo - 1)
        first, part = window(data, lo, hi)
        return (first, first + len(part) - 1)
    return None


def _kept(calendar: pd.DatetimeIndex, span: tuple[int, int], spans: Sequence[tuple] | None) -> np.ndarray:
    """Calendar positions of `span` that lie in one of the instrument `spans` (all when None)."""
    positions = np.arange(span[0], span[1] + 1, dtype=np.int64)
    if spans is None or not len(positions):
        return positions
    dates = calendar[positions]
    mask = np.zeros(len(positions), dtype=bool)
    for begin, stop in spans:
        mask |= (dates >= pd.Timestamp(begin)) & (dates <= pd.Timestamp(stop))
    return positions[mask]


def _layout(calendar: pd.DatetimeIndex, stocks: dict[str, _Stock]) -> pd.MultiIndex:
    """Each stock's panel rows, and the (datetime, instrument) index, sorted as Qlib sorts it."""
    names = ["datetime", "instrument"]
    filled = {code: s for code, s in stocks.items() if len(s.positions)}
    if not filled:
        for stock in stocks.values():
            stock.rows = np.empty(0, dtype=np.int64)
        return pd.MultiIndex(levels=[calendar[:0], pd.Index([], dtype=object)], codes=[[], []], names=names)
    lo = min(int(s.positions[0]) for s in filled.values())
    hi = max(int(s.positions[-1]) for s in filled.values())
    alive = np.zeros((hi - lo + 1, len(filled)), dtype=bool)
    for i, stock in enumerate(filled.values()):
        alive[stock.positions - lo, i] = True
    row_of = np.cumsum(alive.ravel(), dtype=np.int64).reshape(alive.shape) - 1
    for i, stock in enumerate(filled.values()):
        stock.rows = row_of[stock.positions - lo, i]
    for code in set(stocks) - set(filled):
        stocks[code].rows = np.empty(0, dtype=np.int64)
    del row_of
    used = alive.any(axis=1)
    date_code = np.cumsum(used, dtype=np.int64) - 1
    day, stock = np.nonzero(alive)
    return pd.MultiIndex(
        levels=[calendar[lo : hi + 1][used], pd.Index(list(filled), dtype=object)],
        codes=[date_code[day].astype(np.int32), stock.astype(np.int32)],
        names=names,
        verify_integrity=False,
    )


def _scatter(column: np.ndarray, stock: _Stock, first: int, values: np.ndarray) -> None:
    """Write a stock's values (from calendar position `first`) into its rows of one panel column."""
    positions = stock.positions
    a = int(positions.searchsorted(first, "left"))
    b = int(positions.searchsorted(first + len(values), "left"))
    if a >= b:
        return
    if stock.contiguous:
        offset = int(positions[a]) - first
        column[stock.rows[a:b]] = values[offset : offset + b - a]
    else:
        column[stock.rows[a:b]] = values[positions[a:b] - first]
