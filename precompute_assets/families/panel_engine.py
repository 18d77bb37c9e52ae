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
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.families import panel_kernels as pk
from precompute_assets.families.base import FamilyResult
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
        from qlib.data import ops

        found = {op.__name__: op for op in ops.OpsList}
        if name in NOT_ON_A_PANEL or name not in found:
            raise UnsupportedOperator(name)
        return found[name]


def parse_expression(expression: str) -> object:
    """Qlib's expression tree for `expression`, built by Qlib's parser from Qlib's operators."""
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
    own = {op.__name__ for op in ops.OpsList}
    if name in NOT_ON_A_PANEL or name not in own or not isinstance(node, getattr(ops, name)):
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
        key = str(node)
        self.uses[key] += 1
        if self.uses[key] == 1:
            for child in _children(node).values():
                self._count(child)

    def value(self, node: object) -> np.ndarray:
        key = str(node)
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
        from precompute_assets.families.qlib_segments import GivenSeries

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


def _build_panel(bars_by_code: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex) -> tuple[_Panel, int]:
    """The batch's base fields on calendar rows from the first stock's first day (returned too)."""
    positions = {code: int(calendar.get_loc(bars.index[0])) for code, bars in bars_by_code.items()}
    first = min(positions.values())
    last = max(positions[c] + len(b) for c, b in bars_by_code.items())
    shape = (last - first, len(bars_by_code))
    fields: dict[str, np.ndarray] = {}
    lo = np.empty(len(bars_by_code), dtype=np.int64)
    hi = np.empty(len(bars_by_code), dtype=np.int64)
    for s, (code, bars) in enumerate(bars_by_code.items()):
        a = positions[code] - first
        lo[s], hi[s] = a, a + len(bars)
        for name, values in base_fields(bars).items():
            if name not in fields:
                fields[name] = np.full(shape, np.nan, dtype=np.float32, order="F")
            fields[name][a : a + len(bars), s] = values
    return _Panel(fields, lo, hi), first


def _contiguous(bars: pd.DataFrame, calendar: pd.DatetimeIndex) -> bool:
    """True when the bars are consecutive calendar days (a stock's bin holds every day of its span)."""
    if bars.empty or bars.index[0] not in calendar:
        return False
    start = calendar.get_loc(bars.index[0])
    return isinstance(start, int) and calendar[start : start + len(bars)].equals(bars.index)


def evaluate_on_panel(
    expressions: Mapping[str, str], bars_by_code: Mapping[str, pd.DataFrame], calendar: pd.DatetimeIndex
) -> dict[str, np.ndarray]:
    """float32 arrays (rows of each stock's bars, one column per expression) for supported expressions;
    raises UnsupportedOperator when one is not (callers route it to Qlib first, see `split_supported`)."""
    names = list(expressions)
    trees = [parse_expression(expressions[n]) for n in names]
    for tree in trees:
        _check_supported(tree)
    out = {code: np.empty((len(bars), len(names)), dtype=np.float32) for code, bars in bars_by_code.items()}
    codes = list(bars_by_code)
    for chunk_start in range(0, len(codes), STOCKS_PER_PANEL):
        chunk = codes[chunk_start : chunk_start + STOCKS_PER_PANEL]
        panel, _ = _build_panel({c: bars_by_code[c] for c in chunk}, calendar)
        evaluator = _Evaluator(panel, trees)
        for column, tree in enumerate(trees):
            values = evaluator.value(tree)
            with np.errstate(over="ignore", invalid="ignore"):
                values = np.asarray(values).astype(np.float32)
            values = np.where(np.isinf(values), np.float32(np.nan), values)
            for s, code in enumerate(chunk):
                out[code][:, column] = values[panel.lo[s] : panel.hi[s], s]
    return out


def split_supported(expressions: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(expressions the panel evaluates, expressions for Qlib's engine), reporting each unsupported
    operator once."""
    panel, qlib = {}, {}
    for name, expression in expressions.items():
        try:
            _check_supported(parse_expression(expression))
            panel[name] = expression
        except UnsupportedOperator as exc:
            report_unsupported(exc.operator, expression)
            qlib[name] = expression
    return panel, qlib


def evaluate_expressions(
    family: str,
    bars_by_code: Mapping[str, pd.DataFrame],
    calendar: pd.DatetimeIndex,
    expressions: Mapping[str, str],
) -> FamilyResult:
    """`qlib_engine.evaluate_expressions`' result, computed on a panel where the panel can."""
    from precompute_assets.families.qlib_engine import evaluate_expressions as qlib_evaluate

    names = list(expressions)
    codes = [c for c, bars in bars_by_code.items() if not bars.empty]
    on_panel_codes = [c for c in codes if _contiguous(bars_by_code[c], calendar)]
    panel_exprs, qlib_exprs = split_supported(expressions)
    result = FamilyResult()
    columns: dict[str, dict[str, np.ndarray]] = {c: {} for c in codes}
    if panel_exprs and on_panel_codes:
        values = evaluate_on_panel(panel_exprs, {c: bars_by_code[c] for c in on_panel_codes}, calendar)
        for code, array in values.items():
            columns[code].update(zip(panel_exprs, array.T, strict=True))
    by_qlib = [(qlib_exprs, on_panel_codes), (expressions, [c for c in codes if c not in set(on_panel_codes)])]
    for chosen, chosen_codes in by_qlib:
        if chosen and chosen_codes:
            part = qlib_evaluate(family, {c: bars_by_code[c] for c in chosen_codes}, calendar, chosen)
            result.errors.extend(part.errors)
            for code, frame in part.frames.items():
                columns[code].update({n: frame[n].to_numpy(np.float32) for n in frame.columns})
    for code, found in columns.items():
        if found:
            result.frames[code] = pd.DataFrame(found, index=bars_by_code[code].index).reindex(columns=names)
    return result


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
    from precompute_assets.families.qlib_engine import expression_history

    names = list(expressions)
    codes = [c for c in new_from if c in bars_by_code and not bars_by_code[c].empty]
    first_new = {c: int(bars_by_code[c].index.searchsorted(new_from[c])) for c in codes}
    codes = [c for c in codes if first_new[c] < len(bars_by_code[c])]
    by_need: dict[int, dict[str, str]] = {}
    for name, expression in expressions.items():
        by_need.setdefault(expression_history(expression), {})[name] = expression
    columns: dict[str, dict[str, np.ndarray]] = {c: {} for c in codes}
    result = FamilyResult()
    for need, group in sorted(by_need.items()):
        tails = {c: bars_by_code[c].iloc[max(0, first_new[c] - need + 1) :] for c in codes}
        part = evaluate_expressions(family, tails, calendar, group)
        result.errors.extend(part.errors)
        for code, frame in part.frames.items():
            new_rows = frame.loc[new_from[code] :]
            columns[code].update({n: new_rows[n].to_numpy(np.float32) for n in group})
    for code, found in columns.items():
        if found:
            index = bars_by_code[code].index[first_new[code] :]
            result.frames[code] = pd.DataFrame(found, index=index).reindex(columns=names)
    return result
