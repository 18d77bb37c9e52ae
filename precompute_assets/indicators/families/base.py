"""What every family returns, and the per-stock runner shared by the pandas families."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Literal

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from precompute_assets.indicators.registry import (
    REGISTRY,
    Compute,
    History,
    Indicator,
    RegistryError,
    add_indicator,
)


@dataclass(frozen=True)
class SameAs:
    """In a family's table, in place of a compute: this column is the registered column `source`, under
    a second name (computed once, both files stored; see `Indicator.same_as`)."""

    source: str


IndicatorRow = tuple[str, Compute | SameAs, str, int, History, dict[str, object]]
"""name, compute, one-line formula, warm-up rows, history kind, parameters: one table row per column."""

REQUIRED = ("open", "high", "low", "close", "volume")


def valid_rows(bars: pd.DataFrame) -> np.ndarray:
    """True on the days with every required field: the others are missing days. On the frame's one
    float array where it has one (a frame-wide notna() builds a frame per call, and a column at a
    time costs more than the test: every step asks for each stock)."""
    try:
        return ~np.isnan(required_values(bars)).any(axis=1)
    except (TypeError, ValueError):  # a required column that is not numeric: pandas' own test of each
        return ~np.logical_or.reduce([pd.isna(bars[name].to_numpy()) for name in REQUIRED])


def required_values(bars: pd.DataFrame) -> np.ndarray:
    """The required fields as one (rows, 5) float64 array: the frame's array, then its columns (one
    column at a time costs more than the indicators), unless a column is not numeric."""
    positions = _required_positions(tuple(bars.columns))
    try:
        return bars.to_numpy(np.float64)[:, positions]
    except (TypeError, ValueError):
        return np.column_stack([bars[name].to_numpy(np.float64) for name in REQUIRED])


@lru_cache(maxsize=64)
def _required_positions(columns: tuple[str, ...]) -> np.ndarray:
    """Where the required fields sit among a frame's columns (every stock's frame has the same ones,
    and looking them up costs more than reading them)."""
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise KeyError(f"bars without the required columns {missing}")
    return np.array([columns.index(name) for name in REQUIRED])


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


@dataclass(frozen=True)
class Output:
    """One column of a multi-output compute (MACD, BBANDS, STOCH, KDJ).

    Called on bars it is a compute like any other; `compute_per_stock` runs `fn` once per stock and
    hands each column its output, instead of recomputing all of them per column.
    """

    fn: Callable[[pd.DataFrame], Sequence[object]]
    index: int

    def __call__(self, bars: pd.DataFrame) -> object:
        return self.fn(bars)[self.index]


def _column_values(column: object, index: pd.Index) -> np.ndarray:
    """A compute's result as float64 values aligned to `index`, as `pd.Series(column, index=index)` makes them.

    A Series on that index or a float array of its length is read directly: wrapping it again cost more
    than most indicators' own computation.
    """
    if isinstance(column, pd.Series) and column.index.equals(index):
        return column.to_numpy(np.float64)
    if isinstance(column, np.ndarray) and column.dtype in (np.float64, np.float32) and column.shape == (len(index),):
        return column.astype(np.float64, copy=False)
    return pd.Series(column, index=index).to_numpy(dtype=np.float64)


def compute_per_stock(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    indicators: Iterable[Indicator],
    dtype: type = np.float32,
) -> FamilyResult:
    """Run each indicator's `compute` on each stock's valid rows; failures stay local to a column.

    Rows with a NaN in a required field are missing days: they are left out of the computation (so
    recursive indicators carry on across them) and come back as NaN rows in the output. Each stock's
    columns go into one array and one frame: per-column pandas frames cost more than the indicators.
    """
    indicators = list(indicators)
    result = FamilyResult()
    for code, bars in bars_by_code.items():
        present = valid_rows(bars)
        rows = np.flatnonzero(present)
        valid = bars[present]  # a copy: a compute that writes to its bars cannot reach the caller's
        values = np.full((len(indicators), len(bars)), np.nan)
        computed: list[int] = []
        outputs: dict[Callable[[pd.DataFrame], Sequence[object]], Sequence[object]] = {}
        for position, indicator in enumerate(indicators):
            compute = indicator.compute
            try:
                if isinstance(compute, Output):
                    if compute.fn not in outputs:
                        outputs[compute.fn] = compute.fn(valid)
                    series = outputs[compute.fn][compute.index]
                else:
                    series = compute(valid)  # type: ignore[misc]
                floats = _column_values(series, valid.index)
                values[position, rows] = floats
                computed.append(position)
                if indicator.history == "cumulative" and (last := last_finite(floats)) is not None:
                    result.state.setdefault(code, {})[indicator.name] = last
            except Exception as exc:
                result.errors.append(ComputeError(code, family, indicator.name, f"{type(exc).__name__}: {exc}"))
        values = values[computed]
        values[np.isinf(values)] = np.nan
        names = [indicators[position].name for position in computed]
        result.frames[code] = pd.DataFrame(values.astype(dtype, copy=False).T, index=bars.index, columns=names)
    return result


# --- array helpers for the built-in computes: numpy per column, pandas only for its rolling windows ----
#
# Each helper takes one stock's bars (a frame, columns as 1-D arrays) or a panel (`Panel`: each field as
# a rows x stocks array, one column per stock), so a compute marked `on_panels` written with them runs
# on either: a frame per stock for a build, every stock of a run at once for a daily update's tails.

Panel = Mapping[str, np.ndarray]
"""Each required field as a (rows, stocks) float64 array, one stock's valid rows per column."""

