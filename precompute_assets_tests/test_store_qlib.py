"""The store reads back through Qlib itself exactly as the input (float32), stock by stock, date by date."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CSI300, build_store, copy_inputs, require_refdata

from precompute_assets.indicators.expressions.qlib_engine import init_qlib

BASE = ["open", "high", "low", "close", "volume", "vwap", "factor"]


def expected_input(path) -> pd.DataFrame:
    """The input as the store must hold it, derived here from the raw file and the contract alone."""
    raw = pd.read_parquet(path).set_index("date").sort_index()
    raw = raw[~raw.index.duplicated(keep="last")]
    missing = raw[["open", "high", "low", "close", "volume"]].isna().any(axis=1)
    frame = raw[["open", "high", "low", "close", "volume", "factor"]].copy()
    frame.loc[missing] = np.nan
    frame["vwap"] = (frame["high"] + frame["low"] + frame["close"]) / 3  # no amount in this data
    return frame.astype(np.float32)


def assert_store_equals_input(store_root, codes) -> None:
    from qlib.data import D

    init_qlib(store_root)
    inputs = {code: expected_input(CSI300 / f"{code}.parquet") for code in codes}
    all_dates = sorted(set().union(*(frame.index for frame in inputs.values())))
    assert list(D.calendar(freq="day")) == all_dates
    assert sorted(D.list_instruments(D.instruments("all"), as_list=True)) == sorted(codes)
    features = D.features(list(codes), [f"${f}" for f in BASE], freq="day")
    features.columns = BASE
    for code, expected in inputs.items():
        stored = features.xs(code, level="instrument")
        span = pd.DatetimeIndex(all_dates)
        span = span[(span >= expected.index[0]) & (span <= expected.index[-1])]
        expected = expected.reindex(span)  # a calendar day the stock has no row for is NaN
        assert stored.index.equals(span), code
        for field in BASE:
            np.testing.assert_array_equal(
                stored[field].to_numpy(), expected[field].to_numpy(), err_msg=f"{code} {field}"
            )


def test_store_reads_back_through_qlib_as_the_input(fast_store):
    codes = [p.stem for p in fast_store.parquet_data_path.glob("*.parquet")]
    assert_store_equals_input(fast_store.qlib_data_path, codes)


@pytest.mark.slow
def test_all_302_real_stocks_read_back_through_qlib(tmp_path):
    require_refdata()
    codes = sorted(p.stem for p in CSI300.glob("*.parquet"))
    assert len(codes) == 302
    parquet = copy_inputs(codes, tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data", batches=8)
    assert_store_equals_input(settings.qlib_data_path, codes)
