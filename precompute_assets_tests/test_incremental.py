"""An incremental update equals a full rebuild on the final data, and computes only what changed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import CSI300, build_store, require_refdata, run_pipeline

from precompute_assets.build.bucket_state import stale_reason
from precompute_assets.build.buckets import bucket_of
from precompute_assets.build.pipeline import bucket_input_versions
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.registry import REGISTRY
from precompute_assets.settings import Settings
from precompute_assets.store.calendar import read_working_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json
from precompute_assets.store.reader import StoreReader

CUT = pd.Timestamp("2021-03-31")
NEW_DAYS = 20
BATCHES = 4


def write_cut(codes, folder, end: pd.Timestamp | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for code in codes:
        frame = pd.read_parquet(CSI300 / f"{code}.parquet")
        frame = frame[frame["date"] <= end] if end is not None else frame
        frame.to_parquet(folder / f"{code}.parquet")


def assert_within_one_ulp(a: np.ndarray, b: np.ndarray, what: str) -> None:
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), f"{what}: NaN pattern differs at {np.flatnonzero(nan_a != nan_b)[:5]}"
    ulps = np.abs(a[~nan_a].view(np.int32).astype(np.int64) - b[~nan_b].view(np.int32).astype(np.int64))
    assert ulps.max(initial=0) <= 1, f"{what}: {ulps.max()} ulps apart"


@pytest.fixture
def ma5_version_two():
    """A changed indicator: MA5's definition gets version 2 (restored afterwards)."""
    original = load_registry().get("MA5")
    REGISTRY.add(dataclasses.replace(original, version="2"), replace=True)
    yield
    REGISTRY.add(original, replace=True)


def test_incremental_update_equals_a_full_rebuild(tmp_path, request):
    require_refdata()
    codes = sorted(p.stem for p in CSI300.glob("*.parquet"))[2:34]  # 32 stocks, indices left out
    assert len({bucket_of(c, BATCHES) for c in codes}) == BATCHES
    kept, removed, added = codes[:-2], codes[-2], codes[-1]
    restated = kept[0]
    calendar = pd.DatetimeIndex(sorted(pd.read_parquet(CSI300 / f"{kept[1]}.parquet")["date"]))
    end = calendar[calendar.get_loc(CUT) + NEW_DAYS]

    parquet = tmp_path / "parquet"
    write_cut([*kept, removed], parquet, CUT)
    settings = Settings(parquet, tmp_path / "incremental", BATCHES)
    run_pipeline(settings)

    # The next month: 20 new days for every stock, one restated row, one listing, one delisting,
    # and a new version of one indicator.
    write_cut([*kept, added], parquet, end)
    (parquet / f"{removed}.parquet").unlink()
    frame = pd.read_parquet(parquet / f"{restated}.parquet")
    frame.loc[frame.index[100], ["open", "high", "low", "close"]] *= 1.01
    frame.to_parquet(parquet / f"{restated}.parquet")
    request.getfixturevalue("ma5_version_two")

    work = run_pipeline(settings)
    fresh = build_store(parquet, tmp_path / "fresh", BATCHES)

    # Recorded work: every bucket ran (all had new days); two stocks rebuilt (the restated and the
    # new one); every other stored stock got exactly 20 new rows, and MA5 was recomputed for all.
    assert sorted(work) == ["b00", "b01", "b02", "b03"]
    assert sum(r["stocks_rebuilt"] for r in work.values()) == 2
    assert sum(r["stocks_updated"] for r in work.values()) == len(kept) - 1
    assert sum(r["rows_written"] for r in work.values()) == (len(kept) - 1) * NEW_DAYS + sum(
        len(pd.read_parquet(parquet / f"{c}.parquet")) for c in (restated, added)
    )
    versions = read_json(StoreLayout(settings.qlib_data_path).indicator_versions_path)["indicators"]
    assert versions["MA5"]["version"] == "2"
    manifest = read_json(StoreLayout(settings.qlib_data_path).data_version_path)
    assert manifest["delisted"] == [removed]

    incremental, rebuilt = (
        StoreReader(StoreLayout(settings.qlib_data_path)),
        StoreReader(StoreLayout(fresh.qlib_data_path)),
    )
    assert incremental.calendar.equals(rebuilt.calendar)
    for code in [*kept, added]:
        fields = rebuilt.fields(code)
        assert incremental.fields(code) == fields, code
        a, b = incremental.read(code, fields), rebuilt.read(code, fields)
        assert a.index.equals(b.index), code
        for field in fields:
            assert_within_one_ulp(a[field].to_numpy(), b[field].to_numpy(), f"{code}.{field}")

    # Nothing changed since: no bucket is stale, and a run would rebuild nothing.
    layout = StoreLayout(settings.qlib_data_path)
    versions_now = bucket_input_versions(settings, ["b00", "b01", "b02", "b03"])
    calendar_now = read_working_calendar(layout)
    assert {stale_reason(layout, b, v, calendar_now) for b, v in versions_now.items()} == {None}
