"""Every Qlib column of the panel engine equals `D.features` on real and synthetic stocks, bit for bit.

The stocks are read and aligned to the calendar by the pipeline's own bars step; Qlib reads the same
base fields from a store of Qlib's layout. The fast tests take a handful of stocks; the full refdata
(302 stocks) and a larger synthetic market are `slow`.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import FAST_CODES, copy_inputs
from test_panel_engine import assert_panel_equals_qlib, write_qlib_store

from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.expressions.qlib_engine import init_qlib
from precompute_assets.input.bars import load_bars, scan_calendar
from precompute_assets.input.parquet import scan_folder
from precompute_assets.input.synthetic import generate_market


def qlib_expressions() -> list[str]:
    registry = load_registry()
    return [i.expression for family in ("alpha158", "qlib_stats") for i in registry.all(family)]


def bars_of(folder) -> tuple[dict[str, pd.DataFrame], pd.DatetimeIndex]:
    files = scan_folder(folder).files
    calendar = scan_calendar(files).dates
    return load_bars(files, sorted(files), calendar).bars, calendar


def check_folder(folder, store) -> None:
    bars, calendar = bars_of(folder)
    init_qlib(write_qlib_store(store, bars, calendar))
    expressions = qlib_expressions()
    assert len(expressions) == 198
    assert_panel_equals_qlib(expressions, bars, calendar)


def test_real_stocks_equal_qlib(tmp_path):
    check_folder(copy_inputs(FAST_CODES[1:7], tmp_path / "in"), tmp_path / "qlib")


def test_synthetic_stocks_equal_qlib(tmp_path):
    # suspensions, a mid-way listing, amount (vwap) on some stocks, price limits
    generate_market(tmp_path / "in", 6, "2019-01-01", "2021-06-30", seed=11, listed_midway=2, with_amount=2)
    check_folder(tmp_path / "in", tmp_path / "qlib")


@pytest.mark.slow
def test_all_refdata_stocks_equal_qlib(tmp_path):
    from conftest import CSI300, require_refdata

    require_refdata()
    check_folder(CSI300, tmp_path / "qlib")


@pytest.mark.slow
def test_a_synthetic_market_equals_qlib(tmp_path):
    generate_market(tmp_path / "in", 60, "2014-01-01", "2024-12-31", seed=3, listed_midway=10, with_amount=20)
    check_folder(tmp_path / "in", tmp_path / "qlib")
