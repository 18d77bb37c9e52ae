"""Fast reads straight from the bin files (no Qlib), aligned to the store calendar."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.store.bin_file import read_raw
from precompute_assets.store.calendar import read_calendar
from precompute_assets.store.layout import FREQ, StoreLayout


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
