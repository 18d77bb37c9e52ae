"""Per-stock commits are atomic, and the calendar never leaves a stock misaligned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CSI300, build_store, copy_inputs

from precompute_assets.build import intermediates
from precompute_assets.build.bucket_state import stale_reason
from precompute_assets.build.bucket_writer import _dates_within
from precompute_assets.build.pipeline import bucket_input_versions, build_calendar
from precompute_assets.store import stock_commit
from precompute_assets.store.calendar import read_calendar, read_working_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader


def test_a_crash_in_the_middle_of_a_stock_leaves_the_old_version_whole(tmp_path, monkeypatch):
    layout = StoreLayout(tmp_path)
    old = {"close": np.arange(10, dtype=np.float32), "open": np.arange(10, dtype=np.float32) + 1}
    stock_commit.commit_stock(layout, "SH600000", 3, old, {"first_date": "x", "last_date": "y", "rows": 10})

    written = []
    real_encode = stock_commit.encode

    def crash_on_second_file(start, values):
        written.append(1)
        if len(written) == 2:
            raise OSError("simulated crash: disk pulled")
        return real_encode(start, values)

    monkeypatch.setattr(stock_commit, "encode", crash_on_second_file)
    new = {"close": np.full(12, 7, np.float32), "open": np.full(12, 8, np.float32)}
    with pytest.raises(OSError, match="simulated crash"):
        stock_commit.commit_stock(layout, "SH600000", 0, new, {"first_date": "x", "last_date": "z", "rows": 12})

    for field, values in old.items():
        data = np.fromfile(layout.bin_path("SH600000", field), dtype="<f4")
        assert data[0] == 3 and np.array_equal(data[1:], values)
    assert stock_commit.read_stock_meta(layout, "SH600000")["rows"] == 10

    monkeypatch.setattr(stock_commit, "encode", real_encode)  # the next run completes it
    stock_commit.commit_stock(layout, "SH600000", 0, new, {"first_date": "x", "last_date": "z", "rows": 12})
    assert np.array_equal(np.fromfile(layout.bin_path("SH600000", "close"), dtype="<f4")[1:], new["close"])
    assert not list((layout.versions_dir / "sh600000").glob("*.tmp"))


def test_dates_inserted_into_history_reindex_every_affected_stock(tmp_path):
    codes = ("SH600000", "SZ000001", "SH600519")
    parquet = copy_inputs(codes, tmp_path / "parquet")
    holes = pd.read_parquet(CSI300 / "SH600000.parquet")["date"].iloc[[100, 101, 500]]
    for code in codes:  # no input has these dates: the first calendar lacks them
        frame = pd.read_parquet(parquet / f"{code}.parquet")
        frame[~frame["date"].isin(holes)].to_parquet(parquet / f"{code}.parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    layout = StoreLayout(settings.qlib_data_path)
    assert not read_calendar(layout).isin(holes).any()

    copy_inputs(["SH600000"], parquet)  # the full history comes back for one stock: dates are inserted
    build_calendar(settings)
    versions = bucket_input_versions(settings, ["b00", "b01", "b02", "b03"])
    reasons = {stale_reason(layout, b, v, read_working_calendar(layout)) for b, v in versions.items()}
    assert None not in reasons and "calendar history changed" in reasons
    build_store(parquet, settings.qlib_data_path)

    calendar = read_calendar(layout)
    assert calendar.isin(holes).sum() == 3
    reader = StoreReader(layout)
    other = reader.read("SZ000001", ["close"])
    assert other.loc[holes, "close"].isna().all()  # a day the stock has no row for is NaN, not a neighbour
    full = pd.read_parquet(CSI300 / "SZ000001.parquet").set_index("date")["close"].astype(np.float32)
    np.testing.assert_array_equal(other["close"].drop(holes).to_numpy(), full.drop(holes).to_numpy())
    assert_store_equals_input_subset(settings, parquet)


def assert_store_equals_input_subset(settings, parquet):
    """The rebuilt store matches its (modified) input through Qlib, like a fresh build would."""
    fresh = build_store(parquet, settings.qlib_data_path.parent / "fresh")
    a, b = StoreReader(StoreLayout(settings.qlib_data_path)), StoreReader(StoreLayout(fresh.qlib_data_path))
    assert a.calendar.equals(b.calendar)
    for code in ("SH600000", "SZ000001", "SH600519"):
        fields = a.fields(code)
        assert fields == b.fields(code)
        pd.testing.assert_frame_equal(a.read(code, fields), b.read(code, fields))


def test_rerunning_on_unchanged_input_changes_nothing(fast_store):
    layout = StoreLayout(fast_store.qlib_data_path)
    calendar = read_calendar(layout)
    versions = bucket_input_versions(fast_store, ["b00", "b01", "b02", "b03"])
    assert {stale_reason(layout, b, v, calendar) for b, v in versions.items()} == {None}


def test_intermediates_keep_each_stocks_own_columns(tmp_path):
    """A bucket mixing inputs with and without `amount` must not give the others an all-NaN `amount`."""
    dates = pd.date_range("2024-01-01", periods=3, name="date")
    with_amount = pd.DataFrame({"close": [1.0, 2.0, 3.0], "amount": [5.0, 6.0, 7.0]}, index=dates)
    without = pd.DataFrame({"close": [4.0, np.nan, 6.0]}, index=dates[:3])
    path = tmp_path / "bars.arrow"
    intermediates.write_frames(path, {"SH600000": with_amount, "SZ000001": without})
    back = intermediates.read_frames(path)
    pd.testing.assert_frame_equal(back["SH600000"], with_amount, check_freq=False)
    pd.testing.assert_frame_equal(back["SZ000001"], without, check_freq=False)


def test_intermediates_keep_dtypes_and_store_one_nan(tmp_path):
    """Family columns (float32) come back as written, every NaN as numpy's one NaN whatever its sign or
    payload (a fresh build and an update write the same bytes); frames with a non-float column, or
    floats of two widths, take pandas' conversion and come back as written too."""
    dates = pd.date_range("2024-01-01", periods=3, name="date")
    odd_nan = np.array([0x7FC00001, 0xFFC00000], dtype=np.uint32).view(np.float32)  # a payload, a negative NaN
    family = {
        "SH600000": pd.DataFrame({"a": np.float32([1.5, odd_nan[0], 2.5]), "b": np.float32([odd_nan[1], 0, 1])}, dates),
        "SZ000001": pd.DataFrame({"a": np.float32([np.nan]), "b": np.float32([3])}, dates[:1]),
    }
    mixed = {"SH600000": pd.DataFrame({"close": [1.0, 2.0, 3.0], "note": ["x", "y", "z"]}, index=dates)}
    widths = {"SH600000": pd.DataFrame({"close": [1.0, 2.0, 3.0], "x": np.float32([1, np.nan, 3])}, index=dates)}
    for name, frames in (("family", family), ("mixed", mixed), ("widths", widths)):
        path = tmp_path / f"{name}.arrow"
        intermediates.write_frames(path, frames)
        back = intermediates.read_frames(path)
        assert list(back) == list(frames)
        for code, frame in frames.items():
            pd.testing.assert_frame_equal(back[code], frame, check_freq=False)
    canonical = np.array(np.nan, dtype=np.float32).view(np.uint32)
    values = intermediates.read_frames(tmp_path / "family.arrow")["SH600000"].to_numpy()
    assert set(values[np.isnan(values)].view(np.uint32).tolist()) == {int(canonical)}


def test_a_family_frame_with_a_date_outside_the_bars_is_found_as_pandas_finds_it():
    bars = pd.DatetimeIndex(pd.bdate_range("2020-01-01", periods=300))
    cases = [
        bars[-5:],
        bars[-5:].as_unit("ms"),  # the intermediates' frames may come back in another unit
        bars[:0],
        bars,
        pd.DatetimeIndex(["2019-12-31"]),
        pd.DatetimeIndex([bars[-1] + pd.Timedelta(days=1)]).as_unit("s"),
        pd.DatetimeIndex(["2020-01-04"]),  # a Saturday, between two bars
        bars[:0].append(pd.DatetimeIndex([bars[3], pd.Timestamp("2020-01-05")])),
    ]
    for dates in cases:
        assert _dates_within(dates, bars) == bool(dates.isin(bars).all()), list(dates[:3])
    assert not _dates_within(bars[:2], bars[:0])
