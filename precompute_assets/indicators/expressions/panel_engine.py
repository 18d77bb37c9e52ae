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
Results are cast to float32 (as `D.features` does) with infinities stored as NaN, like `qlib_engine`.
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
from precompute_assets.store.base_fields import base_fields

log = logging.getLogger(__name__)

ENGINE_VARIABLE = "PRECOMPUTE_EXPRESSION_ENGINE"
STOCKS_PER_PANEL = 256
"""Stocks evaluated together: bounds the intermediate panels held for shared subexpressions."""

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
    """Base fields of a batch as (dates, stocks) float32 arrays; stock s lives in rows lo[s]..hi[s]-1."""

    fields: dict[str, np.ndarray]
    lo: np.ndarray
    hi: np.ndarray


def _prep(values: np.ndarray) -> np.ndarray:
    """pandas' `_prep_values` for its window kernels: float64, infinities as NaN."""
    out = np.asarray(values, dtype=np.float64)
    inf = np.isinf(out)
    if inf.any():
        out = np.where(inf, np.nan, out)
    return np.asfortranarray(out)


def _std(values: np.ndarray, panel: _Panel, n: int) -> np.ndarray:
    """pandas `rolling(n, min_periods=1).std()`: zsqrt of roll_var."""
    var = pk.roll_var(_prep(values), panel.lo, panel.hi, n, 1, 1)
    with np.errstate(invalid="ignore"):
        out = np.sqrt(var)
    out[var < 0] = 0
    return out


