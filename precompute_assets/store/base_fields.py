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
    # one float64 block for the whole frame: a Series per column costs more than a daily update's rows
    values, at = bars.to_numpy(np.float64), {name: i for i, name in enumerate(bars.columns)}
    fields = {name: values[:, at[name]] for name in BASE_FIELDS if name != "vwap"}
    typical = (fields["high"] + fields["low"] + fields["close"]) / 3.0
    vwap = typical
    if "amount" in at:
        amount = values[:, at["amount"]]
        volume = fields["volume"]
        traded = np.isfinite(amount) & (volume > 0)
        vwap = np.where(traded, amount / np.where(traded, volume, 1.0), typical)
        fields["amount"] = amount
    fields["vwap"] = vwap
    return {name: values.astype(np.float32) for name, values in fields.items()}
