"""A Qlib feature provider that reads the store's bin files with one `numpy.fromfile` per field.

Qlib's `LocalFeatureProvider` builds a storage object per read: a deep copy of its backend config, a
class lookup, and a glob of `calendars/*.txt` to check the frequency. On a wide store that overhead
is most of the cost of `D.features`. This provider resolves the data folder once and returns exactly
what the default one returns (a float32 series indexed by calendar position), so Qlib users get the
same frames faster: `qlib.init(provider_uri=..., feature_provider=FAST_FEATURE_PROVIDER)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from qlib.config import C
from qlib.data.data import FeatureProvider
from qlib.utils import code_to_fname

from precompute_assets.store.bin_file import DTYPE

FAST_FEATURE_PROVIDER = {"class": "FastFeatureProvider", "module_path": __name__}
"""The `feature_provider` value for `qlib.init`: a config, so Qlib's worker processes can rebuild it."""


class FastFeatureProvider(FeatureProvider):
    """Reads `features/<code>/<field>.<freq>.bin` directly; the data folder is resolved once per freq."""

    def __init__(self) -> None:
        super().__init__()
        self._roots: dict[str, Path] = {}

    def feature(self, instrument: str, field: str, start_index: int, end_index: int, freq: str) -> pd.Series:
        name = f"{code_to_fname(instrument).lower()}/{str(field)[1:].lower()}.{str(freq).lower()}.bin"
        try:
            data = np.fromfile(self._root(freq) / name, dtype=DTYPE)
        except FileNotFoundError:
            return pd.Series(dtype=np.float32)
        if data.size < 1:
            return pd.Series(dtype=np.float32)
        first, values = int(data[0]), data[1:]
        lo = first if start_index is None else max(int(start_index), first)
        hi = first + len(values) - 1 if end_index is None else min(int(end_index), first + len(values) - 1)
        if lo > hi:
            return pd.Series(dtype=np.float32)
        return pd.Series(values[lo - first : hi - first + 1], index=pd.RangeIndex(lo, hi + 1))

    def _root(self, freq: str) -> Path:
        root = self._roots.get(freq)
        if root is None:
            root = self._roots[freq] = Path(C.dpm.get_data_uri(freq)) / "features"
        return root
