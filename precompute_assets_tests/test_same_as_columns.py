"""Columns that are another column under a second name (`same_as`): computed once, stored under both names.

SMA is TA-Lib's SMA(close, 20), the same call as MA20; volatility_20d is the 20-day sample std of
simple returns, as VOLATILITY. References: TA-Lib and the refdata reference files, Qlib's own
`D.features` on the store, a full rebuild for the incremental path, and the computations themselves
counted through the libraries they call.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import talib
from conftest import CSI300, REFDATA, copy_inputs, require_refdata
from test_incremental import assert_within_one_ulp, write_cut

from precompute_assets.build import intermediates, pipeline
from precompute_assets.consumers import load_stock_data_with_indicators
from precompute_assets.consumers.qlib_session import init_store_qlib, kept_qlib_config
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.compute import compute_family
from precompute_assets.indicators.families import fundamental, technical
from precompute_assets.indicators.registry import REGISTRY, Registry, RegistryError, add_indicator
from precompute_assets.input.bars import load_bars
from precompute_assets.input.parquet import scan_folder
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader
from precompute_assets.store.stock_commit import read_stock_meta

CODES = ("SH600000", "SH600519")  # both have talib_reference files
PAIRS = (("SMA", "MA20"), ("volatility_20d", "VOLATILITY"))  # alias, source
FAMILIES = ("technical", "fundamental")  # the families of both pairs; the Qlib families add nothing here


class Counts:
    """How often each source's computation ran: TA-Lib's SMA(., 20) and a rolling window over simple returns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sma20 = 0
        self.windows: list[np.ndarray] = []
        counts = self

        class CountingTalib:
            def __getattr__(self, name: str) -> object:
                return getattr(talib, name)

            def SMA(self, values: np.ndarray, timeperiod: int = 30) -> np.ndarray:
                counts.sma20 += timeperiod == 20
                return talib.SMA(values, timeperiod=timeperiod)

        def recording(rolling):
            def wrapper(values: np.ndarray, n: int, statistic: str):
                if n == 20:
                    counts.windows.append(np.array(values, copy=True))
                return rolling(values, n, statistic)

            return wrapper

        monkeypatch.setattr(technical, "talib", CountingTalib())
        for module in (technical, fundamental):
            monkeypatch.setattr(module, "rolling", recording(module.rolling))

    def reset(self) -> None:
        self.sma20, self.windows = 0, []

    def return_windows(self, parquet) -> int:
        """Rolling windows opened over a stock's simple daily returns (the VOLATILITY computation)."""
        returns = []
        for code in CODES:
            close = pd.read_parquet(parquet / f"{code}.parquet").dropna(subset=["close"])["close"].to_numpy(np.float64)
            returns.append(np.concatenate(([np.nan], close[1:] / close[:-1] - 1)))
        return sum(
            any(len(w) == len(r) and np.allclose(w, r, rtol=1e-12, atol=0, equal_nan=True) for r in returns)
            for w in self.windows
        )


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    return Counts(monkeypatch)


def build(settings: Settings) -> None:
    """The store step's inputs for both families, then the store and the manifest (no Qlib families)."""
    pipeline.build_in_process(settings, families=FAMILIES)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Counts]]:
    """Both stocks built once, with the computations counted during the build."""
    require_refdata()
    root = tmp_path_factory.mktemp("same_as")
    settings = Settings(copy_inputs(CODES, root / "parquet"), root / "qlib_data", batches=1)
    with pytest.MonkeyPatch.context() as monkeypatch:
        counted = Counts(monkeypatch)
        build(settings)
    yield settings, counted


def stored(settings: Settings, code: str, fields: list[str]) -> pd.DataFrame:
    return StoreReader(StoreLayout(settings.qlib_data_path)).read(code, [f.lower() for f in fields])


def test_each_source_is_computed_once_per_stock_per_build(store) -> None:
    settings, counted = store
    assert counted.sma20 == len(CODES)
    assert counted.return_windows(settings.parquet_data_path) == len(CODES)


def test_both_files_are_equal_bit_for_bit(store) -> None:
    settings, _ = store
    layout = StoreLayout(settings.qlib_data_path)
    for code in CODES:
        meta = read_stock_meta(layout, code)
        for alias, source in PAIRS:
            alias_bytes = layout.bin_path(code, alias.lower()).read_bytes()
            assert alias_bytes == layout.bin_path(code, source.lower()).read_bytes(), f"{code} {alias}"
            assert meta["indicators"][alias.lower()] == load_registry().get(alias).fingerprint


