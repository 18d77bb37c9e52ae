"""A cumulative column (OBV) continues from its stored state, including a state of exactly zero."""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

from precompute_assets.build.family_update import StockUpdate, compute_family_update

CODE = "SH600000"


def bars(days: int) -> pd.DataFrame:
    """Closes that alternate up and down on equal volume: OBV goes 100, 0, 100, 0, ..."""
    close = np.where(np.arange(days) % 2 == 0, 10.0, 9.0)
    index = pd.bdate_range("2024-01-01", periods=days, name="date")
    return pd.DataFrame(
        {
            "open": close,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.full(days, 100.0),
            "factor": np.ones(days),
            "amount": close * 100.0,
        },
        index=index,
    )


def test_an_obv_state_of_zero_is_carried_as_zero():
    full = bars(41)
    calendar = full.index
    expected = talib.OBV(full["close"].to_numpy(), full["volume"].to_numpy())
    assert expected[39] == 0.0 and expected[40] == 100.0  # the day-40 update ends on an OBV of 0

    stored = compute_family_update("technical", {CODE: full.iloc[:39]}, calendar, {CODE: None})
    carry = stored.state[CODE]
    day_40 = compute_family_update(
        "technical", {CODE: full.iloc[:40]}, calendar, {CODE: StockUpdate(calendar[39], frozenset(), carry)}
    )
    assert day_40.frames[CODE]["OBV"].iloc[-1] == 0.0
    assert day_40.state[CODE]["OBV"] == 0.0

    day_41 = compute_family_update(
        "technical", {CODE: full}, calendar, {CODE: StockUpdate(calendar[40], frozenset(), day_40.state[CODE])}
    )
    assert day_41.frames[CODE]["OBV"].iloc[-1] == expected[40]
