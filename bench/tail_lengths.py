"""How many stored rows each technical and price/volume column needs for an appended day to equal a full rebuild.

    nice .venv/bin/python bench/tail_lengths.py --refdata ../shared/refdata/csi300_daily \
        --synthetic /work/fm_store/parquet --synthetic-stocks 500

For every stock (the real CSI300 series, and the first `--synthetic-stocks` of a synthetic market),
each column is computed once on the stock's whole history, as a build does. Then, at `--ends` days
spread over the part of its history with at least the longest candidate before them, the same
column is computed on a tail of L stored valid rows plus the day, for each candidate L, all stocks
and days in one panel (`panel_tails`' way). A column's measured need is the smallest L from which on
every candidate gives the day's float32 value within one ulp of the full history's (or differs by
rounding residue, `RESIDUE`), NaN where it is NaN, on both markets. Prints a table: the need per
market, the registered `history_need`, the largest ulp distance there and its residue cases; and JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CANDIDATES = (20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400, 450, 500, 600, 800, 900, 1000, 1360)


def valid_bars(folder: Path, limit: int | None) -> dict[str, np.ndarray]:
    """Each stock's valid rows of the required fields, as a (rows, 5) float64 array."""
    from precompute_assets.indicators.families.base import REQUIRED

    out = {}
    for path in sorted(folder.glob("*.parquet"))[:limit]:
        frame = pd.read_parquet(path, columns=["date", *REQUIRED]).sort_values("date")
        values = frame[list(REQUIRED)].to_numpy(np.float64)
        values = values[~np.isnan(values).any(axis=1)]
        if len(values) > max(CANDIDATES) + 50:
            out[path.stem] = values
    return out


RESIDUE = 1e-12
"""A difference below this share of the column's median magnitude is float64 rounding residue: where
the true value is 0 (a close at its 14-day low, a close equal to its mean), the full history's own
running-sum residue decides the sign and size of a near-zero float, and no tail length reproduces it."""


def ulps(tail: np.ndarray, full: np.ndarray) -> tuple[int, int, int]:
    """Largest float32 ulp distance outside residue, NaN-pattern differences, and residue cases."""
    a, b = tail.astype(np.float32), full.astype(np.float32)
    a[np.isinf(a)], b[np.isinf(b)] = np.nan, np.nan
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    both = ~nan_a & ~nan_b
    distance = np.abs(a[both].view(np.int32).astype(np.int64) - b[both].view(np.int32).astype(np.int64))
    scale = np.nanmedian(np.abs(full[both])) if both.any() else 0.0
    residue = (np.abs(tail[both] - full[both]) <= RESIDUE * scale) & (distance > 1)
    return int(distance[~residue].max(initial=0)), int((nan_a != nan_b).sum()), int(residue.sum())


def measure(stocks: dict[str, np.ndarray], indicators, ends: int) -> dict[str, dict[int, tuple[int, int, int]]]:
    """Per column and candidate L, over every stock and end day: (largest ulp distance outside residue,
    NaN differences, residue cases)."""
    from precompute_assets.indicators.families.base import REQUIRED, Output

    def run(compute, bars):
        if isinstance(compute, Output):
            return np.asarray(compute.fn(bars)[compute.index], dtype=np.float64)
        return np.asarray(compute(bars), dtype=np.float64)

    picks = {}
    for code, values in stocks.items():
        first = max(CANDIDATES)
        picks[code] = np.linspace(first, len(values) - 1, ends).astype(int)
    result: dict[str, dict[int, tuple[int, int, int]]] = {}
    for indicator in indicators:
        reference = []
        for code, values in stocks.items():
            frame = pd.DataFrame(values, columns=list(REQUIRED))
            reference.append(run(indicator.compute, frame)[picks[code]])
        reference = np.concatenate(reference)
        result[indicator.name] = {}
        for length in CANDIDATES:
            columns = [values[end - length : end + 1] for code, values in stocks.items() for end in picks[code]]
            block = np.stack(columns, axis=2)  # rows, fields, columns
            panel = {name: np.asfortranarray(block[:, i, :]) for i, name in enumerate(REQUIRED)}
            tail = run(indicator.compute, panel)[-1]
            result[indicator.name][length] = ulps(tail, reference)
    return result


def needed(per_length: dict[int, tuple[int, int, int]]) -> int | None:
    """The smallest candidate from which on every longer one is within one ulp (or residue), same NaNs."""
    need = None
    for length in sorted(per_length, reverse=True):
        distance, nan_differences, _ = per_length[length]
        if distance > 1 or nan_differences:
            break
        need = length
    return need


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refdata", type=Path, default=ROOT.parent / "shared" / "refdata" / "csi300_daily")
    parser.add_argument("--synthetic", type=Path, default=Path("/work/fm_store/parquet"))
    parser.add_argument("--synthetic-stocks", type=int, default=500)
    parser.add_argument("--ends", type=int, default=8, help="end days per stock")
    parser.add_argument("--families", nargs="+", default=["technical", "fundamental"])
    args = parser.parse_args()

    from precompute_assets.indicators.catalog import load_registry
    from precompute_assets.indicators.families.base import takes_panels
    from precompute_assets.indicators.history import history_need

    registry = load_registry()
    indicators = [
        i
        for family in args.families
        for i in registry.computed(family)
        if takes_panels(i.compute) and i.history != "cumulative"
    ]
    markets = {
        "csi300": valid_bars(args.refdata, None),
        "synthetic": valid_bars(args.synthetic, args.synthetic_stocks),
    }
    measured = {market: measure(stocks, indicators, args.ends) for market, stocks in markets.items()}
    report = {"stocks": {m: len(s) for m, s in markets.items()}, "ends": args.ends, "columns": {}}
    print(
        f"{'column':24} {'history':10} {'csi300':>7} {'synth':>7} {'registered':>10} {'ulps there':>10} {'residue':>8}"
    )
    for indicator in indicators:
        per_market = {m: needed(measured[m][indicator.name]) for m in markets}
        registered = history_need(indicator)
        at_registered = {
            m: measured[m][indicator.name].get(registered) for m in markets if registered in measured[m][indicator.name]
        }
        report["columns"][indicator.name] = {
            "history": indicator.history,
            "measured": per_market,
            "registered": registered,
            "at_registered": at_registered,
            "per_length": {m: {str(k): v for k, v in measured[m][indicator.name].items()} for m in markets},
        }
        print(
            f"{indicator.name:24} {indicator.history:10} {per_market['csi300']!s:>7} {per_market['synthetic']!s:>7} "
            f"{registered:>10} {max((v[0] for v in at_registered.values()), default='-')!s:>10} "
            f"{sum(v[2] for v in at_registered.values()) if at_registered else '-'!s:>8}",
            flush=True,
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