@pytest.mark.parametrize("code", CODES)
def test_both_names_equal_talib_and_the_reference_files(store, code: str) -> None:
    settings, _ = store
    talib_ref = pd.read_parquet(REFDATA / "talib_reference" / f"{code}.parquet").set_index("date")
    other_ref = pd.read_parquet(REFDATA / "talib_reference" / f"{code}_nontalib.parquet").set_index("date")
    frame = stored(settings, code, ["SMA", "MA20", "VOLATILITY", "volatility_20d"]).reindex(talib_ref.index)
    close = pd.read_parquet(CSI300 / f"{code}.parquet").set_index("date")["close"].reindex(talib_ref.index)
    expected = {
        "sma": talib.SMA(close.to_numpy(np.float64), 20),
        "ma20": talib_ref["MA20"].to_numpy(),
        "volatility": other_ref["VOL20_RET_STD"].reindex(talib_ref.index).to_numpy(),
        "volatility_20d": other_ref["VOL20_RET_STD"].reindex(talib_ref.index).to_numpy(),
    }
    np.testing.assert_allclose(talib_ref["SMA20"].to_numpy(), expected["sma"], rtol=1e-12, equal_nan=True)
    for field, values in expected.items():
        np.testing.assert_allclose(frame[field].to_numpy(np.float64), values, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_qlib_reads_both_names(store) -> None:
    settings, _ = store
    fields = ["sma", "ma20", "volatility", "volatility_20d"]
    with kept_qlib_config():
        init_store_qlib(settings.qlib_data_path, fast=False)
        from qlib.data import D

        features = D.features(list(CODES), [f"${f}" for f in fields], freq="day")
    features.columns = fields
    for code in CODES:
        qlib = features.xs(code, level="instrument")
        ours = stored(settings, code, fields).reindex(qlib.index)
        assert np.isfinite(qlib["sma"]).sum() > 1000 and np.isfinite(qlib["volatility_20d"]).sum() > 1000
        np.testing.assert_array_equal(qlib["sma"].to_numpy(), qlib["ma20"].to_numpy())
        np.testing.assert_array_equal(qlib["volatility_20d"].to_numpy(), qlib["volatility"].to_numpy())
        np.testing.assert_array_equal(qlib.to_numpy(), ours[fields].to_numpy())


def test_the_loader_fallback_gives_the_alias(store, tmp_path, counts: Counts) -> None:
    settings, _ = store
    window = ("2015-01-01", "2020-12-31")
    intact = stored(settings, "SH600000", ["MA20", "VOLATILITY"]).loc[window[0] : window[1]]
    nothing_stored = Settings(settings.parquet_data_path, tmp_path / "no_store", batches=1)
    frame = load_stock_data_with_indicators(
        "SH600000", *window, ["SMA", "MA20", "volatility_20d"], settings=nothing_stored
    )
    assert frame.attrs["computed"][-3:] == ["SMA", "MA20", "volatility_20d"]
    assert counts.sma20 == 1  # SMA and MA20: one computation
    intact = intact.reindex(frame.index)
    np.testing.assert_array_equal(frame["SMA"].to_numpy(), intact["ma20"].to_numpy())
    np.testing.assert_array_equal(frame["MA20"].to_numpy(), intact["ma20"].to_numpy())
    np.testing.assert_array_equal(frame["volatility_20d"].to_numpy(), intact["volatility"].to_numpy())

    # Only the alias's file is gone: the loader computes it from its source, the rest comes from the store.
    damaged = Settings(settings.parquet_data_path, tmp_path / "damaged", batches=1)
    shutil.copytree(settings.qlib_data_path, damaged.qlib_data_path, symlinks=True)
    StoreLayout(damaged.qlib_data_path).bin_path("SH600000", "volatility_20d").unlink()
    frame = load_stock_data_with_indicators("SH600000", *window, ["VOLATILITY", "volatility_20d"], settings=damaged)
    assert frame.attrs["computed"] == ["volatility_20d"]
    np.testing.assert_array_equal(frame["volatility_20d"].to_numpy(), intact["volatility"].to_numpy())
    np.testing.assert_array_equal(frame["VOLATILITY"].to_numpy(), intact["volatility"].to_numpy())


@pytest.fixture
def sma_version_two() -> Iterator[None]:
    """A changed alias: SMA's definition gets version 2 (restored afterwards)."""
    original = load_registry().get("SMA")
    REGISTRY.add(dataclasses.replace(original, version="2"), replace=True)
    yield
    REGISTRY.add(original, replace=True)


def test_an_incremental_update_equals_a_full_rebuild_for_both_names(tmp_path, counts: Counts, request) -> None:
    require_refdata()
    cut, end = pd.Timestamp("2021-03-31"), pd.Timestamp("2021-04-30")
    parquet = tmp_path / "parquet"
    write_cut(CODES, parquet, cut)
    settings = Settings(parquet, tmp_path / "incremental", batches=1)
    build(settings)
    fields = ["sma", "ma20", "volatility", "volatility_20d"]

    def assert_equals_rebuild(name: str) -> None:
        fresh = Settings(parquet, tmp_path / name, batches=1)
        build(fresh)
        for code in CODES:
            a, b = stored(settings, code, fields), stored(fresh, code, fields)
            assert a.index.equals(b.index) and b.index[-1] == end, code
            for field in fields:
                assert_within_one_ulp(a[field].to_numpy(), b[field].to_numpy(), f"{code}.{field}")

    # New days: every column is appended, the aliases from their sources' tails.
    write_cut(CODES, parquet, end)
    counts.reset()
    build(settings)
    assert counts.sma20 == len(CODES)
    layout = StoreLayout(settings.qlib_data_path)
    assert read_stock_meta(layout, CODES[0])["written_from"] > 0  # appended, not rebuilt
    assert_equals_rebuild("fresh")

    # A changed alias is restated over the whole history from its (recomputed) source, once.
    request.getfixturevalue("sma_version_two")
    counts.reset()
    pipeline.build_calendar(settings)
    pipeline.build_bars(settings, "b00")
    plans = intermediates.read_notes(intermediates.bucket_dir(settings.work_path, "b00") / "bars.json")["plans"]
    registry = load_registry()
    stale = {code: [n for n in plan["stale"] if registry.get(n).family in FAMILIES] for code, plan in plans.items()}
    assert stale == {code: ["MA20", "SMA"] for code in CODES}  # the Qlib families are never stored here
    build(settings)
    assert counts.sma20 == len(CODES)
    for code in CODES:
        meta = read_stock_meta(layout, code)
        assert meta["indicators"]["sma"] == load_registry().get("SMA").fingerprint
        assert layout.bin_path(code, "sma").read_bytes() == layout.bin_path(code, "ma20").read_bytes()
    assert_equals_rebuild("fresh_after_version")


def test_an_alias_asked_for_by_name_is_computed_as_its_source(store, counts: Counts) -> None:
    """What the consistency check and the fallback do: `compute_family` with an alias in the list."""
    settings, _ = store
    calendar = StoreReader(StoreLayout(settings.qlib_data_path)).calendar
    bars = load_bars(scan_folder(settings.parquet_data_path).files, list(CODES), calendar).bars
    registry = load_registry()
    wanted = [registry.get("volatility_20d"), registry.get("price_change")]
    result = compute_family("fundamental", bars, calendar, wanted)
    assert counts.return_windows(settings.parquet_data_path) == len(CODES)  # VOLATILITY, by the technical family
    technical_part = compute_family("technical", bars, calendar, [registry.get("SMA"), registry.get("MA20")])
    assert counts.sma20 == len(CODES)
    for code in CODES:
        assert list(result.frames[code].columns) == ["volatility_20d", "price_change"]
        assert list(technical_part.frames[code].columns) == ["SMA", "MA20"]
        expected = stored(settings, code, ["volatility", "ma20"]).reindex(bars[code].index)
        got = result.frames[code]["volatility_20d"].to_numpy(np.float32)
        np.testing.assert_array_equal(got, expected["volatility"].to_numpy())
        np.testing.assert_array_equal(technical_part.frames[code]["SMA"].to_numpy(), expected["ma20"].to_numpy())


# --- the registry's rules for aliases ----------------------------------------------------------------


def test_an_alias_takes_its_sources_definition_and_follows_it() -> None:
    registry = Registry()
    source = registry.add(
        dataclasses.replace(load_registry().get("MA20"), name="SRC", params={"timeperiod": 20}, warmup=19)
    )
    alias = registry.add(dataclasses.replace(load_registry().get("SMA"), name="ALIAS", same_as="SRC", source=None))
    assert (alias.compute, alias.warmup, alias.history, alias.source) == (source.compute, 19, "windowed", source)
    assert registry.computed() == [source]
    before = alias.fingerprint
    registry.add(dataclasses.replace(source, version="2"), replace=True)
    assert registry.get("ALIAS").fingerprint != before  # a changed source restates its alias
    assert registry.get("ALIAS").source is registry.get("SRC")
    with pytest.raises(RegistryError, match="is the source of"):
        registry.remove("SRC")


def test_an_alias_must_name_a_registered_plain_column() -> None:
    with pytest.raises(RegistryError, match="not registered"):
        add_indicator("NOT_THERE_ALIAS", "technical", formula="x", same_as="NOT_THERE")
    with pytest.raises(RegistryError, match="itself an alias"):
        add_indicator("ALIAS_OF_ALIAS", "technical", formula="x", same_as="SMA")
    with pytest.raises(RegistryError, match="same_as= only"):
        add_indicator("WITH_OWN_COMPUTE", "technical", formula="x", same_as="MA20", compute=lambda bars: bars["close"])
    assert "NOT_THERE_ALIAS" not in REGISTRY and "ALIAS_OF_ALIAS" not in REGISTRY
