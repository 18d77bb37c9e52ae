"""Input bars per stock, cleaned and placed on the store's trading calendar.

This is what every family computes from, in the precompute and in the consumers' fallback alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets.input.parquet import FIRST_DATE, InputError, StockInput, read_days, read_stock
from precompute_assets.store.stock_commit import align_to_calendar

READ_THREADS = 8
"""Input files read at once: from a cold page cache each read waits on the disk, and threads overlap
those waits (pyarrow and the system calls release the GIL)."""
SCAN_THREADS = 4
"""Files whose dates are scanned at once: a scan is half a millisecond of pyarrow's Python under the
GIL besides its disk waits, so more threads than this contend for the GIL more than they overlap waits."""


@dataclass
class CalendarScan:
    """The union of input dates, and the files that contributed none."""

    dates: pd.DatetimeIndex
    errors: list[InputError] = field(default_factory=list)


@dataclass
class BucketBars:
    """Calendar-aligned bars of the readable stocks of one bucket, and why the others were skipped."""

    bars: dict[str, pd.DataFrame] = field(default_factory=dict)
    inputs: dict[str, StockInput] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)


def scan_calendar(files: Mapping[str, Path], on_calendar: Callable[[str, Path], bool] | None = None) -> CalendarScan:
    """The union of every readable file's dates, counted per day: linear in the market's dates,
    where a sort of them all is not. A file for which `on_calendar(code, path)` vouches that its
    dates are on the calendar already is not read; the question is asked on the scan's threads, so
    its own disk waits overlap the other files' reads."""
    first = np.datetime64(FIRST_DATE.date(), "D")

    def days(item: tuple[str, Path]) -> np.ndarray | InputError | None:
        if on_calendar is not None and on_calendar(*item):
            return None
        try:
            return (read_days(item[1], item[0]) - first).astype(np.int64)
        except InputError as exc:
            return exc

    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        scanned = [found for found in pool.map(days, sorted(files.items())) if found is not None]
    offsets = [found for found in scanned if not isinstance(found, InputError)]
    errors = [found for found in scanned if isinstance(found, InputError)]
    present = np.flatnonzero(np.bincount(np.concatenate(offsets))) if offsets else np.array([], np.int64)
    return CalendarScan(pd.DatetimeIndex((first + present).astype("datetime64[ns]"), name="date"), errors)


def load_bars(
    files: Mapping[str, Path],
    codes: Iterable[str],
    calendar: pd.DatetimeIndex,
    read: Callable[[Path, str], StockInput] = read_stock,
) -> BucketBars:
    """Read (with `read`), clean and align each stock; a bad file is skipped with its `InputError`."""
    out = BucketBars()
    for code in codes:
        path = files[code]
        try:
            stock = read(path, code)
            _, aligned = align_to_calendar(stock.bars, calendar)
        except InputError as exc:
            out.errors.append(exc)
            continue
        except ValueError as exc:
            out.errors.append(InputError(path, code, "calendar", str(exc)))
            continue
        out.bars[code] = aligned
        out.inputs[code] = stock
    return out
