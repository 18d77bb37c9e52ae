"""Qlib's rolling operators on a (dates, stocks) panel, one numba loop over every stock at once.

Each kernel is a transcription of the code Qlib 0.9.7 runs for one stock's series, applied to column
`s` of the panel over rows `lo[s] .. hi[s] - 1` as if that were the whole series (Qlib loads a stock
from the first row of its bin, so the online sums start there); rows outside are NaN. The kernels that
scan each row's window on its own take a `first` row too: the rows before it, which no consumer
reads, stay NaN. Sources:
- pandas 2.3 `_libs/window/aggregations.pyx` (`roll_sum`, `roll_mean`, `roll_var`, `roll_max_min`,
  `roll_quantile`, `roll_rank`) with its fixed-window bounds for `rolling(N, min_periods=1)`:
  window [max(0, i - N + 1), i + 1), a full state reset whenever a window shares no row with the
  previous one (N = 1), Kahan-compensated adds and removes, and the consecutive-equal-values counter
  that makes a constant window's sum/mean exact and its variance 0;
- `roll_apply`'s rule for IdxMax/IdxMin (the lambda only where the window has a finite value, NaN
  otherwise; numpy's argmax returns the first NaN when there is one);
- Qlib's Cython `rolling_slope/rsquare/resi` (`qlib/data/_libs/rolling.pyx`): a deque of N values
  seeded with NaN, incremental index sums, no NaN/inf conversion of the input.
pandas converts inputs to float64 with infinities as NaN (`_prep_values`) before its kernels; the
callers (`panel_engine`) do that, the Qlib Cython kernels get the raw values as float64.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"nopython": True, "nogil": True, "cache": True, "error_model": "numpy"}  # x / 0 as C and numpy do


@numba.jit(**_JIT)
def _nan_panel(shape: tuple[int, int]) -> np.ndarray:
    out = np.empty(shape, dtype=np.float64).T.copy().T  # Fortran order: a stock's rows are contiguous
    out[:] = np.nan
    return out


@numba.jit(**_JIT)
def roll_sum(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, minp: int) -> np.ndarray:
    """pandas `roll_sum` (Kahan, consecutive-equal counter) on each column's rows lo..hi-1."""
    out = _nan_panel(x.shape)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        nobs = 0
        sum_x = comp_add = comp_rem = 0.0
        prev = np.nan
        same = 0
        prev_end = 0
        for i in range(b - a):
            st, en = max(0, i - n + 1), i + 1
            if i == 0 or st >= prev_end:
                prev = x[a + st, s]
                same = 0
                sum_x = comp_add = comp_rem = 0.0
                nobs = 0
                for j in range(st, en):
                    v = x[a + j, s]
                    if v == v:
                        nobs += 1
                        y = v - comp_add
                        t = sum_x + y
                        comp_add = t - sum_x - y
                        sum_x = t
                        if v == prev:
                            same += 1
                        else:
                            same = 1
                        prev = v
            else:
                for j in range(max(0, i - n), st):
                    v = x[a + j, s]
                    if v == v:
                        nobs -= 1
                        y = -v - comp_rem
                        t = sum_x + y
                        comp_rem = t - sum_x - y
                        sum_x = t
                for j in range(prev_end, en):
                    v = x[a + j, s]
                    if v == v:
                        nobs += 1
                        y = v - comp_add
                        t = sum_x + y
                        comp_add = t - sum_x - y
                        sum_x = t
                        if v == prev:
                            same += 1
                        else:
                            same = 1
                        prev = v
            prev_end = en
            if nobs == 0 and minp == 0:
                out[a + i, s] = 0.0
            elif nobs >= minp:
                out[a + i, s] = prev * nobs if same >= nobs else sum_x
    return out


@numba.jit(**_JIT)
def roll_mean(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, minp: int) -> np.ndarray:
    """pandas `roll_mean`: Kahan sums, the sign clamp by `neg_ct`, a constant window's exact value."""
    out = _nan_panel(x.shape)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        nobs = neg = 0
        sum_x = comp_add = comp_rem = 0.0
        prev = np.nan
        same = 0
        prev_end = 0
        for i in range(b - a):
            st, en = max(0, i - n + 1), i + 1
            if i == 0 or st >= prev_end:
                comp_add = comp_rem = sum_x = 0.0
                nobs = neg = 0
                prev = x[a + st, s]
                same = 0
                for j in range(st, en):
                    v = x[a + j, s]
                    if v == v:
                        nobs += 1
                        y = v - comp_add
                        t = sum_x + y
                        comp_add = t - sum_x - y
                        sum_x = t
                        if np.signbit(v):
                            neg += 1
                        if v == prev:
                            same += 1
                        else:
                            same = 1
                        prev = v
            else:
                for j in range(max(0, i - n), st):
                    v = x[a + j, s]
                    if v == v:
                        nobs -= 1
                        y = -v - comp_rem
                        t = sum_x + y
                        comp_rem = t - sum_x - y
                        sum_x = t
                        if np.signbit(v):
                            neg -= 1
                for j in range(prev_end, en):
                    v = x[a + j, s]
                    if v == v:
                        nobs += 1
                        y = v - comp_add
                        t = sum_x + y
                        comp_add = t - sum_x - y
                        sum_x = t
                        if np.signbit(v):
                            neg += 1
                        if v == prev:
                            same += 1
                        else:
                            same = 1
                        prev = v
            prev_end = en
            if nobs >= minp and nobs > 0:
                r = sum_x / nobs
                if same >= nobs:
                    r = prev
                elif neg == 0 and r < 0:  # noqa: SIM114 - pandas' calc_mean, branch for branch
                    r = 0.0
                elif neg == nobs and r > 0:
                    r = 0.0
                out[a + i, s] = r
    return out


