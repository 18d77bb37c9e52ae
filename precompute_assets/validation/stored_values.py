"""A stock's stored columns read straight from its bin files and placed on the working calendar.

The project's `StoreReader` hides rows past the published calendar (an update not yet published);
validation must see exactly those rows, so it reads the files itself. Damaged files read as far as
they go: judging them is the integrity check's job.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from precompute_assets.store.bin_file import DTYPE, open_for_reading, read_raw
from precompute_assets.store.file_stats import MISSING, stat_files
from precompute_assets.store.layout import FREQ, StoreLayout
from precompute_assets.store.stock_commit import bin_entries

HEADER = struct.Struct("<f")  # a bin file's first float32 (DTYPE): the calendar index of row 0


def read_stored(
    layout: StoreLayout,
    code: str,
    fields: Iterable[str],
    calendar: pd.DatetimeIndex,
    index: pd.DatetimeIndex,
    known_starts: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """`fields` (lower case) of one stock on `index` (dates of `calendar`); absent values are NaN, and
    a field without a file has no column.

    A field in `known_starts` (a file a run only appended to, its first row's calendar index as the
    stock's record gives it) is read from the bytes of the rows on `index` alone, not from its header
    on: after a daily update, the appended values, in the page the append wrote."""
    names, columns = _read_columns(layout, code, fields, calendar, index, known_starts or {})
    block = np.stack(columns, axis=1) if columns else np.empty((len(index), 0), np.float32)
    return pd.DataFrame(block, index=index, columns=names)


def read_stored_block(
    layout: StoreLayout,
    code: str,
    fields: Sequence[str],
    calendar: pd.DatetimeIndex,
    index: pd.DatetimeIndex,
    known_starts: Mapping[str, int] | None = None,
) -> np.ndarray:
    """`read_stored` as one float64 array with a column per field (NaN for a field without a file):
    no frame for a stock whose few appended rows are stacked with many others'."""
    block = np.full((len(index), len(fields)), np.nan)
    names, columns = _read_columns(layout, code, fields, calendar, index, known_starts or {})
    for name, column in zip(names, columns, strict=True):
        block[:, list(fields).index(name)] = column
    return block


def _read_columns(
    layout: StoreLayout,
    code: str,
    fields: Iterable[str],
    calendar: pd.DatetimeIndex,
    index: pd.DatetimeIndex,
    known_starts: Mapping[str, int],
) -> tuple[list[str], list[np.ndarray]]:
    positions = calendar.get_indexer(index)
    directory = str(layout.stock_dir(code))
    names, columns = [], []
    for name in fields:
        path = os.path.join(directory, f"{name.lower()}.{FREQ}.bin")
        start = known_starts.get(name.lower())
        try:
            column = _read_rows(path, start, positions) if start is not None else _read_placed(path, positions)
        except (FileNotFoundError, ValueError):
            continue
        names.append(name)
        columns.append(column)
    return names, columns


def _read_placed(path: str, positions: np.ndarray) -> np.ndarray:
    """The file's values at calendar `positions`, placed by its own header (read whole)."""
    data = read_raw(path)
    column = np.full(len(positions), np.nan, dtype=np.float32)
    if data.size > 1 and np.isfinite(data[0]):  # an overwritten header places nothing
        start, values = int(data[0]), data[1:]
        offset = positions - start
        inside = (positions >= 0) & (offset >= 0) & (offset < len(values))
        column[inside] = values[offset[inside]]
    return column


def _read_rows(path: str, start: int, positions: np.ndarray) -> np.ndarray:
    """The file's values at calendar `positions`, its first row at `start`: one read of the bytes
    from the first wanted row to the last (what the file lacks stays NaN)."""
    column = np.full(len(positions), np.nan, dtype=np.float32)
    offset = positions - start
    wanted = (positions >= 0) & (offset >= 0)
    fd = open_for_reading(path)
    try:
        if not wanted.any():
            return column
        first, last = int(offset[wanted].min()), int(offset[wanted].max())
        raw = os.pread(fd, DTYPE.itemsize * (last - first + 1), DTYPE.itemsize * (1 + first))
    finally:
        os.close(fd)
    values = np.frombuffer(raw[: len(raw) - len(raw) % DTYPE.itemsize], dtype=DTYPE)
    inside = wanted & (offset - first < len(values))
    column[inside] = values[offset[inside] - first]
    return column


def stored_span(calendar: pd.DatetimeIndex, meta: dict) -> pd.DatetimeIndex:
    """The dates `_stock.json` says the stock covers, clipped to the calendar."""
    start = int(meta.get("start_index", 0))
    stop = min(start + int(meta.get("rows", 0)), len(calendar))
    return calendar[start:stop] if start < stop else pd.DatetimeIndex([], name="date")


def stored_fields(layout: StoreLayout, code: str) -> list[str]:
    """Field names (lower case) with a bin file in the stock's current folder."""
    directory = layout.stock_dir(code)
    if not directory.is_dir():
        return []
    return sorted(p.name.split(".")[0] for p in directory.glob(f"*.{FREQ}.bin"))


def file_spans(
    layout: StoreLayout, code: str, known_starts: Mapping[str, int] | None = None
) -> dict[str, tuple[int, int]]:
    """Per field (lower case) with a bin file: (calendar index of the first row, row count), from its
    header and size; a file whose header is not a number spans nothing.

    Each file costs one open, a 4-byte read and an fstat: a buffered file object, a stat by path and
    numpy scalars per file cost several times that over a stock's hundreds of files. A field in
    `known_starts` (a file a run only appended to, whose header the append left as the stock's record
    gives it) costs a `statx` alone (`file_stats`, one compiled pass for all of them): its header is
    a page the append did not touch, often no longer in memory, and reading it for every file was
    most of the check after a daily update.
    """
    try:
        entries = bin_entries(layout, code)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    known_starts = known_starts or {}
    known = [field for field in entries if field in known_starts]
    sizes = stat_files([entries[field].path for field in known]).size.tolist()
    spans = {
        field: (known_starts[field], size // DTYPE.itemsize - 1)
        for field, size in zip(known, sizes, strict=True)
        if size != MISSING  # a link to nothing: no file
    }
    for field, entry in entries.items():
        if field in known_starts:
            continue
        fd = open_for_reading(entry.path)
        try:
            header = os.read(fd, HEADER.size)
            rows = os.fstat(fd).st_size // DTYPE.itemsize - 1
        finally:
            os.close(fd)
        start = HEADER.unpack(header)[0] if len(header) == HEADER.size else math.nan
        spans[field] = (int(start), rows) if math.isfinite(start) else (0, 0)
    return spans
