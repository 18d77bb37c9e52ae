"""A Qlib feature provider that reads the store's bin files through the store's own read path.

Qlib's `LocalFeatureProvider` builds a storage object per read: a deep copy of its backend config, a
class lookup, and a glob of `calendars/*.txt` to check the frequency. On a wide store that overhead
is most of the cost of `D.features`. This provider resolves the data folder once and returns exactly
what the default one returns (a float32 series indexed by calendar position), so Qlib users get the
same frames faster: `qlib.init(provider_uri=..., feature_provider=FAST_FEATURE_PROVIDER)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from qlib.config import C
from qlib.data.data import FeatureProvider
from qlib.utils import code_to_fname

from precompute_assets.store.bin_file import read_raw
from precompute_assets.store.reader import window

FAST_FEATURE_PROVIDER = {"class": "FastFeatureProvider", "module_path": __name__}
"""The `feature_provider` value for `qlib.init`: a config, so Qlib's worker processes can rebuild it."""


class FastFeatureProvider(FeatureProvider):
    """Reads `features/<code>/<field>.<freq>.bin` directly; the data folder is resolved once per freq."""

    def __init__(self) -> None:
        super().__init__()
        self._roots: dict[str, str] = {}

    def feature(self, instrument: str, field: str, start_index: int, end_index: int, freq: str) -> pd.Series:
        name = f"{code_to_fname(instrument).lower()}/{str(field)[1:].lower()}.{str(freq).lower()}.bin"
        try:
            data = read_raw(os.path.join(self._root(freq), name))
        except FileNotFoundError:
            return pd.Series(dtype=np.float32)
        if data.size < 1:
            return pd.Series(dtype=np.float32)
        lo, values = window(data, start_index, end_index)
        if not len(values):
            return pd.Series(dtype=np.float32)
        return pd.Series(values, index=pd.RangeIndex(lo, lo + len(values)))

    def _root(self, freq: str) -> str:
        root = self._roots.get(freq)
        if root is None:
            root = self._roots[freq] = str(Path(C.dpm.get_data_uri(freq)) / "features")
        return root
