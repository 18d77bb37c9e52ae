"""The fast feature provider gives exactly what Qlib's default provider gives through `D.features`."""

from __future__ import annotations

import pandas as pd
import pytest
from consumers_fixtures import CODES, shared_store

from precompute_assets.consumers import FAST_FEATURE_PROVIDER, init_store_qlib
from precompute_assets.consumers.qlib_session import kept_qlib_config
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.settings import Settings


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_store(tmp_path_factory)


def _features(store: Settings, fast: bool, *args: object, **kwargs: object) -> pd.DataFrame:
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path, fast=fast)
        from qlib.config import C
        from qlib.data import D

        assert (C.feature_provider == FAST_FEATURE_PROVIDER) is fast
        return D.features(*args, **kwargs)


@pytest.mark.parametrize(
    ("instruments", "start", "end"),
    [
        (list(CODES), "2019-01-01", "2022-12-31"),  # every row of every stock
        (["SZ000792", "SH600519"], "2018-06-01", "2019-02-15"),  # starts before the data
        (["SH600000"], "2022-12-20", "2023-03-01"),  # ends after the data
    ],
)
def test_identical_to_qlib_default_provider(store: Settings, instruments: list[str], start: str, end: str) -> None:
    stored = [f"${i.field}" for i in load_registry().all()]
    expressions = ["Ref($close, -2)/Ref($close, -1) - 1", "Mean($close, 5)", "Corr($close, $volume, 10)"]
    fields = ["$open", "$close", "$volume", "$factor", "$vwap", *stored, *expressions, "$not_stored"]
    default = _features(store, False, instruments, fields, start, end)
    fast = _features(store, True, instruments, fields, start, end)
    assert not default.empty
    pd.testing.assert_frame_equal(fast, default)


def test_market_name_and_all_rows(store: Settings) -> None:
    default = _features(store, False, {"market": "all", "filter_pipe": []}, ["$close", "$rsi14"])
    fast = _features(store, True, {"market": "all", "filter_pipe": []}, ["$close", "$rsi14"])
    pd.testing.assert_frame_equal(fast, default)
    assert set(fast.index.unique("instrument")) == set(CODES)
