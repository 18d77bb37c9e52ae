"""A daily update's four family steps (`pipeline.build_family`) in process, bucket by bucket, as a run calls them.

    nice .venv/bin/python bench/family_steps.py --workdir DIR --new-day   # give every stock one more day, plan it
    nice .venv/bin/python bench/family_steps.py --workdir DIR             # time again on the same plans (A/B)

DIR holds a built store and its input as `bench/full_market.py --workdir` leaves them (parquet/,
qlib_data/). `--new-day` gives every input file one more day (`full_market.add_next_day`), then
runs the calendar and bars steps for every bucket: the bars and plans a daily update's family steps
read, left in the store's work folder (the store itself gets only the new working calendar). Each
family's step then runs over every bucket `--repeats` times, in the order of a run, and the best
pass is reported: CPU seconds (the steadier figure on a shared machine) and wall seconds, and a
least-squares split of a bucket's CPU into a fixed part and a part per stock (what grows with the
market: buckets are fixed at 64). Run from two trees on the same DIR to compare code; Dagster's
own cost per step (events, materializations) is not in these figures (`full_market.py` has it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.full_market import add_next_day  # noqa: E402
from precompute_assets.build import intermediates, pipeline  # noqa: E402
from precompute_assets.build.buckets import bucket_keys  # noqa: E402
from precompute_assets.indicators.catalog import load_registry  # noqa: E402
from precompute_assets.indicators.registry import FAMILIES  # noqa: E402
from precompute_assets.settings import Settings  # noqa: E402


def plan_new_day(settings: Settings) -> str:
    """One more day in every input file, and the calendar and bars steps for every bucket."""
    day = add_next_day(settings.parquet_data_path)
    pipeline.build_calendar(settings)
    for bucket in bucket_keys(settings.batches):
        pipeline.build_bars(settings, bucket)
    return day


def time_family(settings: Settings, family: str, repeats: int) -> dict[str, float]:
    """The best of `repeats` passes over every bucket, and the fixed / per-stock split of a bucket's CPU."""
    buckets = bucket_keys(settings.batches)
    stocks = [len(pipeline._plans(intermediates.bucket_dir(settings.work_path, b))) for b in buckets]
    pipeline.build_family(settings, buckets[0], family)  # first use in the process: numba's cache, Qlib's parser
    best: dict[str, float] = {}
    samples_stocks, samples_ms = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for bucket, n in zip(buckets, stocks, strict=True):
            started = time.process_time()
            pipeline.build_family(settings, bucket, family)
            samples_stocks.append(n)
            samples_ms.append((time.process_time() - started) * 1000)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if not best or cpu < best["cpu_seconds"]:
            best = {"cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3)}
    design = np.column_stack([np.ones(len(samples_stocks)), samples_stocks])
    (fixed, per_stock), *_ = np.linalg.lstsq(design, np.array(samples_ms), rcond=None)
    best.update(
        {
            "buckets": len(buckets),
            "stocks": sum(stocks),
            "cpu_ms_per_bucket": round(best["cpu_seconds"] * 1000 / len(buckets), 2),
            "fit_fixed_ms_per_bucket": round(float(fixed), 2),
            "fit_ms_per_stock": round(float(per_stock), 3),
        }
    )
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a built store's parquet/ and qlib_data/")
    parser.add_argument("--new-day", action="store_true", help="add a day to the input and plan it first")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings(args.workdir / "parquet", args.workdir / "qlib_data", args.batches)
    load_registry()
    results: dict[str, object] = {"tree": str(ROOT), "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    if args.new_day:
        started = time.perf_counter()
        results["new_day"] = plan_new_day(settings)
        results["plan_seconds"] = round(time.perf_counter() - started, 1)
    for family in args.families.split(","):
        results[family] = found = time_family(settings, family, args.repeats)
        print(
            f"{family:12s} CPU {found['cpu_seconds']:6.2f}s (wall {found['wall_seconds']:6.2f}s) over "
            f"{found['buckets']} buckets, {found['stocks']} stocks: {found['cpu_ms_per_bucket']:6.2f} ms a bucket "
            f"= {found['fit_fixed_ms_per_bucket']:6.2f} ms + {found['fit_ms_per_stock']:.3f} ms a stock",
            flush=True,
        )
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average {results['load_average_before']} -> {results['load_average_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
