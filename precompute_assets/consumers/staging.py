"""A temporary Qlib data directory written from loaded frames, for Qlib code when the store can't serve.

Qlib's exchange and its `Alpha158` handler read through `D.features`, which needs a data directory.
When the prices were computed from the input (no store, or `use_precomputed=False`), the frames are
written here in the store's own format and calendar, so Qlib sees the very values the store would hold.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pandas as pd

from precompute_assets.store.bin_file import write_bin
from precompute_assets.store.calendar import write_calendar
from precompute_assets.store.layout import StoreLayout


@contextmanager
def staged_qlib_dir(
    frames: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex, fields: Sequence[str]
) -> Iterator[Path]:
    """A Qlib data directory with `fields` of every frame (keyed by Qlib code), removed afterwards."""
    with TemporaryDirectory(prefix="qlib_staging_") as tmp:
        layout = StoreLayout(Path(tmp))
        write_calendar(layout, calendar)
        lines = []
        for code, frame in frames.items():
            if frame.empty:
                continue
            layout.stock_dir(code).mkdir(parents=True, exist_ok=True)
            first = int(calendar.get_loc(frame.index[0]))
            for name in fields:
                write_bin(layout.bin_path(code, name), first, frame[name].to_numpy(np.float32))
            lines.append(f"{code}\t{frame.index[0]:%Y-%m-%d}\t{frame.index[-1]:%Y-%m-%d}\n")
        layout.instruments_path.parent.mkdir(parents=True, exist_ok=True)
        layout.instruments_path.write_text("".join(lines))
        yield layout.root
