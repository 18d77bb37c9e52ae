"""The base fields every stock has in the store, derived from its cleaned input bars."""

from __future__ import annotations

import numpy as np
import pandas as pd

BASE_FIELDS = ("open", "high", "low", "close", "volume", "factor", "vwap")
"""The fields every stored stock has."""
ALL_BASE_FIELDS = (*BASE_FIELDS, "amount")
"""Every base field a stock may have: `amount` too, where its input gives one."""


def base_fields(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    """`open high low close volume factor vwap` (+ `amount` when the input has it), float32.

    `vwap` is amount / volume on rows with an amount and a traded volume, and the typical price
    (high + low + close) / 3 elsewhere.
    """
    fields = {name: bars[name].to_numpy(np.float64) for name in BASE_FIELDS if name != "vwap"}
    typical = (bars["high"] + bars["low"] + bars["close"]).to_numpy(np.float64) / 3.0
    vwap = typical
    if "amount" in bars:
        amount = bars["amount"].to_numpy(np.float64)
        volume = fields["volume"]
        traded = np.isfinite(amount) & (volume > 0)
        vwap = np.where(traded, amount / np.where(traded, volume, 1.0), typical)
        fields["amount"] = amount
    fields["vwap"] = vwap
    return {name: values.astype(np.float32) for name, values in fields.items()}
