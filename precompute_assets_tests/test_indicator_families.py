"""Qlib families equal Qlib itself; every column is point in time; the registry is open and contained."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CSI300, REFDATA, build_store, copy_inputs

from precompute_assets.indicators.catalog import load_registry, register_indicator
from precompute_assets.indicators.compute import compute_family
from precompute_assets.indicators.expressions.qlib_engine import init_qlib
from precompute_assets.indicators.registry import REGISTRY, RegistryError
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader

ALPHA_CODES = ("SH600000", "SH600519", "SZ000001", "SZ000538", "SZ000792")


@pytest.fixture(scope="module")
def alpha_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("alpha")
    return build_store(copy_inputs(ALPHA_CODES, root / "parquet"), root / "qlib_data")


def stored(settings, code: str, names: list[str]) -> pd.DataFrame:
    frame = StoreReader(StoreLayout(settings.qlib_data_path)).read(code, [n.lower() for n in names])
    frame.columns = names
    return frame


def test_alpha158_equals_the_qlib_reference_file(alpha_store):
    reference = pd.read_parquet(REFDATA / "alpha158_reference" / "alpha158_5stocks.parquet")
    alphas = load_registry().all("alpha158")
    assert len(alphas) == 158
    for code in ALPHA_CODES:
        expected = reference.xs(code, level="instrument")
        got = stored(alpha_store, code, [a.name for a in alphas]).reindex(expected.index)
        for alpha in alphas:
            if alpha.qlib_name == "VWAP0":  # the reference has no vwap (no amount); checked below on our store
                continue
            np.testing.assert_array_equal(
                got[alpha.name].to_numpy(), expected[alpha.qlib_name].to_numpy(np.float32), err_msg=f"{code} {alpha}"
            )


def test_alpha158_and_qlib_stats_equal_qlibs_own_handler_on_the_same_store(alpha_store):
    from qlib.contrib.data.handler import Alpha158
    from qlib.data import D

    init_qlib(alpha_store.qlib_data_path)
    handler = Alpha158(
        instruments=list(ALPHA_CODES),
        start_time="2010-01-04",
        end_time="2026-05-08",
        infer_processors=[],
        learn_processors=[],
        fit_start_time="2010-01-04",
        fit_end_time="2026-05-08",
    )
    features = handler.fetch(col_set="feature")
    stats = load_registry().all("qlib_stats")
    qlib_stats = D.features(list(ALPHA_CODES), [s.expression for s in stats], freq="day")
    qlib_stats.columns = [s.name for s in stats]
    alphas = load_registry().all("alpha158")
    for code in ALPHA_CODES:
        expected = features.xs(code, level="instrument")
        got = stored(alpha_store, code, [a.name for a in alphas]).reindex(expected.index)
        for alpha in alphas:
            np.testing.assert_array_equal(got[alpha.name].to_numpy(), expected[alpha.qlib_name].to_numpy(), alpha.name)
        expected_stats = qlib_stats.xs(code, level="instrument")
        got_stats = stored(alpha_store, code, list(expected_stats.columns)).reindex(expected_stats.index)
        pd.testing.assert_frame_equal(got_stats, expected_stats.astype(np.float32), check_names=False)


def test_every_registered_column_is_point_in_time(tmp_path):
    codes = ("SZ000792", "SH600519")  # long suspensions and a +306% jump; a steady large cap
    base = build_store(copy_inputs(codes, tmp_path / "a"), tmp_path / "store_a")
    cut = pd.Timestamp("2018-06-29")
    changed = copy_inputs(codes, tmp_path / "b")
    rng = np.random.default_rng(7)
    for code in codes:
        frame = pd.read_parquet(changed / f"{code}.parquet")
        after = frame["date"] > cut
        for column in ("open", "high", "low", "close", "volume"):
            frame.loc[after, column] *= rng.uniform(0.5, 1.5, after.sum())
        frame.loc[after, "high"] = frame.loc[after, ["open", "high", "low", "close"]].max(axis=1)
        frame.loc[after, "low"] = frame.loc[after, ["open", "high", "low", "close"]].min(axis=1)
        frame.to_parquet(changed / f"{code}.parquet")
    moved = build_store(changed, tmp_path / "store_b")
    names = load_registry().names()
    for code in codes:
        a, b = stored(base, code, names), stored(moved, code, names)
        pd.testing.assert_frame_equal(a.loc[:cut], b.loc[:cut], obj=f"{code} up to {cut:%Y-%m-%d}")
        assert not a.loc[cut:].iloc[1:].equals(b.loc[cut:].iloc[1:])  # the change did reach the later values


@pytest.fixture
def scratch_registry():
    """Indicators registered by a test are removed afterwards."""
    before = set(load_registry().names())
    yield
    for name in set(REGISTRY.names()) - before:
        REGISTRY.remove(name)


def test_a_new_indicator_reaches_the_store_by_rematerializing_its_family(tmp_path, scratch_registry):
    import talib
    from dagster import DagsterInstance, materialize

    from precompute_assets.defs.precompute import PRECOMPUTE_ASSETS
    from precompute_assets.defs.precompute.families import build_family_asset
    from precompute_assets.defs.resources import PrecomputeSettings
    from precompute_assets.store.manifest import read_json

    parquet = copy_inputs(("SH600000", "SZ000001"), tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    register_indicator(
        "TRIX",
        "technical",
        compute=lambda bars: talib.TRIX(bars["close"].to_numpy(), 12),
        formula="TRIX(close, 12): 1-day rate of change of a triple EMA",
        warmup=3 * 11 + 1,
        history="recursive",
        params={"timeperiod": 12},
    )
    technical = build_family_asset("technical")  # the asset as a new code location load would build it
    assets = [a for a in PRECOMPUTE_ASSETS if a.key != technical.key] + [technical]
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    instance = DagsterInstance.ephemeral()
    for bucket in ("b00", "b01", "b02", "b03"):
        result = materialize(
            assets, selection=["technical", "qlib_store"], partition_key=bucket, resources=resources, instance=instance
        )
        assert result.success
    assert materialize(assets, selection=["store_manifest"], resources=resources, instance=instance).success

    close = pd.read_parquet(CSI300 / "SH600000.parquet")["close"].to_numpy()
    got = stored(settings, "SH600000", ["TRIX"])["TRIX"].to_numpy()
    np.testing.assert_allclose(got, talib.TRIX(close, 12).astype(np.float32), rtol=1e-6, equal_nan=True)
    versions = read_json(StoreLayout(settings.qlib_data_path).indicator_versions_path)["indicators"]
    assert versions["TRIX"]["family"] == "technical" and versions["TRIX"]["version"] == "1"


def test_a_duplicate_name_is_refused_across_families(scratch_registry):
    with pytest.raises(RegistryError, match="already registered by family 'technical'"):
        register_indicator("rsi14", "fundamental", compute=lambda bars: bars["close"], formula="a clash")


def test_a_failing_indicator_costs_only_its_own_column(scratch_registry):
    frame = pd.read_parquet(CSI300 / "SH600000.parquet").set_index("date").iloc[:400]
    bars = {"SH600000": frame, "SZ000001": pd.read_parquet(CSI300 / "SZ000001.parquet").set_index("date").iloc[:400]}

    def fails_for_one_stock(b: pd.DataFrame) -> pd.Series:
        if b["close"].iloc[0] < 100:  # SH600000 starts near 63, SZ000001 near 920 (back-adjusted)
            raise ZeroDivisionError("bad luck")
        return b["close"] * 2

    register_indicator("FRAGILE", "technical", compute=fails_for_one_stock, formula="close * 2")
    result = compute_family("technical", bars, frame.index)
    (error,) = result.errors
    assert (error.code, error.family, error.indicator) == ("SH600000", "technical", "FRAGILE")
    assert "FRAGILE" not in result.frames["SH600000"] and "RSI14" in result.frames["SH600000"]
    assert "FRAGILE" in result.frames["SZ000001"]
