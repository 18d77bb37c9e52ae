"""Every bad-input rule of the input contract: a clear message, the other stocks untouched, nothing lost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import build_store, copy_inputs

from precompute_assets.input.parquet import InputError, canonical_code, read_dates, read_stock, scan_folder
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader

GOOD = ("SH600000", "SZ000001", "SH600519")


def real_frame(code: str = "SH600000", rows: int = 300) -> pd.DataFrame:
    from conftest import CSI300

    return pd.read_parquet(CSI300 / f"{code}.parquet").iloc[:rows].reset_index(drop=True)


@pytest.mark.parametrize(
    ("stem", "code"),
    [
        ("600000.SH", "SH600000"),
        ("SH600000", "SH600000"),
        ("600000_SH", "SH600000"),
        ("sh600000", "SH600000"),
        ("000001.sz", "SZ000001"),
        ("BJ830001", "BJ830001"),
    ],
)
def test_code_spellings_map_to_the_canonical_code(stem, code):
    assert canonical_code(stem) == code


def test_date_may_be_the_index(tmp_path):
    frame = real_frame().set_index("date")
    frame.to_parquet(tmp_path / "SH600000.parquet")
    stock = read_stock(tmp_path / "SH600000.parquet", "SH600000")
    assert len(stock.bars) == len(frame) and stock.ignored_columns == ["change"]
    # the calendar scan reads the dates alone, and must find them in the index too
    dates = read_dates(tmp_path / "SH600000.parquet", "SH600000")
    assert dates.equals(pd.DatetimeIndex(pd.to_datetime(frame.index)).normalize())


def skip_message(tmp_path, name: str, write) -> InputError:
    """Write one bad file beside good ones; return the error the reader raised for it."""
    copy_inputs(GOOD, tmp_path)
    write(tmp_path / name)
    folder = scan_folder(tmp_path)
    errors = list(folder.errors)
    for code, path in folder.files.items():
        try:
            read_stock(path, code)
        except InputError as exc:
            errors.append(exc)
    assert len(errors) == 1, errors
    return errors[0]


def test_unreadable_file_is_skipped_with_its_name(tmp_path):
    error = skip_message(tmp_path, "SZ000002.parquet", lambda p: p.write_bytes(b"not parquet at all"))
    assert error.rule == "unreadable" and "SZ000002.parquet" in str(error) and "SZ000002" in str(error)


def test_missing_required_column_is_named(tmp_path):
    error = skip_message(tmp_path, "SZ000002.parquet", lambda p: real_frame().drop(columns="volume").to_parquet(p))
    assert error.rule == "missing_column" and "volume" in str(error)


def test_empty_file_is_skipped(tmp_path):
    error = skip_message(tmp_path, "SZ000002.parquet", lambda p: real_frame().iloc[:0].to_parquet(p))
    assert error.rule == "empty" and "SZ000002" in str(error)


def test_file_name_that_is_not_a_stock_code(tmp_path):
    error = skip_message(tmp_path, "prices_backup.parquet", lambda p: real_frame().to_parquet(p))
    assert error.rule == "file_name" and "prices_backup" in str(error)


def test_two_spellings_of_one_code_are_both_refused(tmp_path):
    copy_inputs(GOOD, tmp_path)
    real_frame().to_parquet(tmp_path / "600000.SH.parquet")
    folder = scan_folder(tmp_path)
    assert "SH600000" not in folder.files
    assert {e.rule for e in folder.errors} == {"duplicate_code"} and len(folder.errors) == 2


def test_row_rules_are_applied_and_counted(tmp_path):
    frame = real_frame()
    frame.loc[10, "close"] = np.nan  # NaN in a required column: a missing day
    frame.loc[20, "open"] = -1.0  # a negative price: impossible, a missing day
    frame.loc[30, ["high", "low"]] = [1.0, 2.0]  # high < low: impossible
    frame = frame.iloc[::-1]  # unsorted
    frame = pd.concat([frame, frame.loc[[40]].assign(close=999.0)])  # a duplicate date: the file's last row wins
    frame.to_parquet(tmp_path / "SH600000.parquet")
    stock = read_stock(tmp_path / "SH600000.parquet", "SH600000")
    q = stock.quality
    assert (q["nan_rows"], q["impossible_rows"], q["duplicate_dates"], q["unsorted"]) == (1, 2, 1, 1)
    bars = stock.bars
    assert bars.index.is_monotonic_increasing and bars.index.is_unique and len(bars) == 300
    dates = real_frame()["date"]
    assert bars.loc[dates[[10, 20, 30]]].isna().all().all()
    assert bars.loc[dates[40], "close"] == 999.0


def test_bad_files_never_touch_stored_data_or_other_stocks(tmp_path):
    parquet = copy_inputs(GOOD, tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    reader = StoreReader(StoreLayout(settings.qlib_data_path))
    before = {code: reader.read(code, ["close", "rsi14", "alpha_001"]) for code in GOOD}

    (parquet / "SH600000.parquet").write_bytes(b"\x00garbage")  # unreadable now
    real_frame("SZ000001").drop(columns="close").to_parquet(parquet / "SZ000001.parquet")  # missing column
    build_store(parquet, settings.qlib_data_path)

    reader = StoreReader(StoreLayout(settings.qlib_data_path))
    for code in GOOD:
        pd.testing.assert_frame_equal(reader.read(code, ["close", "rsi14", "alpha_001"]), before[code])


def test_a_run_reports_skipped_files_in_its_metadata(tmp_path):
    from dagster import DagsterInstance, materialize

    from precompute_assets.build.buckets import bucket_of
    from precompute_assets.defs.precompute import PRECOMPUTE_ASSETS
    from precompute_assets.defs.resources import PrecomputeSettings

    parquet = copy_inputs(GOOD, tmp_path / "parquet")
    real_frame().drop(columns="high").to_parquet(parquet / "SZ000002.parquet")
    resources = {"precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(tmp_path / "q"))}
    instance = DagsterInstance.ephemeral()
    assert materialize(
        PRECOMPUTE_ASSETS, selection=["trading_calendar"], resources=resources, instance=instance
    ).success
    bucket = bucket_of("SZ000002", 4)
    result = materialize(
        PRECOMPUTE_ASSETS, selection=["stock_bars"], partition_key=bucket, resources=resources, instance=instance
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("stock_bars")
    assert materialization.metadata["stocks_skipped"].value == 1
    skipped = materialization.metadata["skipped"].value
    assert "SZ000002.parquet" in skipped and "missing_column" in skipped and "high" in skipped
