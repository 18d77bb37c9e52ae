"""A daily update's technical and price/volume tails: today's frames per stock vs the update path, one run.

    nice .venv/bin/python bench/family_tails.py --data /work/fm_store/parquet --stocks 2500

The first `--stocks` input files are loaded on their calendar, and their last day is the new day.
Each family's appended day is computed twice, on the same bars in the same process:
- frames: each stock's tail cut at the registry's longest history need (as the bars step cuts it),
  every column by its compute on a frame per stock (`compute_family`), as the update step did;
- update: the update step's path (`family_update.compute_family_update`) on the same bars.
Both are checked against a full-history computation of the same stocks (`compute_family`): the new
day's values within one float32 ulp, the NaN pattern identical. Prints wall and CPU seconds (CPU
is the steadier figure on a loaded machine), the ratios and JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAMILIES = ("technical", "fundamental")


def load(data: Path, stocks: int):
    from precompute_assets.input.bars import load_bars, scan_calendar
    from precompute_assets.input.parquet import scan_folder

    files = scan_folder(data).files
    codes = sorted(files)[:stocks]
    files = {c: files[c] for c in codes}
    calendar = scan_calendar(files).dates
    return load_bars(files, codes, calendar).bars, calendar


def ulps_apart(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Largest float32 ulp distance where both are numbers, and the number of NaN-pattern differences."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    both = ~nan_a & ~nan_b
    ulps = np.abs(a[both].view(np.int32).astype(np.int64) - b[both].view(np.int32).astype(np.int64))
    return int(ulps.max(initial=0)), int((nan_a != nan_b).sum())


def last_rows(frames: dict[str, pd.DataFrame], day: pd.Timestamp, columns: list[str]) -> np.ndarray:
    return np.stack([frames[c].reindex(columns=columns).loc[day].to_numpy(np.float64) for c in sorted(frames)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/fm_store/parquet"))
    parser.add_argument("--stocks", type=int, default=2500)
    args = parser.parse_args()

    from precompute_assets.build.family_update import StockUpdate, compute_family_update, tail_start
    from precompute_assets.indicators.catalog import load_registry
    from precompute_assets.indicators.compute import compute_family
    from precompute_assets.indicators.families.base import compute_per_stock
    from precompute_assets.indicators.history import history_need

    started = time.perf_counter()
    bars, calendar = load(args.data, args.stocks)
    day = calendar[-1]
    bars = {c: b for c, b in bars.items() if day in b.index and not b.loc[day].isna().any()}
    print(f"loaded {len(bars)} stocks trading on {day.date()} in {time.perf_counter() - started:.1f}s", flush=True)
    registry = load_registry()
    need = max(history_need(i) for i in registry.all())
    tails = {c: b.iloc[tail_start(b, day, need) :] for c, b in bars.items()}
    load_average = Path("/proc/loadavg").read_text()[:14]
    report: dict[str, object] = {"stocks": len(bars), "tail_rows": need, "load_average": load_average}
    for family in FAMILIES:
        indicators = registry.computed(family)
        names = [i.name for i in indicators]
        cumulative = [i for i in indicators if i.history == "cumulative"]
        carry = {}
        if cumulative:  # the stored state: each cumulative column's last value before the new day
            before = compute_per_stock(
                family, {c: b.loc[: calendar[-2]] for c, b in bars.items()}, cumulative, np.float64
            )
            carry = before.state
        updates = {c: StockUpdate(new_from=day, carry=carry.get(c, {})) for c in bars}

        t0, c0 = time.perf_counter(), time.process_time()
        frames = compute_family(family, tails, calendar).frames
        t1, c1 = time.perf_counter(), time.process_time()
        update = compute_family_update(family, tails, calendar, updates).frames
        t2, c2 = time.perf_counter(), time.process_time()
        full = compute_family(family, bars, calendar).frames
        t3 = time.perf_counter()

        reference = last_rows(full, day, names)
        plain = [n for n in names if n not in {i.name for i in cumulative}]
        checks = {}
        for label, got in (("frames", frames), ("update", update)):
            values = last_rows(got, day, names)
            columns = plain if label == "frames" else names  # frames has no stored state: cumulative columns restart
            per_column = {n: ulps_apart(values[:, names.index(n)], reference[:, names.index(n)]) for n in columns}
            worst = {n: v for n, v in per_column.items() if v != (0, 0)}
            checks[label] = {
                "max_ulps": max(v[0] for v in per_column.values()),
                "nan_differences": sum(v[1] for v in per_column.values()),
                "off_columns": worst,
            }
        report[family] = {
            "frames_seconds": round(t1 - t0, 3),
            "update_seconds": round(t2 - t1, 3),
            "ratio_frames_over_update": round((t1 - t0) / (t2 - t1), 2),
            "frames_cpu_seconds": round(c1 - c0, 3),
            "update_cpu_seconds": round(c2 - c1, 3),
            "cpu_ratio": round((c1 - c0) / (c2 - c1), 2),
            "full_history_seconds": round(t3 - t2, 3),
            "checks": checks,
        }
        print(
            f"{family}: frames per stock {t1 - t0:.2f}s, update path {t2 - t1:.2f}s "
            f"({(t1 - t0) / (t2 - t1):.1f}x; CPU {c1 - c0:.2f}s vs {c2 - c1:.2f}s, {(c1 - c0) / (c2 - c1):.1f}x); "
            f"full history {t3 - t2:.1f}s; "
            f"update max {checks['update']['max_ulps']} ulp, {checks['update']['nan_differences']} NaN differences",
            flush=True,
        )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
