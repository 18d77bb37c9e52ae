"""Daily updates as they come after the close: each equals a fresh build of its input, and writes only what changed.

One store is taken through three updates in a row: one new day for every stock, then two new days at
once (a skipped evening), then one new day while one stock's history is restated. After each, it is
compared with a store built from scratch on the same input.
"""

from __future__ import annotations

import pandas as pd
from conftest import CSI300, build_store, require_refdata, run_pipeline
from test_incremental import assert_within_one_ulp

from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader

# Long suspensions and a +306% jump (SZ000792), a late listing with a NaN row (SZ302132), large caps.
CODES = ("SH600000", "SH600519", "SH601318", "SZ000001", "SZ000538", "SZ000792", "SZ302132", "SH600036", "SZ000002")
BATCHES = 2
CUT = pd.Timestamp("2024-06-28")


def write_inputs(folder, end: pd.Timestamp, restate: str | None = None) -> int:
    """Every stock's input up to `end`; `restate`'s row 100 scaled by 1.01 (a corrected old price).
    Returns the number of stocks with a row on `end`."""
    folder.mkdir(parents=True, exist_ok=True)
    with_row = 0
    for code in CODES:
        frame = pd.read_parquet(CSI300 / f"{code}.parquet")
        frame = frame[frame["date"] <= end].reset_index(drop=True)
        if code == restate:
            frame.loc[100, ["open", "high", "low", "close"]] *= 1.01
        with_row += int(frame["date"].iloc[-1] == end)
        frame.to_parquet(folder / f"{code}.parquet")
    return with_row


def assert_equals_fresh_build(settings: Settings, root, name: str) -> None:
    fresh = build_store(settings.parquet_data_path, root / f"fresh_{name}", BATCHES)
    updated = StoreReader(StoreLayout(settings.qlib_data_path))
    rebuilt = StoreReader(StoreLayout(fresh.qlib_data_path))
    assert updated.calendar.equals(rebuilt.calendar), name
    for code in CODES:
        fields = rebuilt.fields(code)
        assert updated.fields(code) == fields, f"{name}: {code}"
        a, b = updated.read(code, fields), rebuilt.read(code, fields)
        assert a.index.equals(b.index), f"{name}: {code}"
        for field in fields:
            assert_within_one_ulp(a[field].to_numpy(), b[field].to_numpy(), f"{name}: {code}.{field}")


def totals(work: dict[str, dict]) -> dict[str, int]:
    keys = ("stocks_rebuilt", "stocks_updated", "rows_written")
    return {key: sum(report[key] for report in work.values()) for key in keys}


def test_a_day_a_skipped_day_and_a_restatement_each_equal_a_fresh_build(tmp_path):
    require_refdata()
    days = pd.DatetimeIndex(sorted(pd.read_parquet(CSI300 / f"{CODES[0]}.parquet")["date"]))
    start = days.get_loc(CUT)
    parquet = tmp_path / "parquet"
    settings = Settings(parquet, tmp_path / "store", BATCHES)
    write_inputs(parquet, days[start])
    run_pipeline(settings)

    # One new day for every stock: one row each, nothing rebuilt.
    traded = write_inputs(parquet, days[start + 1])
    assert traded == len(CODES)
    work = run_pipeline(settings)
    assert totals(work) == {"stocks_rebuilt": 0, "stocks_updated": len(CODES), "rows_written": len(CODES)}
    assert_equals_fresh_build(settings, tmp_path, "one day")

    # A skipped evening: the store is two trading days behind its input.
    write_inputs(parquet, days[start + 3])
    work = run_pipeline(settings)
    assert totals(work) == {"stocks_rebuilt": 0, "stocks_updated": len(CODES), "rows_written": 2 * len(CODES)}
    assert_equals_fresh_build(settings, tmp_path, "two days")

    # One stock restated while every other gets one new day: that one rebuilt in full, the others appended.
    restated = CODES[0]
    write_inputs(parquet, days[start + 4], restate=restated)
    work = run_pipeline(settings)
    restated_rows = len(pd.read_parquet(parquet / f"{restated}.parquet"))
    assert totals(work) == {
        "stocks_rebuilt": 1,
        "stocks_updated": len(CODES) - 1,
        "rows_written": len(CODES) - 1 + restated_rows,
    }
    assert_equals_fresh_build(settings, tmp_path, "restated")


def test_damage_found_by_an_update_s_appends_is_rebuilt_in_the_same_run(tmp_path):
    """The planner does not stat a stock it appends to: the append checks each file's size on its own
    descriptor, and a stock whose files differ from their record (a killed append's leftover, a cut
    file, a missing one) is rebuilt in full by the same run, equal to a fresh build."""
    require_refdata()
    days = pd.DatetimeIndex(sorted(pd.read_parquet(CSI300 / f"{CODES[0]}.parquet")["date"]))
    start = days.get_loc(CUT)
    parquet = tmp_path / "parquet"
    settings = Settings(parquet, tmp_path / "store", BATCHES)
    write_inputs(parquet, days[start])
    run_pipeline(settings)
    layout = StoreLayout(settings.qlib_data_path)
    damaged = CODES[1:4]
    extended, cut, missing = (layout.bin_path(c, f) for c, f in zip(damaged, ("close", "rsi14", "ma20"), strict=True))
    with extended.open("ab") as handle:  # what a run killed between its appends and `_stock.json` leaves
        handle.write(b"\x00\x00\x80\x3f")
    cut.write_bytes(cut.read_bytes()[:-4])
    missing.unlink()
    versions = {code: layout.stock_dir(code).resolve() for code in CODES}

    write_inputs(parquet, days[start + 1])
    work = run_pipeline(settings)
    assert {k: v for k, v in totals(work).items() if k != "rows_written"} == {
        "stocks_rebuilt": len(damaged),
        "stocks_updated": len(CODES) - len(damaged),
    }
    assert sorted(c for c in CODES if layout.stock_dir(c).resolve() != versions[c]) == sorted(damaged)
    assert_equals_fresh_build(settings, tmp_path, "damaged")
