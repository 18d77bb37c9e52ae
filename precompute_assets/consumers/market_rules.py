"""A-share trading rules and costs, stated once for the simple simulator and for Qlib's exchange.

- Orders fill at the day's close; a signal known at one close trades at the next trading day's close.
- T+1: shares bought today can be sold from the next trading day.
- Lots of 100 shares (raw shares: prices are back-adjusted, so a lot is `100 / factor` adjusted shares).
- Cost per trade: max(value * rate, min_cost), rate = commission, plus stamp duty on sells.
- No buy on a limit-up close, no sell on a limit-down close: the close-to-close change reaching
  `limit_threshold` (Qlib's CN default 0.095; the input has no board or ST flags to tell 5%, 20% and
  30% limits apart). No trade on a suspended day (no close, or zero / NaN volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MarketRules:
    """Costs and limits; `qlib_exchange_kwargs` gives Qlib's exchange the same ones."""

    commission: float = 0.0003
    stamp_duty: float = 0.001
    min_cost: float = 5.0
    lot: int = 100
    limit_threshold: float = 0.095

    def cost(self, value: float, sell: bool) -> float:
        rate = self.commission + (self.stamp_duty if sell else 0.0)
        return max(value * rate, self.min_cost)

    def tradable(self, close: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(can buy, can sell) per day of `close` and `volume`: one stock's days, or (days, stocks) arrays,
        consecutive trading days along the first axis.

        The change is computed in the store's float32, as Qlib's expression engine computes it.
        """
        change = np.full_like(close, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            change[1:] = close[1:] / close[:-1] - 1
            open_market = (volume > 0) & np.isfinite(close)
            return open_market & ~(change >= self.limit_threshold), open_market & ~(change <= -self.limit_threshold)

    def qlib_exchange_kwargs(self) -> dict[str, object]:
        """Qlib's exchange with these rules: limits and suspensions as expressions (the store has no $change)."""
        change = "$close/Ref($close, 1) - 1"
        closed = "Not(Gt($volume, 0))"
        return {
            "deal_price": "close",
            "open_cost": self.commission,
            "close_cost": self.commission + self.stamp_duty,
            "min_cost": self.min_cost,
            "trade_unit": self.lot,
            "limit_threshold": (
                f"Or(Ge({change}, {self.limit_threshold}), {closed})",
                f"Or(Le({change}, {-self.limit_threshold}), {closed})",
            ),
        }
