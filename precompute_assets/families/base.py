"""What every family returns, and the per-stock runner shared by the pandas families."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from precompute_assets.registry import Compute, History, Indicator, register_indicator

IndicatorRow = tuple[str, Compute, str, int, History, dict[str, object]]
"""name, compute, one-line formula, warm-up rows, history kind, parameters: one table row per column."""

REQUIRED = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class ComputeError:
    """One stock (and, when it is one column, one indicator) a family could not compute."""

    code: str
    family: str
    indicator: str | None
    message: str

    def __str__(self) -> str:
        what = f"{self.family}.{self.indicator}" if self.indicator else self.family
        return f"{self.code} {what}: {self.message}"


@dataclass
class FamilyResult:
    """A family's columns per stock (date index as the input bars), what failed, and carried state.

    `state` holds, per stock, the last finite float64 value of each cumulative column: appended days
    continue from it exactly (the store's float32 would drift by a rounding per update).
    """

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: list[ComputeError] = field(default_factory=list)
    state: dict[str, dict[str, float]] = field(default_factory=dict)


def last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def compute_per_stock(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    indicators: Iterable[Indicator],
    dtype: type = np.float32,
) -> FamilyResult:
    """Run each indicator's `compute` on each stock's valid rows; failures stay local to a column.

    Rows with a NaN in a required field are missing days: they are left out of the computation (so
    recursive indicators carry on across them) and come back as NaN rows in the output.
    """
    indicators = list(indicators)
    result = FamilyResult()
    for code, bars in bars_by_code.items():
        valid = bars.dropna(subset=list(REQUIRED))
        columns: dict[str, np.ndarray] = {}
        for indicator in indicators:
            try:
                series = indicator.compute(valid)  # type: ignore[misc]
                values = pd.Series(series, index=valid.index).to_numpy(dtype=np.float64)
                columns[indicator.name] = values
                if indicator.history == "cumulative" and (last := last_finite(values)) is not None:
                    result.state.setdefault(code, {})[indicator.name] = last
            except Exception as exc:
                result.errors.append(ComputeError(code, family, indicator.name, f"{type(exc).__name__}: {exc}"))
        frame = pd.DataFrame(columns, index=valid.index).reindex(bars.index)
        frame = frame.replace([np.inf, -np.inf], np.nan).astype(dtype)
        result.frames[code] = frame
    return result


def register_rows(family: str, rows: Iterable[IndicatorRow], added: str) -> None:
    """Register a pandas family's table of columns, in order (the order is the store's column order)."""
    for name, compute, formula, warmup, history, params in rows:
        register_indicator(
            name,
            family,
            formula=formula,
            compute=compute,
            version="1",
            warmup=warmup,
            history=history,
            params=params,
            added=added,
        )
