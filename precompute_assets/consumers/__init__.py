"""What the store is for: load stocks with indicators, backtest strategies, train models on it.

from precompute_assets.consumers import load_stock_data_with_indicators, run_backtest, train_model
"""

from precompute_assets.consumers.backtest import BacktestResult, run_backtest
from precompute_assets.consumers.freshness import StaleStoreWarning
from precompute_assets.consumers.handler import StoreHandler
from precompute_assets.consumers.loader import (
    StockNotFound,
    load_multiple_stocks_with_indicators,
    load_stock_data_with_indicators,
    trading_calendar,
)
from precompute_assets.consumers.qlib_provider import FAST_FEATURE_PROVIDER, FastFeatureProvider
from precompute_assets.consumers.qlib_session import init_store_qlib
from precompute_assets.consumers.reports import BacktestReport, backtest_report
from precompute_assets.consumers.strategies import STRATEGIES
from precompute_assets.consumers.training import TrainResult, default_segments, train_model

__all__ = [
    "FAST_FEATURE_PROVIDER",
    "STRATEGIES",
    "BacktestReport",
    "BacktestResult",
    "FastFeatureProvider",
    "StaleStoreWarning",
    "StockNotFound",
    "StoreHandler",
    "TrainResult",
    "backtest_report",
    "default_segments",
    "init_store_qlib",
    "load_multiple_stocks_with_indicators",
    "load_stock_data_with_indicators",
    "run_backtest",
    "trading_calendar",
    "train_model",
]