class _Evaluator:
    """Evaluates the nodes of a batch's trees once each (by their Qlib string), freeing a shared
    subexpression's panel when its last consumer has read it."""

    def __init__(self, panel: _Panel, trees: list[object]) -> None:
        self.panel = panel
        self.uses: Counter[str] = Counter()
        for tree in trees:
            self._count(tree)
        self.cache: dict[str, np.ndarray] = {}

    def _count(self, node: object) -> None:
        key = _key(node)
        self.uses[key] += 1
        if self.uses[key] == 1:
            for child in _children(node).values():
                self._count(child)

    def value(self, node: object) -> np.ndarray:
        key = _key(node)
        found = self.cache.get(key)
        if found is None:
            found = self._compute(node)
            if self.uses[key] > 1:
                self.cache[key] = found
        self.uses[key] -= 1
        if self.uses[key] <= 0:
            self.cache.pop(key, None)
        return found

    def _operand(self, node: object, name: str) -> object:
        from qlib.data.base import Expression

        child = getattr(node, name)
        return self.value(child) if isinstance(child, Expression) else child

    def _compute(self, node: object) -> np.ndarray:
        from qlib.data import ops

        p = self.panel
        n = getattr(node, "N", None)
        fixed = isinstance(n, int) and not isinstance(n, bool) and n > 0
        if isinstance(node, ops.Feature):
            return p.fields[node._name]
        with np.errstate(all="ignore"):  # x / 0 and log(0) give Qlib's inf and NaN, quietly
            return self._compute_node(node, n, fixed)

    def _compute_node(self, node: object, n: object, fixed: bool) -> np.ndarray:
        from qlib.data import ops

        if isinstance(node, ops.Sign):
            return np.sign(self.value(node.feature).astype(np.float32))
        if isinstance(node, ops.NpElemOperator):
            return getattr(np, node.func)(self.value(node.feature))
        if isinstance(node, ops.NpPairOperator):
            return getattr(np, node.func)(self._operand(node, "feature_left"), self._operand(node, "feature_right"))
        if isinstance(node, ops.If):
            cond = self.value(node.condition)
            return np.where(cond, self._operand(node, "feature_left"), self._operand(node, "feature_right"))
        if fixed and isinstance(node, ops.Ref | ops.Delta):
            return self._shifted(node, n)
        if fixed and isinstance(node, ops.Corr):
            left, right = self._operand(node, "feature_left"), self._operand(node, "feature_right")
            if isinstance(left, np.ndarray) and isinstance(right, np.ndarray):
                return self._corr(left, right, n)
            return self._per_stock(node, {"feature_left": left, "feature_right": right})
        if fixed and type(node).__name__ in _ROLLING:
            return self._rolling(node, self.value(node.feature), n)
        return self._per_stock(node, {k: self.value(c) for k, c in _children(node).items()})

    def _shifted(self, node: object, n: int) -> np.ndarray:
        from qlib.data import ops

        x = self.value(node.feature)
        if x.dtype.kind != "f":  # pandas shifts a bool Series to object: leave it to Qlib's own code
            return self._per_stock(node, {"feature": x})
        moved = pk.shift(np.asfortranarray(x, dtype=np.float64), self.panel.lo, self.panel.hi, n).astype(x.dtype)
        return moved if isinstance(node, ops.Ref) else x - moved

    def _rolling(self, node: object, x: np.ndarray, n: int) -> np.ndarray:
        p = self.panel
        name = type(node).__name__
        if name == "Count":
            return pk.roll_count(_prep(np.where(pd.isna(x), np.nan, 0.0)), p.lo, p.hi, n)
        if name in ("Slope", "Rsquare", "Resi"):
            kind = ("Slope", "Rsquare", "Resi").index(name)
            out = pk.qlib_regression(np.asfortranarray(x, dtype=np.float64), p.lo, p.hi, n, kind)
            if name == "Rsquare":
                out[np.isclose(_std(x, p, n), 0, atol=2e-05)] = np.nan
            return out
        v = _prep(x)
        if name == "Mean":
            return pk.roll_mean(v, p.lo, p.hi, n, 1)
        if name == "Sum":
            return pk.roll_sum(v, p.lo, p.hi, n, 1)
        if name == "Std":
            return _std(x, p, n)
        if name == "Var":
            return pk.roll_var(v, p.lo, p.hi, n, 1, 1)
        if name in ("Max", "Min"):
            return pk.roll_extreme(v, p.lo, p.hi, n, 1, name == "Max")
        if name == "Quantile":
            return pk.roll_quantile(v, p.lo, p.hi, n, 1, float(node.qscore))
        if name == "Rank":
            return pk.roll_rank_pct(v, p.lo, p.hi, n, 1)
        return pk.roll_arg_extreme(v, p.lo, p.hi, n, name == "IdxMax")

    def _corr(self, left: np.ndarray, right: np.ndarray, n: int) -> np.ndarray:
        """pandas `rolling(n, min_periods=1).corr(other)` (prep_binary's joint NaN mask, then its
        means, variances and count), with Qlib's near-zero-std mask on either input."""
        p = self.panel
        with np.errstate(all="ignore"):
            x, y = _prep(left + 0 * right), _prep(right + 0 * left)
            mean_xy = pk.roll_mean(np.asfortranarray(x * y), p.lo, p.hi, n, 1)
            mean_x = pk.roll_mean(x, p.lo, p.hi, n, 1)
            mean_y = pk.roll_mean(y, p.lo, p.hi, n, 1)
            count = pk.roll_sum(np.asfortranarray((~np.isnan(x + y)).astype(np.float64)), p.lo, p.hi, n, 0)
            var_x = pk.roll_var(x, p.lo, p.hi, n, 1, 1)
            var_y = pk.roll_var(y, p.lo, p.hi, n, 1, 1)
            numerator = (mean_xy - mean_x * mean_y) * (count / (count - 1))
            denominator = (var_x * var_y) ** 0.5
            out = numerator / denominator
        out[np.isclose(_std(left, p, n), 0, atol=2e-05) | np.isclose(_std(right, p, n), 0, atol=2e-05)] = np.nan
        return out

    def _per_stock(self, node: object, inputs: Mapping[str, object]) -> np.ndarray:
        """Qlib's own `_load_internal` of the operator, once per stock on its rows of the inputs."""
        from precompute_assets.indicators.expressions.qlib_segments import GivenSeries

        p = self.panel
        parts: list[tuple[int, int, int, np.ndarray]] = []
        original = _qlib_class(node)._load_internal
        for s, (a, b) in enumerate(zip(p.lo, p.hi, strict=True)):
            if a >= b:
                continue
            clone = copy.copy(node)
            for name, value in inputs.items():
                if isinstance(value, np.ndarray):
                    setattr(clone, name, GivenSeries(pd.Series(value[a:b, s], index=pd.RangeIndex(a, b))))
            series = original(clone, "panel", int(a), int(b) - 1)
            parts.append((s, int(a), int(b), series.reindex(pd.RangeIndex(a, b)).to_numpy()))
        dtype = np.result_type(*[v.dtype for *_, v in parts]) if parts else np.float64
        out = np.full(next(iter(p.fields.values())).shape, np.nan, dtype=np.float64 if dtype.kind != "f" else dtype)
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


