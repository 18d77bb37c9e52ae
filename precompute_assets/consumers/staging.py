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

from precompute_assets.store.staging import StagingDir


@contextmanager
def staged_qlib_dir(
    frames: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex, fields: Sequence[str]
) -> Iterator[Path]:
    """A Qlib data directory with `fields` of every frame (keyed by Qlib code), removed afterwards."""
    with TemporaryDirectory(prefix="qlib_staging_") as tmp:
        staging = StagingDir(Path(tmp), calendar)
        for code, frame in frames.items():
            if not frame.empty:
                first = int(calendar.get_loc(frame.index[0]))
                staging.add(code, first, {name: frame[name].to_numpy(np.float32) for name in fields})
        staging.write_instruments()
        yield staging.root
