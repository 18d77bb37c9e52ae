"""Fault injection on real files through `make run`: vendor date formats, misread dates, partial
downloads, history inserted before the calendar, and the summary of problems that stay.

Each test builds a small store of real CSI300 stocks, damages the input the way a vendor or a
download does, runs `make run` (`make_run.main`, the Dagster runs) and compares the store with a
clean build of the good input made by the core pipeline: every stored field of every stock, the
calendar and the instrument list, NaN pattern identical and values within one float32 ulp.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CSI300, build_store, require_refdata

from precompute_assets.input.parquet import read_dates, read_stock
from precompute_assets.store.bin_file import read_bin
from precompute_assets.store.layout import BIN_SUFFIX, StoreLayout

CODES = ("SH600000", "SH600519", "SZ000001", "SZ000538", "SZ000792", "SZ302132", "SH601318", "SZ000002")
ROWS = slice(-420, -60)  # a year and a half of each stock: enough past every warm-up, quick to build


def real_frame(code: str, rows: slice = ROWS) -> pd.DataFrame:
    return pd.read_parquet(CSI300 / f"{code}.parquet").iloc[rows].reset_index(drop=True)


def write_inputs(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for code, frame in frames.items():
        frame.to_parquet(folder / f"{code}.parquet", index=False)
    return folder


def make_run(tmp_path: Path, parquet: Path, store: Path) -> tuple[int, str]:
    """`make run` on this input and store, in a Dagster instance of the test's own; (exit code, output).

    A process of its own, as `make run` is: the Dagster definitions read the store's paths from the
    environment once, when they are imported."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PARQUET_DATA_PATH": str(parquet),
        "QLIB_DATA_PATH": str(store),
        "PRECOMPUTE_BACKUP_AFTER_RUN": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "precompute_assets.cli.make_run"], env=env, capture_output=True, text=True, timeout=1200
    )
    print(done.stdout, done.stderr[-5000:])  # shown when the test fails
    return done.returncode, done.stdout


def stored_fields(store: Path) -> dict[str, dict[str, tuple[int, np.ndarray]]]:
    """Every field of every stock Qlib sees: (first calendar index, values)."""
    features = StoreLayout(store).features_dir
    found = {}
    for stock in sorted(features.iterdir()):
        if stock.name.startswith("."):
            continue
        found[stock.name] = {
            f.name[: -len(BIN_SUFFIX)]: read_bin(f) for f in sorted(stock.iterdir()) if f.name.endswith(BIN_SUFFIX)
        }
    return found


def assert_same_store(store: Path, clean: Path) -> None:
    """The store equals the clean build: calendar, instruments, and every field (NaN pattern, one ulp)."""
    layout, reference = StoreLayout(store), StoreLayout(clean)
    assert layout.calendar_path.read_text() == reference.calendar_path.read_text(), "calendars differ"
    assert layout.instruments_path.read_text() == reference.instruments_path.read_text(), "instruments differ"
    assert_same_fields(stored_fields(store), stored_fields(clean))


def assert_same_fields(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want), "stored stocks differ"
    for stock, fields in want.items():
        assert sorted(got[stock]) == sorted(fields), f"{stock}: fields differ"
        for name, (start, values) in fields.items():
            got_start, got_values = got[stock][name]
            assert got_start == start, f"{stock}.{name}: starts at {got_start}, clean build at {start}"
            assert len(got_values) == len(values), f"{stock}.{name}: {len(got_values)} rows, clean {len(values)}"
            nan = np.isnan(values)
            assert np.array_equal(np.isnan(got_values), nan), f"{stock}.{name}: NaN pattern differs"
            np.testing.assert_array_max_ulp(got_values[~nan], values[~nan], maxulp=1)


def clean_build(tmp_path: Path, frames: dict[str, pd.DataFrame], name: str = "clean") -> Path:
    parquet = write_inputs(tmp_path / name / "parquet", frames)
    return build_store(parquet, tmp_path / name / "qlib_data").qlib_data_path


@pytest.fixture
def inputs() -> dict[str, pd.DataFrame]:
    require_refdata()
    return {code: real_frame(code) for code in CODES}


