"""Evaluate Qlib expressions on a (dates, stocks) panel: every stock of a batch in one pass per operator.

Each registered expression is parsed by Qlib's own parser (`qlib.utils.parse_field`, evaluated against
Qlib's operator classes) into the same `Operators` tree `D.features` builds; the tree is then evaluated
bottom-up on float panels instead of per-stock pandas Series:
- element-wise operators run the same numpy function Qlib calls, on arrays of the same dtypes (float32
  base fields, float64 rolling results, bool comparisons), so each element is Qlib's;
- rolling operators with a fixed window run `panel_kernels`' transcriptions of pandas' and Qlib's
  kernels, each stock's series starting at its first row as Qlib loads it from the store;
- every other Qlib operator (expanding windows, EMA, WMA, Skew, Kurt, Med, Mad, Cov, ...) runs Qlib's
  own `_load_internal` once per stock on that stock's slice of its inputs;
- an expression with an operator the panel cannot evaluate (one that reads other instruments or
  resamples the calendar, or a user's custom operator) goes to Qlib's engine (`qlib_engine`), and the
  run logs that once per operator.
A batch's base fields are made from its bars as one numpy block per panel (the same float64 operations
as `store.base_fields`, then float32, as the store holds them); the stocks' rows are laid out ending
at the panel's last row, so a daily update's tails of every stock fit one small panel. Each node is
evaluated once for all the expressions sharing it, on only the last rows its consumers read (the
window extents of the operators above it). Results are cast to float32 (as `D.features` does) with
infinities stored as NaN, like `qlib_engine`, into one block per panel that the stocks' frames view.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.indicators.expressions import panel_kernels as pk
from precompute_assets.indicators.families.base import FamilyResult
from precompute_assets.store.base_fields import BASE_FIELDS

log = logging.getLogger(__name__)

ENGINE_VARIABLE = "PRECOMPUTE_EXPRESSION_ENGINE"
NOT_ON_A_PANEL = frozenset({"ChangeInstrument", "Mask", "TResample", "PFeature", "P", "PRef"})
"""Qlib operators that read another instrument, point-in-time data or a resampled calendar."""

_REPORTED: set[str] = set()


def expression_engine() -> str:
    """`panel` (default) or `qlib` (today's pseudo-instrument engine), from PRECOMPUTE_EXPRESSION_ENGINE."""
    engine = os.environ.get(ENGINE_VARIABLE, "panel").strip().lower() or "panel"
    if engine not in ("panel", "qlib"):
        raise ValueError(f"{ENGINE_VARIABLE}={engine!r}: one of 'panel', 'qlib'")
    return engine


class UnsupportedOperator(Exception):
    """An expression uses an operator the panel engine does not evaluate."""

    def __init__(self, operator: str) -> None:
        super().__init__(operator)
        self.operator = operator


class _Operators:
    """The namespace `parse_field`'s output is evaluated in: Qlib's own operator classes by name."""

    def __getattr__(self, name: str) -> type:
        found = _qlib_ops()
        if name in NOT_ON_A_PANEL or name not in found:
            raise UnsupportedOperator(name)
        return found[name]


@functools.cache
def _qlib_ops() -> dict[str, type]:
    from qlib.data import ops

    return {op.__name__: op for op in ops.OpsList}


@functools.cache
def parse_expression(expression: str) -> object:
    """Qlib's expression tree for `expression`, built by Qlib's parser from Qlib's operators (cached:
    the evaluator never changes a tree)."""
    from qlib.utils import parse_field

    return eval(parse_field(expression), {"Operators": _Operators()})  # Qlib's own parsing, as Qlib does


def report_unsupported(operator: str, expression: str) -> None:
    """Say once per run (process) that an operator's expressions go to Qlib's engine."""
    if operator not in _REPORTED:
        _REPORTED.add(operator)
        log.warning(
            "panel expression engine: operator %s is not supported on a panel; expressions using it "
            "(e.g. %r) are evaluated by Qlib's engine",
            operator,
            expression,
        )


def _children(node: object) -> dict[str, object]:
    from qlib.data.base import Expression

    names = ("feature", "feature_left", "feature_right", "condition")
    return {n: getattr(node, n) for n in names if isinstance(getattr(node, n, None), Expression)}


def _check_supported(node: object) -> None:
    """Raise UnsupportedOperator for a node the panel cannot evaluate (custom operators included)."""
    from qlib.data import ops

    name = type(node).__name__
    if name in NOT_ON_A_PANEL or name not in _qlib_ops() or not isinstance(node, getattr(ops, name)):
        raise UnsupportedOperator(name)
    for child in _children(node).values():
        _check_supported(child)


@dataclass
class _Panel:
    """Base fields of a batch as (rows, stocks) float32 arrays in Fortran order (a stock's rows are
    contiguous), every stock's rows ending at the last row: stock s lives in rows lo[s]..rows-1."""

    fields: dict[str, np.ndarray]
    lo: np.ndarray
    rows: int

    def bounds(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Each stock's first row and end in an array holding the panel's last `rows` rows."""
        lo = np.maximum(self.lo - (self.rows - rows), 0)
        return lo, np.full_like(lo, rows)


def _prep(values: np.ndarray) -> np.ndarray:
    """pandas' `_prep_values` for its window kernels: float64, infinities as NaN."""
    out = np.asarray(values, dtype=np.float64)
    inf = np.isinf(out)
    if inf.any():
        out = np.where(inf, np.nan, out)
    return np.asfortranarray(out)


def _std(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, skip: int = 0) -> np.ndarray:
    """pandas `rolling(n, min_periods=1).std()`: zsqrt of roll_var (its rows from `skip` on)."""
    var = pk.roll_var(_prep(values), lo, hi, n, 1, 1)[skip:]
    with np.errstate(invalid="ignore"):
        out = np.sqrt(var)
    out[var < 0] = 0
    return out


def _lookback(node: object, all_rows: int) -> int:
    """Rows before t an operator reads of its inputs for its value at t (`all_rows` where it reads
    from the series' start: expanding windows, EMA's recursion, `Ref(x, 0)`'s first value)."""
    from qlib.data import ops

    n = getattr(node, "N", None)
    if not isinstance(node, ops.Rolling | ops.PairRolling):
        return 0
    if isinstance(node, ops.EMA) or not isinstance(n, int) or isinstance(n, bool) or n == 0:
        return all_rows
    if isinstance(node, ops.Ref | ops.Delta):
        return max(n, 0)
    return n - 1


@dataclass(frozen=True)
class _ReadingPlan:
    """For trees evaluated on their last `out_rows` rows of a panel: per node (by its Qlib string) how
    many consumers read it, how many last rows of it they read, and how many rows before those it
    reads of its own inputs (`_lookback`)."""

    uses: Counter[str]
    rows: dict[str, int]
    lookback: dict[str, int]


@functools.cache
def _kind(cls: type) -> str:
    """Which of the evaluator's cases a node class takes, tested in the evaluator's order (a Sign is
    an element-wise operator too), once per class instead of once per node and batch."""
    from qlib.data import ops

    cases = (
        ("feature", ops.Feature),
        ("sign", ops.Sign),
        ("elem", ops.NpElemOperator),
        ("pair", ops.NpPairOperator),
        ("if", ops.If),
        ("shift", ops.Ref | ops.Delta),
        ("corr", ops.Corr),
    )
    for kind, base in cases:
        if issubclass(cls, base):
            return kind
    return "rolling" if cls.__name__ in _ROLLING else "other"


_PLANS: dict[tuple[tuple[str, ...], int, int], _ReadingPlan] = {}
_PLANS_KEPT = 64


def _reading_plan(trees: list[object], out_rows: int, panel_rows: int) -> _ReadingPlan:
    """The trees' reading plan on a panel of `panel_rows`: the same for every batch of a run with
    those rows (a daily update's buckets), so it is worked out once."""
    key = (tuple(_key(tree) for tree in trees), out_rows, panel_rows)
    found = _PLANS.get(key)
    if found is None:
        found = _ReadingPlan(Counter(), {}, {})
        for tree in trees:
            _count_uses(tree, found.uses, found.lookback, panel_rows)
            _need_rows(tree, out_rows, panel_rows, found.rows)
        if len(_PLANS) >= _PLANS_KEPT:
            _PLANS.clear()
        _PLANS[key] = found
    return found


def _count_uses(node: object, uses: Counter[str], lookback: dict[str, int], panel_rows: int) -> None:
    key = _key(node)
    uses[key] += 1
    if uses[key] == 1:
        lookback[key] = _lookback(node, panel_rows)
        for child in _children(node).values():
            _count_uses(child, uses, lookback, panel_rows)


def _need_rows(node: object, rows: int, panel_rows: int, need: dict[str, int]) -> None:
    key = _key(node)
    rows = min(rows, panel_rows)
    if rows <= need.get(key, 0):
        return
    need[key] = rows
    for child in _children(node).values():
        _need_rows(child, rows + _lookback(node, panel_rows), panel_rows, need)


class _Evaluator:
    """Evaluates the nodes of a batch's trees once each (by their Qlib string), each on only the panel's
    last rows its consumers read (`rows`), freeing a shared subexpression's values when its last
    consumer has read them. A node's value is an array of its last `rows[key]` rows."""

    def __init__(self, panel: _Panel, trees: list[object], out_rows: int) -> None:
        self.panel = panel
        plan = _reading_plan(trees, out_rows, panel.rows)
        self.rows, self.lookback = plan.rows, plan.lookback
        self.uses = plan.uses.copy()  # counted down as consumers read
        self.cache: dict[str, np.ndarray] = {}
        self._bounds: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def bounds(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        found = self._bounds.get(rows)
        if found is None:
            found = self._bounds[rows] = self.panel.bounds(rows)
        return found

    def value(self, node: object) -> np.ndarray:
        """The node's values on its last `rows[key]` rows."""
        key = _key(node)
        found = self.cache.get(key)
        if found is None:
            found = self._compute(node, key)
            if self.uses[key] > 1:
                self.cache[key] = found
        self.uses[key] -= 1
        if self.uses[key] <= 0:
            self.cache.pop(key, None)
        return found

    def _operand(self, node: object, name: str, rows: int) -> object:
        """A child's values on the last `rows` rows (a constant as it is)."""
        from qlib.data.base import Expression

        child = getattr(node, name)
        return self.value(child)[-rows:] if isinstance(child, Expression) else child

    def _compute(self, node: object, key: str) -> np.ndarray:
        """The node's last `rows[key]` rows; called inside `_evaluate_batch`'s errstate (x / 0 and
        log(0) give Qlib's inf and NaN, quietly)."""
        rows = self.rows[key]
        kind = _kind(type(node))
        if kind == "feature":
            return self.panel.fields[node._name][-rows:]
        n = getattr(node, "N", None)
        fixed = isinstance(n, int) and not isinstance(n, bool) and n > 0
        rows_in = min(rows + self.lookback[key], self.panel.rows)
        return self._compute_node(node, kind, n, fixed, rows_in, rows_in - rows)[-rows:]

    def _compute_node(self, node: object, kind: str, n: object, fixed: bool, rows: int, skip: int) -> np.ndarray:
        """The node (of `_kind` `kind`) from its inputs on the panel's last `rows` rows, of which the
        first `skip` are read by no consumer (only windows over them are): its values on the last
        `rows - skip` rows at least."""
        if kind == "sign":
            return np.sign(self._operand(node, "feature", rows).astype(np.float32))
        if kind == "elem":
            return getattr(np, node.func)(self._operand(node, "feature", rows))
        if kind == "pair":
            left, right = self._operand(node, "feature_left", rows), self._operand(node, "feature_right", rows)
            return getattr(np, node.func)(left, right)
        if kind == "if":
            cond = self._operand(node, "condition", rows)
            return np.where(cond, self._operand(node, "feature_left", rows), self._operand(node, "feature_right", rows))
        if fixed and kind == "shift":
            return self._shifted(node, n, rows)
        if fixed and kind == "corr":
            left, right = self._operand(node, "feature_left", rows), self._operand(node, "feature_right", rows)
            if isinstance(left, np.ndarray) and isinstance(right, np.ndarray):
                return self._corr(left, right, n, rows, skip)
            return self._per_stock(node, {"feature_left": left, "feature_right": right}, rows)
        if fixed and kind == "rolling":
            return self._rolling(node, self._operand(node, "feature", rows), n, rows, skip)
        inputs = {k: self.value(c)[-rows:] for k, c in _children(node).items()}
        return self._per_stock(node, inputs, rows)

    def _shifted(self, node: object, n: int, rows: int) -> np.ndarray:
        """pandas `shift(n)` in each stock's rows, in the input's own dtype (Ref), and x minus it (Delta)."""
        from qlib.data import ops

        x = self._operand(node, "feature", rows)
        if x.dtype.kind != "f":  # pandas shifts a bool Series to object: leave it to Qlib's own code
            return self._per_stock(node, {"feature": x}, rows)
        lo, _ = self.bounds(rows)
        moved = np.full_like(x, np.nan, order="F")
        moved[n:] = x[:-n]
        moved[np.arange(rows)[:, None] < (lo + n)[None, :]] = np.nan
        return moved if isinstance(node, ops.Ref) else x - moved

    def _rolling(self, node: object, x: np.ndarray, n: int, rows: int, skip: int) -> np.ndarray:
        lo, hi = self.bounds(rows)
        name = type(node).__name__
        if name == "Count":
            return pk.roll_count(_prep(np.where(pd.isna(x), np.nan, 0.0)), lo, hi, n, skip)
        if name in ("Slope", "Rsquare", "Resi"):
            kind = ("Slope", "Rsquare", "Resi").index(name)
            out = pk.qlib_regression(np.asfortranarray(x, dtype=np.float64), lo, hi, n, kind)[skip:]
            if name == "Rsquare":
                out[np.isclose(_std(x, lo, hi, n, skip), 0, atol=2e-05)] = np.nan
            return out
        v = _prep(x)
        if name == "Mean":
            return pk.roll_mean(v, lo, hi, n, 1)
        if name == "Sum":
            return pk.roll_sum(v, lo, hi, n, 1)
        if name == "Std":
            return _std(x, lo, hi, n, skip)
        if name == "Var":
            return pk.roll_var(v, lo, hi, n, 1, 1)
        if name in ("Max", "Min"):
            return pk.roll_extreme(v, lo, hi, n, 1, name == "Max", skip)
        if name == "Quantile":
            return pk.roll_quantile(v, lo, hi, n, 1, float(node.qscore), skip)
        if name == "Rank":
            return pk.roll_rank_pct(v, lo, hi, n, 1, skip)
        return pk.roll_arg_extreme(v, lo, hi, n, name == "IdxMax", skip)

    def _corr(self, left: np.ndarray, right: np.ndarray, n: int, rows: int, skip: int) -> np.ndarray:
        """pandas `rolling(n, min_periods=1).corr(other)` (prep_binary's joint NaN mask, then its
        means, variances and count), with Qlib's near-zero-std mask on either input; the rolling sums
        over all `rows`, the rest on the rows from `skip` on (the ones read)."""
        lo, hi = self.bounds(rows)
        with np.errstate(all="ignore"):
            x, y = _prep(left + 0 * right), _prep(right + 0 * left)
            mean_xy = pk.roll_mean(np.asfortranarray(x * y), lo, hi, n, 1)[skip:]
            mean_x = pk.roll_mean(x, lo, hi, n, 1)[skip:]
            mean_y = pk.roll_mean(y, lo, hi, n, 1)[skip:]
            count = pk.roll_sum(np.asfortranarray((~np.isnan(x + y)).astype(np.float64)), lo, hi, n, 0)[skip:]
            var_x = pk.roll_var(x, lo, hi, n, 1, 1)[skip:]
            var_y = pk.roll_var(y, lo, hi, n, 1, 1)[skip:]
            numerator = (mean_xy - mean_x * mean_y) * (count / (count - 1))
            denominator = (var_x * var_y) ** 0.5
            out = numerator / denominator
        flat = np.isclose(_std(left, lo, hi, n, skip), 0, atol=2e-05)
        flat |= np.isclose(_std(right, lo, hi, n, skip), 0, atol=2e-05)
        out[flat] = np.nan
        return out

    def _per_stock(self, node: object, inputs: Mapping[str, object], rows: int) -> np.ndarray:
        """Qlib's own `_load_internal` of the operator, once per stock on its rows of the inputs."""
        from precompute_assets.indicators.expressions.qlib_segments import GivenSeries

        lo, hi = self.bounds(rows)
        parts: list[tuple[int, int, int, np.ndarray]] = []
        original = _qlib_class(node)._load_internal
        for s, (a, b) in enumerate(zip(lo, hi, strict=True)):
            if a >= b:
                continue
            clone = copy.copy(node)
            for name, value in inputs.items():
                if isinstance(value, np.ndarray):
                    setattr(clone, name, GivenSeries(pd.Series(value[a:b, s], index=pd.RangeIndex(a, b))))
            series = original(clone, "panel", int(a), int(b) - 1)
            parts.append((s, int(a), int(b), series.reindex(pd.RangeIndex(a, b)).to_numpy()))
        dtype = np.result_type(*[v.dtype for *_, v in parts]) if parts else np.float64
        out = np.full((rows, len(lo)), np.nan, dtype=np.float64 if dtype.kind != "f" else dtype, order="F")
        for s, a, b, values in parts:
            out[a:b, s] = values
        return out


_KEYS: dict[int, tuple[object, str]] = {}


def _key(node: object) -> str:
    """Qlib's string of a node (its identity in Qlib's cache too), computed once per parsed node."""
    found = _KEYS.get(id(node))
    if found is None or found[0] is not node:
        found = _KEYS[id(node)] = (node, str(node))  # holds the node: its id is never reused
    return found[1]


def _qlib_class(node: object) -> type:
    """Qlib's own class of a node (not a subclass another engine registered under its name)."""
    from qlib.data import ops

    return getattr(ops, type(node).__name__)


_ROLLING = {
    "Mean",
    "Sum",
    "Std",
    "Var",
    "Max",
    "Min",
    "Quantile",
    "Rank",
    "Count",
    "IdxMax",
    "IdxMin",
    "Slope",
    "Rsquare",
    "Resi",
}
"""Fixed-window operators with a panel kernel; the other rolling operators run Qlib's code per stock."""


_SOURCES = ("open", "high", "low", "close", "volume", "factor", "amount")
"""The input columns the base fields are made of (`amount` optional)."""


def _base_panel(bars: list[pd.DataFrame], first: np.ndarray, lengths: np.ndarray) -> _Panel:
    """`base_fields` of each stock's bars from its row `first[s]` on (`lengths[s]` rows), computed for
    the batch at once (the same float64 operations, then float32) and laid out as a panel."""
    rows = int(lengths.max())
    raw = np.full((len(_SOURCES), len(bars), rows), np.nan)  # raw[f].T: a (rows, stocks) Fortran panel
    places: dict[tuple[object, ...], tuple[list[int], list[int]]] = {}
    alike: dict[tuple[tuple[object, ...], int], list[int]] = {}  # same columns and rows: copied together
    columns: list[np.ndarray] = []
    for s, frame in enumerate(bars):
        key = tuple(frame.columns.tolist())
        if key not in places:
            places[key] = _places(frame.columns)
        try:  # one block of floats, as the bars step makes them: a view, no copy
            values = frame.to_numpy(np.float64, copy=False).T
        except (TypeError, ValueError):  # other columns that are not numbers: only the sources
            targets, sources = places[key]
            values = frame.iloc[:, sources].to_numpy(np.float64).T
            key = (*key, "sources only")
            places[key] = (targets, list(range(len(sources))))
        columns.append(values[:, first[s] :])
        alike.setdefault((key, int(lengths[s])), []).append(s)
    for (key, length), members in alike.items():
        targets, sources = places[key]
        stacked = np.stack([columns[s] for s in members])[:, sources, :]
        raw[np.array(targets)[:, None], np.array(members)[None, :], rows - length :] = stacked.transpose(1, 0, 2)
    f = dict(zip(_SOURCES, raw, strict=True))
    typical = (f["high"] + f["low"] + f["close"]) / 3.0
    traded = np.isfinite(f["amount"]) & (f["volume"] > 0)
    f["vwap"] = np.where(traded, f["amount"] / np.where(traded, f["volume"], 1.0), typical)
    names = list(BASE_FIELDS)
    if any(_SOURCES.index("amount") in targets for targets, _ in places.values()):
        names.append("amount")
    fields = {name: f[name].T.astype(np.float32) for name in names}  # Fortran, as the kernels read it
    return _Panel(fields, rows - lengths, rows)


def _places(columns: pd.Index) -> tuple[list[int], list[int]]:
    """Where each base-field source is in `_SOURCES` and in the bars' columns."""
    targets, sources = [], []
    for target, name in enumerate(_SOURCES):
        if name in columns:
            targets.append(target)
            sources.append(int(columns.get_loc(name)))
        elif name != "amount":
            raise KeyError(f"bars without a {name!r} column")
    return targets, sources


CELLS_PER_PANEL = 256 * 2_500
"""Rows x stocks evaluated together: bounds the intermediate panels held for shared subexpressions
(256 stocks of ten years, or every stock of a daily update's tails at once)."""


def _evaluate_batch(
    trees: list[object], bars: list[pd.DataFrame], first: np.ndarray, lengths: np.ndarray, out_rows: np.ndarray
) -> list[np.ndarray]:
    """Each stock's last `out_rows[s]` rows of every tree, evaluated from its bars' row `first[s]` on
    (`lengths[s]` rows from there): a list, in `bars`' order, of float32 (rows, trees) views into one
    block per panel.

    Stocks are put on panels by length (little padding) of at most `CELLS_PER_PANEL` cells; each tree's
    values are written into the panel's block in one step, cast to float32 with infinities as NaN,
    as `qlib_engine` stores them.
    """
    order = np.argsort(lengths, kind="stable")
    found: list[np.ndarray] = [np.empty((0, len(trees)), np.float32)] * len(bars)
    begin = 0
    while begin < len(order):
        end = begin + 1
        while end < len(order) and lengths[order[end]] * (end + 1 - begin) <= CELLS_PER_PANEL:
            end += 1
        chunk = order[begin:end]
        begin = end
        panel = _base_panel([bars[s] for s in chunk], first[chunk], lengths[chunk])
        rows = int(out_rows[chunk].max())
        block = np.empty((len(trees), len(chunk), rows), np.float32)  # block[t].T: a tree's (rows, stocks)
        evaluator = _Evaluator(panel, trees, rows)
        # once for the batch, not per node: x / 0 and log(0) give Qlib's inf and NaN, quietly
        with np.errstate(all="ignore"):
            for t, tree in enumerate(trees):
                target = block[t]
                # [-rows:]: a root that is also another tree's subexpression holds the rows that one reads
                np.copyto(target, evaluator.value(tree)[-rows:].T, casting="unsafe")
                target[np.isinf(target)] = np.nan
        for place, s in enumerate(chunk):
            found[s] = block[:, place, rows - out_rows[s] :].T
    return found


class _CalendarRows:
    """Where stocks' bars sit on the calendar, and the calendar's date index slices, shared by stocks."""

    def __init__(self, calendar: pd.DatetimeIndex) -> None:
        self.calendar = calendar
        self._i8 = calendar.asi8 if isinstance(calendar, pd.DatetimeIndex) else None
        self._slices: dict[tuple[int, int, object], pd.Index] = {}

    def start(self, index: pd.Index, first: int) -> int:
        """The calendar row of `index[first]` when `index[first:]` is consecutive calendar days (a
        stock's bin holds every day of its span), else -1."""
        if self._i8 is None or not isinstance(index, pd.DatetimeIndex) or index.dtype != self.calendar.dtype:
            return self._start_of_other(index[first:])
        days = index.asi8[first:]
        if not len(days):
            return -1
        at = int(self._i8.searchsorted(days[0]))
        if at + len(days) > len(self._i8) or not np.array_equal(self._i8[at : at + len(days)], days):
            return -1
        return at

    def _start_of_other(self, index: pd.Index) -> int:
        if index.empty or index[0] not in self.calendar:
            return -1
        at = self.calendar.get_loc(index[0])
        return at if isinstance(at, int) and self.calendar[at : at + len(index)].equals(index) else -1

    def dates(self, begin: int, end: int, name: object) -> pd.Index:
        """`calendar[begin:end]` named `name`, one object for every stock with those dates."""
        key = (begin, end, name)
        found = self._slices.get(key)
        if found is None:
            found = self._slices[key] = self.calendar[begin:end].rename(name)
        return found


def _row_of(index: pd.Index, day: pd.Timestamp) -> int:
    """`index.searchsorted(day)`, on the int64 dates where the index is in nanoseconds."""
    if isinstance(index, pd.DatetimeIndex) and index.dtype == np.dtype("datetime64[ns]"):
        return int(index.asi8.searchsorted(_nanoseconds(day)))
    return int(index.searchsorted(day))


@functools.lru_cache(maxsize=64)
def _nanoseconds(day: pd.Timestamp) -> int:
    return pd.Timestamp(day).value


def evaluate_on_panel(
    expressions: Mapping[str, str], bars_by_code: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex
) -> dict[str, np.ndarray]:
    """float32 arrays (rows of each stock's bars, one column per expression); raises UnsupportedOperator
    when an expression is not supported (callers route those to Qlib first, see `split_supported`) and
    ValueError for bars that are not consecutive calendar days."""
    for expression in expressions.values():
        if (operator := unsupported_operator(expression)) is not None:
            raise UnsupportedOperator(operator)
    places = _CalendarRows(calendar)
    for code, bars in bars_by_code.items():
        if places.start(bars.index, 0) < 0:
            raise ValueError(f"{code}: bars are not consecutive days of the calendar")
    bars = list(bars_by_code.values())
    trees = [parse_expression(e) for e in expressions.values()]
    lengths = np.array([len(b) for b in bars], dtype=np.int64)
    values = _evaluate_batch(trees, bars, np.zeros_like(lengths), lengths, lengths)
    return dict(zip(bars_by_code, values, strict=True))


@functools.cache
def unsupported_operator(expression: str) -> str | None:
    """The first operator of `expression` the panel cannot evaluate, or None."""
    try:
        _check_supported(parse_expression(expression))
    except UnsupportedOperator as exc:
        return exc.operator
    return None


def split_supported(expressions: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(expressions the panel evaluates, expressions for Qlib's engine), reporting each unsupported
    operator once."""
    panel, qlib = {}, {}
    for name, expression in expressions.items():
        operator = unsupported_operator(expression)
        if operator is None:
            panel[name] = expression
        else:
            report_unsupported(operator, expression)
            qlib[name] = expression
    return panel, qlib


def _qlib_part(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    expressions: Mapping[str, str],
    out: dict[str, np.ndarray],
    names: list[str],
    result: FamilyResult,
) -> None:
    """Qlib's engine for the given stocks and expressions; the last rows of its values (a tail's bars
    start before its new days, by the expressions' history) written into `out`."""
    from precompute_assets.indicators.expressions.qlib_engine import evaluate_expressions as qlib_evaluate

    part = qlib_evaluate(family, bars_by_code, calendar, expressions)
    result.errors.extend(part.errors)
    for code, frame in part.frames.items():
        target = out[code]
        for name in frame.columns:
            values = frame[name].to_numpy(np.float32)
            target[:, names.index(name)] = values[len(values) - target.shape[0] :]


def evaluate_expressions(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    expressions: Mapping[str, str],
) -> FamilyResult:
    """`qlib_engine.evaluate_expressions`' result, computed on a panel where the panel can."""
    return _evaluate_rows(family, bars_by_code, calendar, expressions, None)


def evaluate_tails(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    new_from: Mapping[str, pd.Timestamp],
    expressions: Mapping[str, str],
) -> FamilyResult:
    """The expressions' values from `new_from[code]` on, for every stock of the run at once.

    No pad rows: every stock's base fields are read from as far back as the expressions read for those
    days (`expression_history`) onto one panel, and each operator runs on only the rows its consumers
    read (its window, nested windows added up), once for all the expressions that share it. Equal to
    a full-history evaluation within float rounding (the online sums start later).
    """
    codes = [c for c in new_from if c in bars_by_code and len(bars_by_code[c].index)]
    first_new = {c: _row_of(bars_by_code[c].index, new_from[c]) for c in codes}
    return _evaluate_rows(family, {c: bars_by_code[c] for c in codes}, calendar, expressions, first_new)


def _evaluate_rows(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    expressions: Mapping[str, str],
    first_new: Mapping[str, int] | None,
) -> FamilyResult:
    """Every stock's rows from `first_new[code]` on (all rows when None), each expression evaluated
    from as far back as it reads; stocks off the calendar and unsupported expressions go to Qlib."""
    from precompute_assets.indicators.expressions.qlib_engine import expression_history

    names = list(expressions)
    columns = pd.Index(names)
    result = FamilyResult()
    length = {c: len(bars.index) for c, bars in bars_by_code.items()}
    codes = [c for c in bars_by_code if length[c]]
    start = {c: (first_new or {}).get(c, 0) for c in codes}
    panel_exprs, qlib_exprs = split_supported(expressions)
    reach = max((expression_history(e) for e in panel_exprs.values()), default=1)
    places = _CalendarRows(calendar)
    out: dict[str, np.ndarray] = {}
    dates: dict[str, pd.Index] = {}
    panel_codes, other_codes, first = [], [], []
    for code in codes:
        bars = bars_by_code[code]
        if start[code] >= length[code]:
            continue
        cut = max(0, start[code] - reach + 1) if first_new is not None else 0  # nothing reads further back
        at = places.start(bars.index, cut)
        if at < 0:
            other_codes.append(code)
            continue
        panel_codes.append(code)
        first.append(cut)
        dates[code] = places.dates(at + start[code] - cut, at + length[code] - cut, bars.index.name)
    if panel_codes and panel_exprs:
        trees = [parse_expression(e) for e in panel_exprs.values()]
        cuts = np.array(first, dtype=np.int64)
        lengths = np.array([length[c] for c in panel_codes], dtype=np.int64) - cuts
        new_rows = np.array([length[c] - start[c] for c in panel_codes], dtype=np.int64)
        values = _evaluate_batch(trees, [bars_by_code[c] for c in panel_codes], cuts, lengths, new_rows)
        if not qlib_exprs:
            out = dict(zip(panel_codes, values, strict=True))
        else:
            at = [names.index(n) for n in panel_exprs]
            for code, found in zip(panel_codes, values, strict=True):
                out[code] = np.full((found.shape[0], len(names)), np.nan, np.float32, order="F")
                out[code][:, at] = found
    for code in codes:
        if code not in out:
            out[code] = np.full((length[code] - start[code], len(names)), np.nan, np.float32, order="F")
    qlib_work = [(qlib_exprs, panel_codes), (dict(expressions), other_codes)]
    for chosen, chosen_codes in qlib_work:
        for need, group in _qlib_groups(chosen, first_new is not None).items():
            if chosen_codes and group:
                bars = {c: bars_by_code[c].iloc[max(0, start[c] - need) :] for c in chosen_codes}
                _qlib_part(family, bars, calendar, group, out, names, result)
    for code in codes:
        index = dates[code] if code in dates else bars_by_code[code].index[start[code] :]
        result.frames[code] = pd.DataFrame(out[code], index=index, columns=columns, copy=False)
    return result


def _qlib_groups(expressions: Mapping[str, str], tails: bool) -> dict[int, dict[str, str]]:
    """Expressions for Qlib's engine: one group over full histories, or for tails one with the largest
    history need (Qlib's engine pads each stock itself)."""
    from precompute_assets.indicators.expressions.qlib_engine import expression_history

    if not expressions:
        return {}
    need = max(expression_history(e) for e in expressions.values()) if tails else 0
    return {need: dict(expressions)}
