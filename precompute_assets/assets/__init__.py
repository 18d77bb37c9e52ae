"""The asset graph: input source -> calendar -> bars -> four families -> store -> manifest."""

from precompute_assets.assets.bars import stock_bars
from precompute_assets.assets.calendar import trading_calendar
from precompute_assets.assets.families import family_assets
from precompute_assets.assets.input_source import stock_parquet_files
from precompute_assets.assets.manifest import store_manifest
from precompute_assets.assets.research import backtest_report, trained_model
from precompute_assets.assets.store import qlib_store
from precompute_assets.assets.summary import store_is_current, store_summary

PRECOMPUTE_ASSETS = [
    stock_parquet_files,
    trading_calendar,
    stock_bars,
    *family_assets,
    qlib_store,
    store_manifest,
    store_summary,
    backtest_report,
    trained_model,
]
PRECOMPUTE_CHECKS = [store_is_current]

__all__ = ["PRECOMPUTE_ASSETS", "PRECOMPUTE_CHECKS"]
