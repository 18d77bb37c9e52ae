"""The backtest report and the trained model as assets downstream of the store."""

from __future__ import annotations

from conftest import build_store, copy_inputs
from dagster import materialize

from precompute_assets.defs.precompute import PRECOMPUTE_ASSETS
from precompute_assets.defs.research import RESEARCH_ASSETS
from precompute_assets.defs.resources import PrecomputeSettings

CODES = ("SH600000", "SZ000001", "SH600519", "SZ000538", "SZ000792", "SH601318")


def test_backtest_report_and_trained_model_materialize_from_the_store(tmp_path):
    parquet = copy_inputs(CODES, tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    result = materialize(
        [*PRECOMPUTE_ASSETS, *RESEARCH_ASSETS], selection=["backtest_report", "trained_model"], resources=resources
    )
    assert result.success
    report = result.asset_materializations_for_node("backtest_report")[0].metadata
    assert "ma_cross" in report["metrics"].value and "multi_factor" in report["metrics"].value
    assert report["equity_curve"].value.startswith("![equity](data:image/png;base64,")
    model = result.asset_materializations_for_node("trained_model")[0].metadata
    assert {"ic", "rank_ic"} <= set(model) and model["features_from"].value == "store"
