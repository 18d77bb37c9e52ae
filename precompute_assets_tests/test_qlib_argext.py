"""The numpy IdxMax/IdxMin against Qlib's own operators, on series with NaN runs and infinities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qlib.data import ops

from precompute_assets.indicators.expressions.qlib_argext import rolling_arg_position
from precompute_assets.indicators.expressions.qlib_segments import GivenSeries


def awkward_series(seed: int, length: int = 400) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=length).round(1)  # rounding makes ties, where the first one must win
    values[rng.random(length) < 0.1] = np.nan
    values[50:80] = np.nan  # a window of nothing but NaN
    values[rng.random(length) < 0.02] = np.inf
    values[rng.random(length) < 0.02] = -np.inf
    return pd.Series(values.astype(np.float32), index=pd.RangeIndex(100, 100 + length))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("window", [1, 5, 20, 60, 500])
@pytest.mark.parametrize(("operator", "pick"), [(ops.IdxMax, np.argmax), (ops.IdxMin, np.argmin)])
def test_numpy_windows_equal_qlibs_operator_bit_for_bit(seed, window, operator, pick):
    series = awkward_series(seed)
    expected = operator(GivenSeries(series), window)._load_internal("x", series.index[0], series.index[-1])
    got = rolling_arg_position(series, window, pick)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    assert got.index.equals(expected.index)
