"""A daily update's technical and price/volume tails, every stock at once on panels, equal a full history.

The reference is each stock's whole history computed as a build does (TA-Lib and pandas on a frame
per stock); the update computes the appended days from the stored tails, cut as the bars step cuts
them, with each cumulative column continuing from the state a build of the earlier days recorded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CSI300, require_refdata
from test_incremental import assert_within_one_ulp

from precompute_assets.build.family_update import StockUpdate, compute_family_update, tail_start
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.compute import compute_family
from precompute_assets.indicators.families.base import aligned, column, compute_per_stock, on_panels, takes_panels
from precompute_assets.indicators.history import history_need
from precompute_assets.indicators.registry import REGISTRY, add_indicator
from precompute_assets.input.bars import load_bars
from precompute_assets.input.parquet import scan_folder

STOCKS = 24
SUSPENDED = "SH600519"  # no input on the last new day: a NaN row, the recursions carry on after it
SHORT = "SZ000001"  # cut to its last 300 days, a recent listing: too short for a panel, computed per stock


@pytest.fixture(scope="module")
def market():
    require_refdata()
    files = scan_folder(CSI300).files
    codes = sorted(set(sorted(files)[2 : 2 + STOCKS]) | {SUSPENDED, SHORT, "SZ000792", "SZ302132"})
    calendar = pd.DatetimeIndex(sorted(pd.read_parquet(files["SH600000"])["date"]), name="date")
    bars = load_bars({c: files[c] for c in codes}, codes, calendar).bars
    return bars, calendar


@pytest.mark.parametrize("family", ["technical", "fundamental"])
@pytest.mark.parametrize("new_days", [1, 2])
def test_panel_tails_equal_a_full_history(market, family, new_days):
    bars, calendar = market
    end = calendar[-30]
    new_from = calendar[calendar.get_loc(end) - new_days + 1]
    final = {c: b.loc[:end].copy() for c, b in bars.items()}
    final[SUSPENDED].loc[end, "close"] = np.nan
    final[SHORT] = final[SHORT].iloc[-300:]
    registry = load_registry()
    indicators = registry.computed(family)
    assert all(takes_panels(i.compute) for i in indicators)
    need = max(history_need(i) for i in registry.all())
    assert len(final[SHORT].dropna()) < need < min(len(b.dropna()) for c, b in final.items() if c != SHORT)

    cumulative = [i for i in indicators if i.history == "cumulative"]
    stored = {c: b.loc[: calendar[calendar.get_loc(new_from) - 1]] for c, b in final.items()}
    carry = compute_per_stock(family, stored, cumulative, np.float64).state if cumulative else {}
    tails = {c: b.iloc[tail_start(b, new_from, need) :] for c, b in final.items()}
    updates = {c: StockUpdate(new_from=new_from, carry=carry.get(c, {})) for c in final}
    update = compute_family_update(family, tails, calendar, updates)
    full = compute_family(family, final, calendar)

    assert not update.errors and not full.errors
    names = [i.name for i in indicators]
    for code, frame in update.frames.items():
        assert list(frame.columns) == names, code
        expected = full.frames[code].loc[new_from:]
        assert frame.index.equals(expected.index), code
        for name in names:
            assert_within_one_ulp(frame[name].to_numpy(), expected[name].to_numpy(), f"{code}.{name}")
    assert update.frames[SUSPENDED].loc[end].isna().all()
    for code in final:  # the state the next update continues from: a full history's last value
        for indicator in cumulative:
            values = full.frames[code][indicator.name].to_numpy(np.float64)
            last = values[np.isfinite(values)][-1]
            assert np.float32(update.state[code][indicator.name]) == np.float32(last), (code, indicator.name)


def last_two_closes(bars: pd.DataFrame) -> float:
    return float(bars["close"].dropna().iloc[-2:].max())


@pytest.fixture
def fails_on_the_dearest_stock(market):
    """A user's `on_panels` column that refuses a close above a limit only one stock's tail passes (its
    need is one stored row: a tail is the last two closes)."""
    bars, _ = market
    limit = sorted(last_two_closes(b) for b in bars.values())[-2] + 0.01

    @on_panels
    def half_close(frame):
        close = column(frame, "close")
        if np.nanmax(close) > limit:
            raise ValueError(f"a close above {limit}")
        return aligned(close / 2, frame)

    add_indicator("TEST_HALF_CLOSE", "fundamental", formula="c / 2", compute=half_close, warmup=0, history="point")
    yield limit
    REGISTRY.remove("TEST_HALF_CLOSE")


def test_a_column_failing_on_the_panel_fails_only_for_its_stock(market, fails_on_the_dearest_stock):
    bars, calendar = market
    end = calendar[-1]
    need = max(history_need(i) for i in load_registry().all())
    tails = {c: b.iloc[tail_start(b, end, need) :] for c, b in bars.items()}
    update = compute_family_update("fundamental", tails, calendar, {c: StockUpdate(new_from=end) for c in bars})

    dearest = max(bars, key=lambda c: last_two_closes(bars[c]))
    assert [(e.code, e.indicator) for e in update.errors] == [(dearest, "TEST_HALF_CLOSE")]
    assert "TEST_HALF_CLOSE" not in update.frames[dearest] and "price_change" in update.frames[dearest]
    for code, frame in update.frames.items():
        if code != dearest:
            assert frame.loc[end, "TEST_HALF_CLOSE"] == np.float32(bars[code].loc[end, "close"] / 2), code
