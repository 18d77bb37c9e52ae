"""The loader: fast reads equal what Qlib reads from the same store, and the fallback equals the store.

References: Qlib's own default provider (`D.features`) on the store the pipeline wrote, and stores built
by the pipeline itself. Every fallback case (no store, a missing column file, a missing stock, a store
older than its input) must return the frame the intact, current store gives, and say what it computed.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from consumers_fixtures import CODES, build, shared_store, store_copy, write_inputs

from precompute_assets.consumers import (
    StaleStoreWarning,
    StockNotFound,
    load_multiple_stocks_with_indicators,
    load_stock_data_with_indicators,
)
from precompute_assets.consumers.loader import load_grid
from precompute_assets.consumers.qlib_session import init_store_qlib, kept_qlib_config
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout

PRICES = ["open", "high", "low", "close", "volume"]
WINDOW = ("2021-03-01", "2022-06-30")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(store: Settings) -> dict[str, pd.DataFrame]:
    """Every registered column of every stock, read from the intact store."""
    frames = load_multiple_stocks_with_indicators(CODES, *WINDOW, settings=store)
    assert all(f.attrs["computed"] == [] for f in frames.values())
    return frames


def test_fast_path_reads_what_qlib_reads(store: Settings) -> None:
    names = ["RSI14", "alpha_001", "MEAN_5", "price_change"]
    frame = load_stock_data_with_indicators("600000.SH", *WINDOW, names, settings=store)
    assert list(frame.columns) == PRICES + names
    assert (frame.dtypes == np.float32).all()
    assert frame.attrs["from_store"] == PRICES + names and frame.attrs["reason"] == ""
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path, fast=False)
        from qlib.data import D

        fields = [f"${c.lower()}" for c in PRICES + names]
        qlib = D.features(["SH600000"], fields, *WINDOW).xs("SH600000", level="instrument")
    np.testing.assert_array_equal(frame.index.values, qlib.index.values)
    np.testing.assert_array_equal(frame.to_numpy(), qlib.to_numpy())


def test_names_are_case_insensitive_and_keep_the_callers_spelling(store: Settings) -> None:
    frame = load_stock_data_with_indicators("SH600519", *WINDOW, ["rsi14", "ALPHA_002", "factor"], settings=store)
    assert list(frame.columns) == [*PRICES, "rsi14", "ALPHA_002", "factor"]
    with pytest.raises(KeyError, match="no registered indicator"):
        load_stock_data_with_indicators("SH600519", *WINDOW, ["NOT_AN_INDICATOR"], settings=store)


def test_all_registered_columns_by_default(reference: dict[str, pd.DataFrame]) -> None:
    frame = reference["SH600000"]
    assert list(frame.columns) == PRICES + load_registry().names()
    assert frame.index[0] >= pd.Timestamp(WINDOW[0]) and frame.index[-1] <= pd.Timestamp(WINDOW[1])


def test_computing_everything_gives_the_stored_frames(store: Settings, reference: dict[str, pd.DataFrame]) -> None:
    computed = load_multiple_stocks_with_indicators(CODES, *WINDOW, settings=store, use_precomputed=False)
    for code in CODES:
        pd.testing.assert_frame_equal(computed[code], reference[code])
        assert computed[code].attrs["from_store"] == []
        assert computed[code].attrs["reason"] == "use_precomputed=False"


def test_no_store(store: Settings, reference: dict[str, pd.DataFrame], tmp_path, caplog) -> None:
    missing = Settings(store.parquet_data_path, tmp_path / "no_store", store.batches)
    with caplog.at_level(logging.WARNING):
        frames = load_multiple_stocks_with_indicators(CODES[:3], *WINDOW, settings=missing)
    for code in CODES[:3]:
        pd.testing.assert_frame_equal(frames[code], reference[code])
        assert frames[code].attrs["reason"].startswith("no store at")
        assert len(frames[code].attrs["computed"]) == len(reference[code].columns)
    assert "no store at" in caplog.text


def test_one_column_file_deleted(store: Settings, reference: dict[str, pd.DataFrame], tmp_path, caplog) -> None:
    damaged = store_copy(store, tmp_path)
    StoreLayout(damaged.qlib_data_path).bin_path("SZ000792", "rsi14").unlink()
    with caplog.at_level(logging.WARNING):
        frames = load_multiple_stocks_with_indicators(["SZ000792", "SH600000"], *WINDOW, settings=damaged)
    frame = frames["SZ000792"]
    pd.testing.assert_frame_equal(frame, reference["SZ000792"])
    assert frame.attrs["computed"] == ["RSI14"]
    assert "RSI14" not in frame.attrs["from_store"] and len(frame.attrs["from_store"]) == len(frame.columns) - 1
    assert "rsi14" in frame.attrs["reason"] and "SZ000792: computing 1 column(s)" in caplog.text
    assert frames["SH600000"].attrs["computed"] == []


def test_one_stock_missing(store: Settings, reference: dict[str, pd.DataFrame], tmp_path) -> None:
    damaged = store_copy(store, tmp_path)
    StoreLayout(damaged.qlib_data_path).stock_dir("SZ300750").unlink()  # the stock's current-version link
    with pytest.warns(StaleStoreWarning, match="not in the store: SZ300750"):
        frame = load_stock_data_with_indicators("SZ300750", *WINDOW, settings=damaged)
    pd.testing.assert_frame_equal(frame, reference["SZ300750"])
    assert frame.attrs["reason"] == "stock not in the store" and frame.attrs["from_store"] == []
    assert frame.attrs["store_stale"]


def test_unknown_stock_is_an_error(store: Settings) -> None:
    with pytest.raises(StockNotFound, match="no input file"):
        load_stock_data_with_indicators("SH601988", *WINDOW, ["RSI14"], settings=store)
    assert load_multiple_stocks_with_indicators(["SH601988"], *WINDOW, ["RSI14"], settings=store) == {}


def test_store_older_than_its_input(tmp_path) -> None:
    """Built while a stock's file ended mid-2021; the input now runs to 2022: warn, and compute the
    dates the store lacks. The reference is a store built from the new input."""
    codes = ["SH600000", "SZ000001"]
    old = build(write_inputs(tmp_path / "old", codes, last="2021-06-30"), tmp_path / "store")
    shutil.rmtree(old.parquet_data_path)
    write_inputs(old.parquet_data_path, codes)
    fresh = build(write_inputs(tmp_path / "new", codes), tmp_path / "fresh")
    window = ("2021-01-01", "2022-12-31")
    expected = load_stock_data_with_indicators("SH600000", *window, ["RSI14", "MACD", "alpha_010"], settings=fresh)
    with pytest.warns(StaleStoreWarning, match="older than its input"):
        frame = load_stock_data_with_indicators("SH600000", *window, ["RSI14", "MACD", "alpha_010"], settings=old)
    pd.testing.assert_frame_equal(frame, expected)
    assert frame.attrs["store_stale"] and "not in the store (input is newer)" in frame.attrs["reason"]
    inside = load_stock_data_with_indicators("SH600000", "2021-01-01", "2021-06-30", ["RSI14"], settings=old)
    assert inside.attrs["computed"] == [] and inside.attrs["store_stale"]


GRID_COLUMNS = ["RSI14", "alpha_016", "alpha_091", "momentum_20d", "factor"]


def bin_file_grid(settings: Settings, codes: list[str], fields: list[str], start: str, end: str) -> dict:
    """(calendar days of [start, end], {field: (days, stocks) array}) read with numpy alone."""
    root = settings.qlib_data_path
    calendar = pd.DatetimeIndex(pd.read_csv(root / "calendars" / "day.txt", header=None)[0])
    days = (calendar >= start) & (calendar <= end)
    out = {}
    for name in fields:
        full = np.full((len(calendar), len(codes)), np.nan, dtype=np.float32)
        for j, code in enumerate(codes):
            data = np.fromfile(root / "features" / code.lower() / f"{name.lower()}.day.bin", dtype="<f4")
            first = int(data[0])
            full[first : first + len(data) - 1, j] = data[1:]
        out[name] = full[days]
    return calendar[days], out


def assert_grid_equals(grid, calendar: pd.DatetimeIndex, expected: dict) -> None:
    np.testing.assert_array_equal(grid.calendar, calendar)
    assert grid.codes == sorted(CODES) and list(grid.columns) == PRICES + GRID_COLUMNS
    for name, values in expected.items():
        np.testing.assert_array_equal(grid.columns[name], values, err_msg=name)


def test_grid_is_the_bin_files_values(store: Settings) -> None:
    calendar, expected = bin_file_grid(store, sorted(CODES), PRICES + GRID_COLUMNS, *WINDOW)
    grid = load_grid(list(reversed(CODES)), *WINDOW, GRID_COLUMNS, settings=store)
    assert_grid_equals(grid, calendar, expected)
    assert all(s["computed"] == [] and s["from_store"] == PRICES + GRID_COLUMNS for s in grid.sources.values())
    computed = load_grid(CODES, *WINDOW, GRID_COLUMNS, settings=store, use_precomputed=False)
    assert_grid_equals(computed, calendar, expected)
    assert all(s["from_store"] == [] for s in computed.sources.values())


def test_grid_computes_a_deleted_column_file(store: Settings, tmp_path) -> None:
    calendar, expected = bin_file_grid(store, sorted(CODES), PRICES + GRID_COLUMNS, *WINDOW)
    damaged = store_copy(store, tmp_path)
    StoreLayout(damaged.qlib_data_path).bin_path("SZ000792", "alpha_016").unlink()
    grid = load_grid(CODES, *WINDOW, GRID_COLUMNS, settings=damaged)
    assert_grid_equals(grid, calendar, expected)
    assert grid.sources["SZ000792"]["computed"] == ["alpha_016"]
    assert grid.sources["SH600000"]["computed"] == []
