"""Synthetic A-share market: per-stock parquet files shaped like a vendor's daily bars.

The project ships no real market data, so the sample input, the tests and the scale runs all come from
this generator. It is plain Python (no Dagster) so a notebook or a script can call it, and it aims to
exercise what real data does to the pipeline: holiday gaps in the calendar, volatility clusters, price
limits, suspended days, mid-way listings, adjustment-factor steps, an optional `amount` column and
file stems in several spellings.

Conventions (Qlib's): raw prices move in whole fen (0.01 CNY) within +-10% of the reference price
(the previous close, or the ex-right price on an ex-date); stored prices are back-adjusted,
`price = raw * factor`, and the stored volume is `raw_volume / factor`, so `amount / volume` is the
adjusted VWAP, comparable with the adjusted prices. `amount` is raw CNY. The +-10% limit is applied to
every board (a simplification: BJ really has +-30%).
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import lfilter

# Gregorian date of the Lunar New Year; the Spring Festival closure is the eve plus the next 6 days.
_LUNAR_NEW_YEAR = {
    2000: (2, 5),
    2001: (1, 24),
    2002: (2, 12),
    2003: (2, 1),
    2004: (1, 22),
    2005: (2, 9),
    2006: (1, 29),
    2007: (2, 18),
    2008: (2, 7),
    2009: (1, 26),
    2010: (2, 14),
    2011: (2, 3),
    2012: (1, 23),
    2013: (2, 10),
    2014: (1, 31),
    2015: (2, 19),
    2016: (2, 8),
    2017: (1, 28),
    2018: (2, 16),
    2019: (2, 5),
    2020: (1, 25),
    2021: (2, 12),
    2022: (2, 1),
    2023: (1, 22),
    2024: (2, 10),
    2025: (1, 29),
    2026: (2, 17),
    2027: (2, 6),
    2028: (1, 26),
    2029: (2, 13),
    2030: (2, 3),
    2031: (1, 23),
    2032: (2, 11),
    2033: (1, 31),
    2034: (2, 19),
    2035: (2, 8),
}
_FALLBACK_NEW_YEAR = (2, 5)  # outside the table: a fixed, plausible window

PRICE_LIMIT = 0.10
COLUMNS = ("date", "open", "high", "low", "close", "volume", "factor")
_ALT_STEMS = {  # a few stems in other common spellings, so the reader's normalisation is exercised
    "SH600000": "600000.SH",
    "SH600002": "600002_SH",
    "SH600003": "sh600003",
    "SZ000001": "000001.SZ",
    "BJ830001": "830001_BJ",
}


def _holidays(year: int) -> set[date]:
    """Approximate mainland exchange closures of one year (deterministic, no lunar maths)."""
    month, day = _LUNAR_NEW_YEAR.get(year, _FALLBACK_NEW_YEAR)
    spring = date(year, month, day)
    days = {date(year, 1, 1)}
    days |= {spring + timedelta(days=k) for k in range(-1, 6)}
    days |= {date(year, 4, 4), date(year, 4, 5)}  # Qingming
    days |= {date(year, 5, d) for d in range(1, 6)}  # Labour Day
    days.add(date(year, 6, 3))  # Dragon Boat, pinned to one early-June day
    days.add(date(year, 9, 15))  # Mid-Autumn, pinned to one mid-September day
    days |= {date(year, 10, d) for d in range(1, 8)}  # National Day (and Mid-Autumn folded in)
    return days


def trading_days(start: str, end: str) -> pd.DatetimeIndex:
    """Weekdays between `start` and `end` (inclusive) minus approximate Chinese holidays: ~242 a year."""
    days = pd.bdate_range(start, end)
    closed: set[date] = set()
    for year in range(days.year.min(), days.year.max() + 1) if len(days) else ():
        closed |= _holidays(year)
    keep = np.fromiter((d.date() not in closed for d in days), dtype=bool, count=len(days))
    return pd.DatetimeIndex(days[keep], name="date")


def _close_path(
    p0_fen: int,
    shocks: list[float],
    market: list[float],
    beta: float,
    suspended: list[bool],
    event_ratio: dict[int, float],
    garch: tuple[float, float, float],
    drift: float,
    pull: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw closes in fen, the reference (limit base) price of each day, and the daily volatility.

    The loop is sequential by nature: GARCH(1,1) variance feeds on the realised (limit-clipped) return,
    and the limits depend on the previous close. It runs on Python floats/ints, which is faster than
    numpy scalars for this kind of recurrence (a few ms per stock-decade). `pull` draws the raw log
    price slowly back to the listing price, a stand-in for the splits and delistings that keep real
    prices from melting to one fen (where the limits would freeze them) or soaring without bound.
    """
    omega, alpha, beta_g = garch
    exp, log, sqrt = math.exp, math.log, math.sqrt
    n = len(shocks)
    close = [0] * n
    ref = [0] * n
    vol = [0.0] * n
    var = omega / (1.0 - alpha - beta_g)
    prev = p0_fen
    anchor = log(p0_fen)
    for t in range(n):
        sigma = sqrt(var)
        vol[t] = sigma
        if suspended[t]:
            close[t] = ref[t] = prev
            var = omega + (alpha + beta_g) * var  # no news: variance drifts to its long-run level
            continue
        base = prev
        ratio = event_ratio.get(t)
        if ratio is not None:  # ex-date: the limit base is the ex-right price
            base = max(1, round(prev * ratio))
        market_move = beta * market[t]
        expected = drift + market_move + pull * (anchor - log(base))
        c = round(base * exp(expected + sigma * shocks[t]))
        up = (base * 11) // 10  # floor(1.1 * base): never above +10%
        if c > up:
            c = up
        else:
            down = -((-base * 9) // 10)  # ceil(0.9 * base) >= 1: never below -10%
            c = max(c, down)
        surprise = log(c / base) - expected
        var = omega + alpha * surprise * surprise + beta_g * var
        close[t] = c
        ref[t] = base
        prev = c
    return np.asarray(close, dtype=np.int64), np.asarray(ref, dtype=np.int64), np.asarray(vol)


def _suspensions(n: int, rng: np.random.Generator, rate: float) -> np.ndarray:
    """Suspended stretches: a start with probability `rate` per day, a geometric length (mean ~5 days)."""
    mask = np.zeros(n, dtype=bool)
    starts = np.flatnonzero(rng.random(n) < rate)
    lengths = rng.geometric(0.2, size=len(starts))
    for s, length in zip(starts, lengths, strict=True):
        mask[max(s, 1) : s + length] = True  # the first listed day always trades
    return mask


def generate_stock(
    code: str,
    days: pd.DatetimeIndex,
    rng: np.random.Generator,
    *,
    with_amount: bool = False,
    suspension_rate: float = 0.003,
    market_returns: np.ndarray | None = None,
) -> pd.DataFrame:
    """One stock's daily bars over `days` (its listed life), deterministic for the generator's state.

    `suspension_rate` is the daily probability that a suspension starts; `market_returns` (aligned
    with `days`) adds a common factor so stocks co-move as in a real market. `code` only labels the
    frame (`attrs["code"]`); the numbers depend on `rng` alone.
    """
    n = len(days)
    p0 = round(100 * math.exp(rng.uniform(math.log(4.0), math.log(60.0))))
    long_run_vol = rng.uniform(0.012, 0.028)
    alpha, beta_g = rng.uniform(0.05, 0.12), rng.uniform(0.80, 0.86)  # persistence alpha + beta <= 0.98
    omega = long_run_vol**2 * (1.0 - alpha - beta_g)
    beta = rng.uniform(0.6, 1.3)
    drift = rng.normal(0.0001, 0.0002)  # daily log drift
    shocks = rng.standard_t(5, size=n) / math.sqrt(5.0 / 3.0)  # fat tails, unit variance
    market = np.zeros(n) if market_returns is None else np.asarray(market_returns, dtype=float)
    suspended = _suspensions(n, rng, suspension_rate)

    # Dividends and splits: about one event every two years, on trading days only.
    event_days = np.flatnonzero((rng.random(n) < 1 / 500) & ~suspended)
    event_days = event_days[event_days > 0]
    ratios: dict[int, float] = {}
    for t in event_days.tolist():
        cash = rng.uniform(0.005, 0.04)  # cash dividend as a share of the price
        bonus = rng.choice([0.2, 0.3, 0.5, 1.0]) if rng.random() < 0.2 else 0.0  # bonus shares per share
        ratios[t] = (1.0 - cash) / (1.0 + bonus)

    close, ref, sigma = _close_path(
        p0,
        shocks.tolist(),
        market.tolist(),
        beta,
        suspended.tolist(),
        ratios,
        (omega, alpha, beta_g),
        drift,
        pull=0.0007,
    )
    up = (ref * 11) // 10
    down = -((-ref * 9) // 10)

    # Open: an overnight gap from the reference price; high/low: wicks beyond the open-close body.
    gap = rng.normal(0.0, 0.35, n) * sigma
    open_ = np.clip(np.rint(ref * np.exp(gap)).astype(np.int64), down, up)
    body_hi, body_lo = np.maximum(open_, close), np.minimum(open_, close)
    wick_hi = np.abs(rng.normal(0.0, 0.6, n)) * sigma
    wick_lo = np.abs(rng.normal(0.0, 0.6, n)) * sigma
    high = np.clip(np.rint(body_hi * np.exp(wick_hi)).astype(np.int64), body_hi, up)
    low = np.clip(np.rint(body_lo * np.exp(-wick_lo)).astype(np.int64), np.maximum(down, 1), body_lo)
    open_[suspended] = high[suspended] = low[suspended] = close[suspended]

    # Volume: a slow AR(1) activity level plus a response to the size of the day's move.
    level = lfilter([1.0], [1.0, -0.95], rng.normal(0.0, 0.08, n))
    log_ret = np.log(close / ref.astype(float))
    base_volume = math.exp(rng.uniform(math.log(2e5), math.log(5e7)) - math.log(p0 / 1000))
    raw_volume = base_volume * np.exp(level + 15.0 * np.abs(log_ret) + rng.normal(0.0, 0.25, n))
    raw_volume = np.maximum(100.0, np.round(raw_volume / 100.0) * 100.0)  # whole lots
    raw_volume[suspended] = 0.0

    # Adjustment factor: a step of prev_close / ex_right_price on each ex-date keeps adjusted prices continuous.
    prev_close = np.concatenate(([close[0]], close[:-1])).astype(float)
    step = np.where(ref != prev_close, prev_close / ref, 1.0)
    step[0] = 1.0
    factor = np.cumprod(step)

    frame = pd.DataFrame(
        {
            "date": days.values.astype("datetime64[ns]"),
            "open": open_ / 100.0 * factor,
            "high": high / 100.0 * factor,
            "low": low / 100.0 * factor,
            "close": close / 100.0 * factor,
            "volume": raw_volume / factor,
            "factor": factor,
        }
    )
    if with_amount:
        weight = rng.beta(3.0, 3.0, n)  # VWAP somewhere between low and high, mostly near the middle
        vwap = (low + (high - low) * weight) / 100.0
        frame["amount"] = np.round(vwap * raw_volume, 2)
    frame.attrs["code"] = code
    return frame


def _market_returns(n: int, rng: np.random.Generator) -> np.ndarray:
    """A common GARCH-ish market factor: an index's daily log returns."""
    shocks = rng.standard_t(6, size=n) / math.sqrt(6.0 / 4.0)
    omega, alpha, beta_g = 0.011**2 * 0.04, 0.07, 0.89
    drift = 0.0003  # ~7% a year, before the volatility drag
    var, out = omega / (1 - alpha - beta_g), np.empty(n)
    for t, z in enumerate(shocks.tolist()):
        shock = math.sqrt(var) * z
        out[t] = drift + shock
        var = omega + alpha * shock * shock + beta_g * var
    return np.clip(out, -0.08, 0.08)


def stock_codes(n_stocks: int) -> list[str]:
    """Canonical codes: mostly SH 600xxx and SZ 000xxx, a few BJ 83xxxx (only when there are >= 8 stocks)."""
    n_bj = 0 if n_stocks < 8 else min(max(2, n_stocks // 50), n_stocks // 4)
    n_sz = (n_stocks - n_bj) * 2 // 5
    n_sh = n_stocks - n_bj - n_sz
    return (
        [f"SH{600000 + i:06d}" for i in range(n_sh)]
        + [f"SZ{1 + i:06d}" for i in range(n_sz)]
        + [f"BJ{830001 + i:06d}" for i in range(n_bj)]
    )


def file_stem(code: str) -> str:
    """The file stem used for `code`: canonical, except a few fixed alternative spellings."""
    return _ALT_STEMS.get(code, code)


def _to_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table with `date` as timestamp and every other column float64, without a pandas index."""
    arrays = [pa.array(frame["date"].values)] + [pa.array(frame[c].to_numpy(np.float64)) for c in frame.columns[1:]]
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def generate_market(
    out_dir: Path,
    n_stocks: int,
    start: str,
    end: str,
    seed: int = 7,
    *,
    listed_midway: int = 1,
    with_amount: int = 1,
) -> list[Path]:
    """Write one `<stem>.parquet` per stock into `out_dir`; deterministic for `seed`.

    Each stock draws from its own child seed (stock i is the same whatever `n_stocks` is), one stock
    at a time, so memory stays flat and 5,000 stocks x 10 years take well under a minute.
    `listed_midway` stocks start between a quarter and three quarters of the way through the period
    and `with_amount` other stocks carry an `amount` column.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    days = trading_days(start, end)
    n_days = len(days)
    root = np.random.SeedSequence(seed)
    market_seed, pick_seed, stock_root = root.spawn(3)
    market = _market_returns(n_days, np.random.default_rng(market_seed))
    order = np.random.default_rng(pick_seed).permutation(n_stocks)
    midway = set(order[:listed_midway].tolist())
    amount = set(order[listed_midway : listed_midway + with_amount].tolist())
    stock_seeds = stock_root.spawn(n_stocks)

    paths = []
    for i, code in enumerate(stock_codes(n_stocks)):
        rng = np.random.default_rng(stock_seeds[i])
        first = int(rng.integers(n_days // 4, max(n_days // 4 + 1, 3 * n_days // 4))) if i in midway else 0
        frame = generate_stock(code, days[first:], rng, with_amount=i in amount, market_returns=market[first:])
        path = out_dir / f"{file_stem(code)}.parquet"
        pq.write_table(_to_table(frame), path, compression="zstd", compression_level=9)
        paths.append(path)
    return paths