@dataclass
class _Stocks:
    """A batch's base fields per stock (float32, as the store holds them) and first calendar rows."""

    fields: dict[str, dict[str, np.ndarray]]
    position: dict[str, int]

    @classmethod
    def of(cls, bars_by_code: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex) -> _Stocks:
        return cls(
            {code: base_fields(bars) for code, bars in bars_by_code.items()},
            {code: int(calendar.get_loc(bars.index[0])) for code, bars in bars_by_code.items()},
        )

    def length(self, code: str) -> int:
        return len(self.fields[code]["close"])


def _build_panel(stocks: _Stocks, codes: list[str], skip: Mapping[str, int]) -> _Panel:
    """The stocks' base fields from row `skip[code]` of each on, on calendar rows (one column a stock)."""
    begin = {c: stocks.position[c] + skip.get(c, 0) for c in codes}
    first = min(begin.values())
    last = max(stocks.position[c] + stocks.length(c) for c in codes)
    shape = (last - first, len(codes))
    fields: dict[str, np.ndarray] = {}
    lo = np.empty(len(codes), dtype=np.int64)
    hi = np.empty(len(codes), dtype=np.int64)
    for s, code in enumerate(codes):
        a, cut = begin[code] - first, skip.get(code, 0)
        lo[s], hi[s] = a, a + stocks.length(code) - cut
        for name, values in stocks.fields[code].items():
            if name not in fields:
                fields[name] = np.full(shape, np.nan, dtype=np.float32, order="F")
            fields[name][a : hi[s], s] = values[cut:]
    return _Panel(fields, lo, hi)


def _contiguous(bars: pd.DataFrame, calendar: pd.DatetimeIndex) -> bool:
    """True when the bars are consecutive calendar days (a stock's bin holds every day of its span)."""
    if bars.empty or bars.index[0] not in calendar:
        return False
    start = calendar.get_loc(bars.index[0])
    return isinstance(start, int) and calendar[start : start + len(bars)].equals(bars.index)


def _evaluate(
    expressions: list[str], stocks: _Stocks, skip: Mapping[str, int], out: Mapping[str, np.ndarray], columns: list[int]
) -> None:
    """Write each expression's float32 values for each stock's last `len(out[code])` rows into
    `out[code]`'s `columns`, evaluating each stock from its row `skip[code]` on."""
    for expression in expressions:
        if (operator := unsupported_operator(expression)) is not None:
            raise UnsupportedOperator(operator)
    trees = [parse_expression(e) for e in expressions]
    codes = list(out)
    for chunk_start in range(0, len(codes), STOCKS_PER_PANEL):
        chunk = codes[chunk_start : chunk_start + STOCKS_PER_PANEL]
        panel = _build_panel(stocks, chunk, skip)
        evaluator = _Evaluator(panel, trees)
        for column, tree in zip(columns, trees, strict=True):
            values = evaluator.value(tree)
            with np.errstate(over="ignore", invalid="ignore"):
                values = np.asarray(values).astype(np.float32)
            values[np.isinf(values)] = np.nan
            for s, code in enumerate(chunk):
                target, end = out[code], panel.hi[s]
                target[:, column] = values[end - target.shape[0] : end, s]