def vendor_dates(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The same rows with their dates as a vendor may write them."""
    dates = pd.DatetimeIndex(frame["date"])
    written = {
        "int_yyyymmdd": dates.year * 10000 + dates.month * 100 + dates.day,
        "str_yyyymmdd": dates.strftime("%Y%m%d"),
        "str_iso": dates.strftime("%Y-%m-%d"),
        "date": [d.date() for d in dates],
        # 15:00 Shanghai is 07:00 UTC: its local date is the trading day, and so is midnight's
        "tz_shanghai": (dates + pd.Timedelta(hours=15)).tz_localize("Asia/Shanghai"),
        "tz_midnight": dates.tz_localize("Asia/Shanghai"),
    }[kind]
    return frame.assign(date=written)


KINDS = ("int_yyyymmdd", "str_yyyymmdd", "str_iso", "date", "tz_shanghai", "tz_midnight")


@pytest.mark.parametrize("kind", KINDS)
def test_both_readers_read_vendor_dates_as_the_dates_they_mean(tmp_path, kind):
    require_refdata()
    frame = real_frame("SH600000")
    vendor_dates(frame, kind).to_parquet(tmp_path / "SH600000.parquet", index=False)
    stock = read_stock(tmp_path / "SH600000.parquet", "SH600000")
    expected = pd.DatetimeIndex(frame["date"])
    assert stock.bars.index.equals(expected.rename("date")) and stock.quality["bad_dates"] == 0
    assert read_dates(tmp_path / "SH600000.parquet", "SH600000").equals(expected.rename("date"))
    np.testing.assert_array_equal(stock.bars["close"].to_numpy(), frame["close"].to_numpy())


@pytest.mark.slow  # a `make run` or two: about a minute each on two cores
def test_a_store_updated_from_vendor_date_formats_equals_a_clean_build(tmp_path, inputs):
    """The issue's fault 1 as a daily update: files rewritten with integer and string dates, 20 new days."""
    parquet = write_inputs(tmp_path / "parquet", inputs)
    store = build_store(parquet, tmp_path / "qlib_data").qlib_data_path
    grown = {code: real_frame(code, slice(ROWS.start, ROWS.stop + 20)) for code in CODES}
    write_inputs(parquet, grown)
    for code, kind in zip(CODES, KINDS, strict=False):
        vendor_dates(grown[code], kind).to_parquet(parquet / f"{code}.parquet", index=False)
    code, out = make_run(tmp_path, parquet, store)
    assert code == 0
    assert "bad_dates" not in out and "1970" not in out
    assert_same_store(store, clean_build(tmp_path, grown))


@pytest.mark.slow  # a `make run` or two: about a minute each on two cores
def test_dates_in_no_accepted_format_skip_the_stock_and_keep_its_stored_days(tmp_path, inputs):
    """int64 nanoseconds (not YYYYMMDD), strings in another format, and a few rows dated outside
    1990..tomorrow: the first two keep their stored stock, the third loses only those rows."""
    parquet = write_inputs(tmp_path / "parquet", inputs)
    store = build_store(parquet, tmp_path / "qlib_data").qlib_data_path
    grown = {code: real_frame(code, slice(ROWS.start, ROWS.stop + 20)) for code in CODES}
    write_inputs(parquet, grown)
    nanos = grown["SH600000"].assign(date=pd.DatetimeIndex(grown["SH600000"]["date"]).asi8)
    nanos.to_parquet(parquet / "SH600000.parquet", index=False)
    slashes = grown["SZ000001"].assign(date=pd.DatetimeIndex(grown["SZ000001"]["date"]).strftime("%d/%m/%Y"))
    slashes.to_parquet(parquet / "SZ000001.parquet", index=False)
    tomorrow = pd.Timestamp(dt.date.today()) + pd.Timedelta(days=1)
    stray = grown["SH600519"].iloc[[0, 1]].assign(date=[pd.Timestamp("1970-01-01"), tomorrow + pd.Timedelta(days=30)])
    pd.concat([grown["SH600519"], stray]).to_parquet(parquet / "SH600519.parquet", index=False)

    code, out = make_run(tmp_path, parquet, store)
    assert code == 0
    for name in ("SH600000.parquet", "SZ000001.parquet"):
        (line,) = [line for line in out.splitlines() if name in line and "skipped" not in line]
        assert "[bad_dates]" in line, line
    (dropped,) = [line for line in out.splitlines() if "SH600519.parquet" in line]
    assert "[bad_dates]" in dropped and "2 row(s) dropped" in dropped
    # the two skipped stocks keep exactly their stored days; the others are updated as if clean
    expected = {**grown, "SH600000": inputs["SH600000"], "SZ000001": inputs["SZ000001"]}
    assert_same_store(store, clean_build(tmp_path, expected))


@pytest.mark.slow  # a `make run` or two: about a minute each on two cores
def test_a_partial_download_keeps_the_stored_days_and_is_named(tmp_path, inputs):
    """A file cut 30 rows short, one with a month missing inside, and one restated on its own dates."""
    parquet = write_inputs(tmp_path / "parquet", inputs)
    store = build_store(parquet, tmp_path / "qlib_data").qlib_data_path
    cut = inputs["SH600000"].iloc[:-30]
    holed = inputs["SZ000001"].drop(index=range(100, 120))
    restated = inputs["SH600519"].copy()
    restated.loc[200:, ["open", "high", "low", "close"]] *= 1.01  # the vendor's new adjustment, same dates
    write_inputs(parquet, {"SH600000": cut, "SZ000001": holed, "SH600519": restated})

    code, out = make_run(tmp_path, parquet, store)
    assert code == 0
    (line,) = [line for line in out.splitlines() if "SH600000.parquet" in line]
    last = f"{inputs['SH600000']['date'].iloc[-1]:%Y-%m-%d}"
    assert "[history_shrunk]" in line and last in line and "30 stored date(s)" in line
    (line,) = [line for line in out.splitlines() if "SZ000001.parquet" in line]
    first_lost = f"{inputs['SZ000001']['date'].iloc[100]:%Y-%m-%d}"
    assert "[history_shrunk]" in line and "20 stored date(s)" in line and first_lost in line
    assert "SH600519" not in out  # restated values are rebuilt, as before
    assert_same_store(store, clean_build(tmp_path, {**inputs, "SH600519": restated}))


@pytest.mark.slow  # a `make run` or two: about a minute each on two cores
def test_inserted_history_is_published_only_once_every_stock_sits_on_it(tmp_path, inputs):
    """A new stock with history before the calendar's first day while another stock's file is
    unreadable: the new calendar waits (readers keep the old store, unshifted) until that stock can
    be rebuilt onto it too."""
    parquet = write_inputs(tmp_path / "parquet", inputs)
    store = build_store(parquet, tmp_path / "qlib_data").qlib_data_path
    before = stored_fields(store)
    calendar_before = StoreLayout(store).calendar_path.read_text()
    older = real_frame("SH601988", slice(ROWS.start - 40, ROWS.stop))  # starts 40 trading days earlier
    write_inputs(parquet, {"SH601988": older})
    shutil.copy(parquet / "SZ000538.parquet", tmp_path / "SZ000538.good")
    (parquet / "SZ000538.parquet").write_bytes(b"not parquet")

    code, out = make_run(tmp_path, parquet, store)
    assert code != 0
    assert "SZ000538.parquet" in out and "[unreadable]" in out
    (held,) = [line for line in out.splitlines() if line.strip().startswith("- SZ000538:")]
    assert "not rebuilt onto the new calendar" in held
    assert StoreLayout(store).calendar_path.read_text() == calendar_before
    assert_same_fields(stored_fields(store), before)  # the new stock waits with the calendar, nothing moved

    shutil.copy(tmp_path / "SZ000538.good", parquet / "SZ000538.parquet")
    code, out = make_run(tmp_path, parquet, store)
    assert code == 0
    assert "NOT published" not in out
    assert_same_store(store, clean_build(tmp_path, {**inputs, "SH601988": older}))


@pytest.mark.slow  # a `make run` or two: about a minute each on two cores
def test_the_summary_lists_problems_that_stay_and_ignored_columns_once(tmp_path, inputs):
    parquet = write_inputs(tmp_path / "parquet", dict(list(inputs.items())[:4]))
    (parquet / "SZ000538.parquet").write_bytes(b"not parquet")
    store = tmp_path / "qlib_data"
    code, first = make_run(tmp_path, parquet, store)
    assert code == 0
    code, second = make_run(tmp_path, parquet, store)
    assert code == 0 and "0 of 4 buckets to build" in second
    for out in (first, second):
        (line,) = [line for line in out.splitlines() if "SZ000538.parquet" in line]
        assert "[unreadable]" in line
        assert out.count("change (3 files)") == 1  # the refdata's extra column in the 3 readable files, once per run
