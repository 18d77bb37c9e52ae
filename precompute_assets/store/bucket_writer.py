"""Write one bucket's stocks into the store: base fields plus every family's columns, per stock atomic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from precompute_assets.registry import Registry
from precompute_assets.store.base_fields import base_fields
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import commit_stock


@dataclass
class StockWrite:
    """What one stock's commit holds, for metadata and the manifest."""

    code: str
    rows: int
    first_date: str
    last_date: str
    columns: int
    missing_columns: list[str] = field(default_factory=list)


def write_stock(
    layout: StoreLayout,
    registry: Registry,
    code: str,
    calendar: pd.DatetimeIndex,
    bars: pd.DataFrame,
    family_frames: Mapping[str, pd.DataFrame],
    input_fingerprint: str,
) -> StockWrite:
    """Merge base fields and family columns of one stock, check them, and commit them atomically.

    A family frame must cover exactly the bars' dates and hold only registered names of that family;
    anything else is a programming error and refuses the stock rather than storing misaligned data.
    """
    columns: dict[str, np.ndarray] = dict(base_fields(bars))
    fingerprints: dict[str, str] = {}
    expected: list[str] = []
    for family, frame in family_frames.items():
        names = registry.names(family)
        expected.extend(names)
        if not frame.index.equals(bars.index):
            raise ValueError(f"{code}: {family} rows do not match the bars' dates")
        unknown = [c for c in frame.columns if c not in names]
        if unknown:
            raise ValueError(f"{code}: {family} returned unregistered columns {unknown}")
        for name in frame.columns:
            columns[name.lower()] = frame[name].to_numpy(np.float32)
            fingerprints[name.lower()] = registry.get(name).fingerprint
    start_index = int(calendar.get_loc(bars.index[0]))
    meta = {
        "first_date": f"{bars.index[0]:%Y-%m-%d}",
        "last_date": f"{bars.index[-1]:%Y-%m-%d}",
        "rows": len(bars),
        "input_fingerprint": input_fingerprint,
        "indicators": fingerprints,
    }
    commit_stock(layout, code, start_index, columns, meta)
    missing = [n for n in expected if n.lower() not in fingerprints]
    return StockWrite(code, len(bars), meta["first_date"], meta["last_date"], len(columns), missing)
