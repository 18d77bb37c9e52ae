"""The asset graph: input source -> calendar -> bars -> four families -> store -> manifest."""

from precompute_assets.defs.precompute.bars import stock_bars
from precompute_assets.defs.precompute.calendar import trading_calendar
from precompute_assets.defs.precompute.families import family_assets
from precompute_assets.defs.precompute.input_source import stock_parquet_files
from precompute_assets.defs.precompute.manifest import store_manifest
from precompute_assets.defs.precompute.store import qlib_store
from precompute_assets.defs.precompute.summary import store_is_current, store_summary

PRECOMPUTE_ASSETS = [
    stock_parquet_files,
    trading_calendar,
    stock_bars,
    *family_assets,
    qlib_store,
    store_manifest,
    store_summary,
]
PRECOMPUTE_CHECKS = [store_is_current]

__all__ = ["PRECOMPUTE_ASSETS", "PRECOMPUTE_CHECKS"]