def evaluate_on_panel(
    expressions: Mapping[str, str], bars_by_code: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex
) -> dict[str, np.ndarray]:
    """float32 arrays (rows of each stock's bars, one column per expression); raises UnsupportedOperator
    when an expression is not supported (callers route those to Qlib first, see `split_supported`)."""
    stocks = _Stocks.of(bars_by_code, calendar)
    out = {code: np.empty((len(bars), len(expressions)), dtype=np.float32) for code, bars in bars_by_code.items()}
    _evaluate(list(expressions.values()), stocks, {}, out, list(range(len(expressions))))
    return out


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
    """Qlib's engine for the given stocks and expressions, written into `out`'s last rows."""
    from precompute_assets.indicators.expressions.qlib_engine import evaluate_expressions as qlib_evaluate

    part = qlib_evaluate(family, bars_by_code, calendar, expressions)
    result.errors.extend(part.errors)
    for code, frame in part.frames.items():
        target = out[code]
        for name in frame.columns:
            values = frame[name].to_numpy(np.float32)
            target[target.shape[0] - len(values) :, names.index(name)] = values


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

    Each expression is evaluated on only the rows it reads for those days (`expression_history`: its
    window, nested windows added up), with no pad rows: expressions are grouped by that need and each
    group runs once on the panel of every stock's last rows. Equal to a full-history evaluation within
    float rounding (the online sums start later).
    """
    from precompute_assets.indicators.expressions.qlib_engine import expression_history

    reach = max((expression_history(e) for e in expressions.values()), default=1)
    codes = [c for c in new_from if c in bars_by_code and not bars_by_code[c].empty]
    tails, first_new = {}, {}
    for code in codes:
        bars = bars_by_code[code]
        row = int(bars.index.searchsorted(new_from[code]))
        cut = max(0, row - reach + 1)  # no expression reads further back: base fields of these rows only
        tails[code], first_new[code] = bars.iloc[cut:], row - cut
    result = _evaluate_rows(family, tails, calendar, expressions, first_new)
    for code in codes:
        if code not in result.frames:  # nothing new: an empty frame, as a cut of the full result would be
            result.frames[code] = pd.DataFrame(columns=list(expressions), index=tails[code].index[:0], dtype=np.float32)
    return result


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
    result = FamilyResult()
    codes = [c for c, bars in bars_by_code.items() if not bars.empty]
    start = {c: (first_new or {}).get(c, 0) for c in codes}
    # Fortran order: a column is written per expression, and the frame takes the array without a copy
    out = {c: np.full((len(bars_by_code[c]) - start[c], len(names)), np.nan, np.float32, order="F") for c in codes}
    active = [c for c in codes if start[c] < len(bars_by_code[c])]
    panel_codes = [c for c in active if _contiguous(bars_by_code[c], calendar)]
    other_codes = [c for c in active if c not in set(panel_codes)]
    panel_exprs, qlib_exprs = split_supported(expressions)
    by_need: dict[int, list[str]] = {}
    for name in panel_exprs:
        need = expression_history(panel_exprs[name]) if first_new is not None else 0
        by_need.setdefault(need, []).append(name)
    if panel_codes and panel_exprs:
        stocks = _Stocks.of({c: bars_by_code[c] for c in panel_codes}, calendar)
        for need, group in sorted(by_need.items()):
            skip = {c: max(0, start[c] - need + 1) for c in panel_codes} if first_new is not None else {}
            targets = {c: out[c] for c in panel_codes}
            _evaluate([panel_exprs[n] for n in group], stocks, skip, targets, [names.index(n) for n in group])
    qlib_work = [(qlib_exprs, panel_codes), (dict(expressions), other_codes)]
    for chosen, chosen_codes in qlib_work:
        for need, group in _qlib_groups(chosen, first_new is not None).items():
            if chosen_codes and group:
                bars = {c: bars_by_code[c].iloc[max(0, start[c] - need) :] for c in chosen_codes}
                _qlib_part(family, bars, calendar, group, out, names, result)
    for code in codes:
        index = bars_by_code[code].index[start[code] :]
        result.frames[code] = pd.DataFrame(out[code], index=index, columns=names)
    return result


def _qlib_groups(expressions: Mapping[str, str], tails: bool) -> dict[int, dict[str, str]]:
    """Expressions for Qlib's engine: one group over full histories, or for tails one with the largest
    history need (Qlib's engine pads each stock itself)."""
    from precompute_assets.indicators.expressions.qlib_engine import expression_history

    if not expressions:
        return {}
    need = max(expression_history(e) for e in expressions.values()) if tails else 0
    return {need: dict(expressions)}