@numba.jit(**_JIT)
def roll_var(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, minp: int, ddof: int) -> np.ndarray:
    """pandas `roll_var`: Welford with Kahan compensation; 0 for one value or a constant window."""
    out = _nan_panel(x.shape)
    minp = max(minp, 1)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        mean_x = ssqdm = nobs = comp_add = comp_rem = 0.0
        prev = np.nan
        same = 0
        prev_end = 0
        for i in range(b - a):
            st, en = max(0, i - n + 1), i + 1
            if i == 0 or st >= prev_end:
                prev = x[a + st, s]
                same = 0
                mean_x = ssqdm = nobs = comp_add = comp_rem = 0.0
                lo_add = st
            else:
                for j in range(max(0, i - n), st):
                    v = x[a + j, s]
                    if v == v:
                        nobs -= 1
                        if nobs:
                            prev_mean = mean_x - comp_rem
                            y = v - comp_rem
                            t = y - mean_x
                            comp_rem = t + mean_x - y
                            mean_x = mean_x - t / nobs
                            ssqdm = ssqdm - (v - prev_mean) * (v - mean_x)
                        else:
                            mean_x = 0.0
                            ssqdm = 0.0
                lo_add = prev_end
            for j in range(lo_add, en):
                v = x[a + j, s]
                if v != v:
                    continue
                nobs += 1
                if v == prev:
                    same += 1
                else:
                    same = 1
                prev = v
                prev_mean = mean_x - comp_add
                y = v - comp_add
                t = y - mean_x
                comp_add = t + mean_x - y
                if nobs:  # noqa: SIM108 - pandas' add_var, line for line
                    mean_x = mean_x + t / nobs
                else:
                    mean_x = 0.0
                ssqdm = ssqdm + (v - prev_mean) * (v - mean_x)
            prev_end = en
            if nobs >= minp and nobs > ddof:
                if nobs == 1 or same >= nobs:
                    out[a + i, s] = 0.0
                else:
                    out[a + i, s] = ssqdm / (nobs - ddof)
    return out


@numba.jit(**_JIT)
def roll_extreme(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, minp: int, largest: bool, first: int
) -> np.ndarray:
    """pandas `roll_max`/`roll_min`: the extreme of the window's non-NaN values (of equal ones the
    latest, as pandas' deque keeps it), NaN below `minp` values; rows from `first` on (each row's
    window is scanned on its own)."""
    out = _nan_panel(x.shape)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        for i in range(max(0, first - a), b - a):
            nobs = 0
            best = np.nan
            for j in range(max(0, i - n + 1), i + 1):
                v = x[a + j, s]
                if v == v:
                    nobs += 1
                    if nobs == 1 or (v >= best if largest else v <= best):
                        best = v
            if nobs >= minp and nobs > 0:
                out[a + i, s] = best
    return out


@numba.jit(**_JIT)
def roll_quantile(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, minp: int, q: float, first: int) -> np.ndarray:
    """pandas `roll_quantile`, linear interpolation, on the window's non-NaN values kept sorted (as
    pandas' skiplist keeps them) by insertion and removal; rows from `first` on, the window seeded
    with the rows before it by the same insertions (equal values stay in the order they came)."""
    out = _nan_panel(x.shape)
    w = np.empty(max(n, 1), dtype=np.float64)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        nobs = 0
        seed = max(0, max(0, first - a) - n)
        for i in range(seed, b - a):
            if i - n >= seed:
                old = x[a + i - n, s]
                if old == old:
                    k = 0
                    while w[k] != old:
                        k += 1
                    for m in range(k, nobs - 1):
                        w[m] = w[m + 1]
                    nobs -= 1
            v = x[a + i, s]
            if v == v:
                k = nobs
                while k > 0 and w[k - 1] > v:
                    w[k] = w[k - 1]
                    k -= 1
                w[k] = v
                nobs += 1
            if nobs < minp or nobs == 0 or a + i < first:
                continue
            if nobs == 1:
                out[a + i, s] = w[0]
                continue
            frac = q * (nobs - 1)
            k = int(frac)
            if frac == k:
                out[a + i, s] = w[k]
            else:
                out[a + i, s] = w[k] + (w[k + 1] - w[k]) * (frac - k)
    return out