Bars = pd.DataFrame | Panel
"""What a compute marked `on_panels` takes: one stock's bars, or a panel of many stocks' rows."""

Column = pd.Series | np.ndarray
"""What it returns: a column on one stock's dates, or a panel-shaped array."""


def on_panels(compute: Callable) -> Callable:
    """Mark a compute written with these helpers only: it also takes a `Panel` and returns an array
    (or a tuple of arrays) of the panel's shape, each column the stock's own column."""
    compute.on_panels = True  # type: ignore[attr-defined]
    return compute


def takes_panels(compute: object) -> bool:
    """Whether a registered compute (a function, a `partial` of one, or an `Output` of one) is `on_panels`."""
    if isinstance(compute, Output):
        compute = compute.fn
    while isinstance(compute, partial):
        compute = compute.func
    return getattr(compute, "on_panels", False)


def column(bars: pd.DataFrame | Panel, name: str) -> np.ndarray:
    """One input column as a float64 array: TA-Lib accepts nothing else, and numpy skips pandas' overhead."""
    values = bars[name]
    return values if isinstance(values, np.ndarray) else values.to_numpy(np.float64)


def aligned(values: np.ndarray, bars: pd.DataFrame | Panel) -> pd.Series | np.ndarray:
    """A computed column on the dates of the bars it came from (a panel's result stays an array)."""
    return pd.Series(values, index=bars.index) if isinstance(bars, pd.DataFrame) else values


def by_stock(function: Callable[..., object], *inputs: np.ndarray, **params: object) -> np.ndarray | tuple:
    """A 1-D function (TA-Lib's) of one stock's columns, run on each stock's column of a panel's inputs."""
    if inputs[0].ndim == 1:
        return function(*inputs, **params)
    # TA-Lib's own function under its pandas/polars wrapper (functools.wraps keeps it): the wrapper's
    # checks of every argument cost more than a short tail's computation
    function = getattr(function, "__wrapped__", function)
    outputs: list[np.ndarray] | None = None
    for stock in range(inputs[0].shape[1]):
        result = function(*(np.ascontiguousarray(x[:, stock]) for x in inputs), **params)
        columns = result if isinstance(result, tuple) else (result,)
        if outputs is None:
            outputs = [np.empty(inputs[0].shape, order="F") for _ in columns]
        for out, values in zip(outputs, columns, strict=True):
            out[:, stock] = values
    assert outputs is not None, "a panel has at least one stock"
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def shifted(values: np.ndarray, n: int) -> np.ndarray:
    """pandas' shift(n), n > 0: each value moved n rows later, NaN in the first n."""
    out = np.full_like(values, np.nan)
    out[n:] = values[: max(len(values) - n, 0)]
    return out


Statistic = Literal["sum", "mean", "std", "min", "max"]


def rolling(values: np.ndarray, n: int, statistic: Statistic) -> np.ndarray:
    """pandas' rolling `statistic` with min_periods = n: its compensated sums and stds define the columns.

    A panel's columns go through one pandas call, as one series whose windows never cross from one
    stock into the next (`StockWindows`): pandas starts each stock's windows afresh, as on its own.
    """
    if values.ndim == 1:
        return getattr(pd.Series(values).rolling(n, min_periods=n), statistic)().to_numpy()
    windows = pd.Series(values.ravel(order="F")).rolling(StockWindows(n, values.shape[0]), min_periods=n)
    return getattr(windows, statistic)().to_numpy().reshape(values.shape, order="F")


class StockWindows(BaseIndexer):
    """Trailing windows of `n` rows over a panel's columns laid end to end, `height` rows each: a
    window starts no earlier than its own stock's first row."""

    def __init__(self, n: int, height: int) -> None:
        super().__init__(window_size=n)
        self.height = height

    def get_window_bounds(
        self,
        num_values: int = 0,
        min_periods: int | None = None,
        center: bool | None = None,
        closed: str | None = None,
        step: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        end = np.arange(1, num_values + 1, dtype=np.int64)
        first = (end - 1) // self.height * self.height
        return np.maximum(first, end - self.window_size), end


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, inf or NaN where the denominator is 0 (stored as NaN), without warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def register_rows(
    family: str, rows: Iterable[IndicatorRow], added: str, tail_rows: Mapping[str, int] | None = None
) -> None:
    """Register a pandas family's table of columns, in order (the order is the store's column order).

    A `SameAs` row takes its source's warm-up, history and parameters; the table states them too, for
    the reader, and a row whose statement disagrees with its source is refused. `tail_rows` gives a
    column's measured history need (`Indicator.history_rows`) where its warm-up does not tell it."""
    tail_rows = tail_rows or {}
    for name, compute, formula, warmup, history, params in rows:
        if isinstance(compute, SameAs):
            source = REGISTRY.get(compute.source) if compute.source in REGISTRY else None
            if source is not None and (source.warmup, source.history, dict(source.params)) != (warmup, history, params):
                raise RegistryError(
                    f"indicator {name!r}: warm-up, history or params differ from its source {source.name!r}"
                )
            add_indicator(name, family, formula=formula, same_as=compute.source, version="1", added=added)
            continue
        add_indicator(
            name,
            family,
            formula=formula,
            compute=compute,
            version="1",
            warmup=warmup,
            history=history,
            params=params,
            added=added,
            history_rows=tail_rows.get(name),
        )
