"""A Qlib data directory written from arrays, for Qlib code that can only read through `D.features`.

The store's own format (calendar, instrument list, one bin file per field), so Qlib reads staged
values exactly as it would read the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets.store.bin_file import write_bin
from precompute_assets.store.calendar import write_calendar
from precompute_assets.store.layout import StoreLayout, instrument_line


class StagingDir:
    """Instruments added one by one on a fixed calendar; `write_instruments` lists those added so far."""

    def __init__(self, root: Path, calendar: pd.DatetimeIndex) -> None:
        self.layout = StoreLayout(Path(root))
        self.calendar = calendar
        self._lines: list[str] = []
        write_calendar(self.layout, calendar)
        self.layout.instruments_path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self.layout.root

    def add(self, code: str, start: int, fields: Mapping[str, np.ndarray]) -> None:
        """One instrument whose rows start at calendar position `start` (every field the same length)."""
        self.layout.stock_dir(code).mkdir(parents=True, exist_ok=True)
        rows = 0
        for name, values in fields.items():
            write_bin(self.layout.bin_path(code, name), start, np.asarray(values, np.float32))
            rows = len(values)
        first, last = self.calendar[start], self.calendar[start + rows - 1]
        self._lines.append(instrument_line(code, f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}"))

    def write_instruments(self) -> None:
        self.layout.instruments_path.write_text("".join(self._lines))