@numba.jit(**_JIT)
def roll_rank_pct(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, minp: int, first: int) -> np.ndarray:
    """pandas `roll_rank(percentile=True, method="average")`: the average rank of the row's own value
    among the window's non-NaN values, over their count; NaN where the row's value is NaN; rows from
    `first` on."""
    out = _nan_panel(x.shape)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        for i in range(max(0, first - a), b - a):
            val = x[a + i, s]
            nobs = below = equal = 0
            for j in range(max(0, i - n + 1), i + 1):
                v = x[a + j, s]
                if v == v:
                    nobs += 1
                    if v < val:
                        below += 1
                    elif v == val:
                        equal += 1
            if nobs < minp or val != val:
                continue
            rank = float(below + equal)
            rank_min = float(below + 1)
            rank = ((rank * (rank + 1) / 2) - ((rank_min - 1) * rank_min / 2)) / (rank - rank_min + 1)
            out[a + i, s] = rank / nobs
    return out


@numba.jit(**_JIT)
def roll_count(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, first: int) -> np.ndarray:
    """pandas `rolling.count()` with min_periods=1: the window's non-NaN values (infinities count);
    rows from `first` on."""
    out = _nan_panel(x.shape)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        for i in range(max(0, first - a), b - a):
            c = 0
            for j in range(max(0, i - n + 1), i + 1):
                if x[a + j, s] == x[a + j, s]:
                    c += 1
            out[a + i, s] = c
    return out


@numba.jit(**_JIT)
def roll_arg_extreme(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, largest: bool, first: int) -> np.ndarray:
    """Qlib's IdxMax/IdxMin: `rolling(N, min_periods=1).apply(lambda x: x.argmax() + 1, raw=True)`,
    with numpy's argmax (the first NaN wins, else the first extreme) where the window has a finite
    value; rows from `first` on."""
    out = _nan_panel(x.shape)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        for i in range(max(0, first - a), b - a):
            st = max(0, i - n + 1)
            finite = False
            first_nan = -1
            pos = -1
            best = 0.0
            for j in range(st, i + 1):
                v = x[a + j, s]
                if v != v:
                    if first_nan < 0:
                        first_nan = j - st
                else:
                    finite = True
                    if pos < 0 or (v > best if largest else v < best):
                        pos, best = j - st, v
            if finite:
                out[a + i, s] = (first_nan if first_nan >= 0 else pos) + 1.0
    return out


@numba.jit(**_JIT)
def qlib_regression(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, window: int, kind: int) -> np.ndarray:
    """Qlib's Cython `rolling_slope` (kind 0), `rolling_rsquare` (1), `rolling_resi` (2), verbatim."""
    out = _nan_panel(x.shape)
    barv = np.empty(window, dtype=np.float64)
    for s in range(x.shape[1]):
        a, b = lo[s], hi[s]
        barv[:] = np.nan
        head = 0  # barv is a ring buffer: barv[head] is the deque's front
        na_count = window
        i_sum = x_sum = x2_sum = y_sum = y2_sum = xy_sum = 0.0
        for r in range(a, b):
            val = x[r, s]
            xy_sum = xy_sum - y_sum
            x2_sum = x2_sum + i_sum - 2 * x_sum
            x_sum = x_sum - i_sum
            front = barv[head]
            if not np.isnan(front):
                i_sum -= 1
                y_sum -= front
                y2_sum -= front * front
            else:
                na_count -= 1
            barv[head] = val
            head = (head + 1) % window
            if np.isnan(val):
                na_count += 1
            else:
                i_sum += 1
                x_sum += window
                x2_sum += window * window
                y_sum += val
                y2_sum += val * val
                xy_sum += window * val
            nn = window - na_count
            if kind == 0:
                out[r, s] = (nn * xy_sum - x_sum * y_sum) / (nn * x2_sum - x_sum * x_sum)
            elif kind == 1:
                rv = (nn * xy_sum - x_sum * y_sum) / np.sqrt(
                    (nn * x2_sum - x_sum * x_sum) * (nn * y2_sum - y_sum * y_sum)
                )
                out[r, s] = rv * rv
            else:
                slope = (nn * xy_sum - x_sum * y_sum) / (nn * x2_sum - x_sum * x_sum)
                x_mean = x_sum / nn
                y_mean = y_sum / nn
                interp = y_mean - slope * x_mean
                out[r, s] = val - (slope * window + interp)
    return out
