"""Full-market benchmark: full build, daily update, reads and backtests, measured in one run.

    .venv/bin/python bench/full_market.py            # 5,000 stocks x 10 years (about 20 minutes on 2 cores)
    .venv/bin/python bench/full_market.py --small    # 500 stocks x 10 years

The market comes from the project's own generator. The build and the update go through `make run`'s
path (Dagster runs on a temporary instance, two buckets at a time), so the figures include process
start, orchestration and I/O. Prints a table and writes JSON (`--json`, default bench/results/).
Ratios are measured in the same run, so a noisy machine moves both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute_assets.indicators.catalog import load_registry  # noqa: E402
from precompute_assets.indicators.registry import FAMILIES  # noqa: E402
from precompute_assets.input.parquet import scan_folder  # noqa: E402
from precompute_assets.input.synthetic import generate_market  # noqa: E402
from precompute_assets.settings import Settings  # noqa: E402

TRADING_DAYS_PER_YEAR = 244


class PeakMemory:
    """Polls a process tree and keeps the largest resident set of any single process."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.root, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        self.peak = max(self.peak, proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def make_run(env: dict[str, str]) -> tuple[float, int, str]:
    """`make run`'s command on the given settings: seconds, peak RSS of any process, output tail."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "precompute_assets.cli.make_run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    memory = PeakMemory(proc.pid)
    output, _ = proc.communicate()
    peak = memory.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"make run failed:\n{output[-4000:]}")
    return time.perf_counter() - started, peak, output


def family_seconds(dagster_home: Path, since: float) -> float:
    """Seconds the family steps spent computing (their own metadata), over runs started after `since`."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

    per_run: dict[tuple[str, str], float] = {}  # a range run records its summed metadata on each bucket
    with DagsterInstance.get() as instance:
        for family in FAMILIES:
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(family), after_timestamp=since), limit=10_000
            ).records
            for r in records:
                per_run[(family, r.run_id)] = r.asset_materialization.metadata["seconds"].value
    return sum(per_run.values())


def step_seconds(dagster_home: Path, since: float) -> float:
    """Seconds inside Dagster steps (asset and check code, I/O included), over runs started after `since`.

    What a build's wall time on two workers holds beyond this is orchestration: process starts, run
    and step start-up, event writes, and a core left idle while a single calendar or manifest run goes.
    """
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from dagster import DagsterInstance, RunsFilter

    total = 0.0
    with DagsterInstance.get() as instance:
        for run in instance.get_runs(RunsFilter(created_after=datetime.fromtimestamp(since, UTC))):
            for step in instance.get_run_step_stats(run.run_id):
                if step.start_time and step.end_time:
                    total += step.end_time - step.start_time
    return total


def drop_last_day(source: Path, target: Path) -> str:
    """Copy the market without its last trading day; returns that day."""
    target.mkdir(parents=True, exist_ok=True)
    last = ""
    for path in sorted(source.glob("*.parquet")):
        table = pq.read_table(path)
        last = max(last, str(table.column("date")[-1].as_py())[:10])
        pq.write_table(table.slice(0, table.num_rows - 1), target / path.name, compression="zstd")
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=None, help="default 5,000 (500 with --small)")
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="500 stocks x 10 years")
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "full_market.json")
    args = parser.parse_args()
    stocks = args.stocks or (500 if args.small else 5000)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_full_market_"))
    work.mkdir(parents=True, exist_ok=True)
    end_year = 2024
    start = f"{end_year - args.years + 1}-01-01"

    started = time.perf_counter()
    generate_market(work / "market", stocks, start, f"{end_year}-12-31", seed=2026)
    generate_seconds = time.perf_counter() - started
    last_day = drop_last_day(work / "market", work / "parquet")
    days = len(pq.read_table(next((work / "parquet").glob("*.parquet")), columns=["date"]))
    stock_days = stocks * days
    home = work / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PARQUET_DATA_PATH": str(work / "parquet"),
        "QLIB_DATA_PATH": str(work / "qlib_data"),
        "PRECOMPUTE_BATCHES": str(args.batches),
        "PRECOMPUTE_BACKUP_AFTER_RUN": "0",  # a backup copies the whole store: not part of a build
    }

    mark = time.time()
    full_seconds, full_peak, _ = make_run(env)
    compute = family_seconds(home, mark)
    in_steps = step_seconds(home, mark)
    for path in (work / "market").glob("*.parquet"):  # the next trading day arrives for every stock
        shutil.copy(path, work / "parquet" / path.name)
    update_seconds, update_peak, _ = make_run(env)
    columns = len(load_registry().all())

    results = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "market": {
            "stocks": stocks,
            "trading_days": days,
            "stock_days": stock_days,
            "columns": columns,
            "generate_seconds": round(generate_seconds, 1),
            "new_day": last_day,
        },
        "full_build": {
            "seconds": round(full_seconds, 1),
            "stock_days_per_second": round(stock_days / full_seconds),
            "peak_memory_mb": round(full_peak / 2**20),
            "family_compute_seconds": round(compute, 1),
            "share_outside_indicator_computation": round(1 - compute / (2 * full_seconds), 3),
            "step_seconds": round(in_steps, 1),
            "orchestration_share": round(1 - in_steps / (2 * full_seconds), 3),
        },
        "daily_update": {
            "seconds": round(update_seconds, 1),
            "ratio_to_full_build": round(update_seconds / full_seconds, 4),
            "peak_memory_mb": round(update_peak / 2**20),
        },
    }
    settings = Settings(work / "parquet", work / "qlib_data", args.batches)
    results.update(read_and_backtest(settings, n_stocks=min(300, stocks), wide=work / "wide.parquet"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nJSON: {args.json}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """The fastest of `runs` timings: a garbage collection or a neighbour's burst only ever adds time."""
    return min(timed(fn) for _ in range(runs))


def read_and_backtest(settings: Settings, n_stocks: int, wide: Path) -> dict:
    """All stored columns of `n_stocks` through the loader, on the fly, and from one wide Parquet file;
    then each strategy with and without the store. Ratios are against the store's time."""
    import pandas as pd

    from precompute_assets.consumers import STRATEGIES, load_multiple_stocks_with_indicators, run_backtest

    codes = sorted(scan_folder(settings.parquet_data_path).files)[:n_stocks]
    frames = load_multiple_stocks_with_indicators(codes, settings=settings)
    pd.concat(frames, names=["code"]).to_parquet(wide)
    # the two reads take a second or two, so a noisy moment moves them most: the best of three each
    store = best_of(3, lambda: load_multiple_stocks_with_indicators(codes, settings=settings))
    parquet = best_of(3, lambda: pd.read_parquet(wide))
    computed = timed(lambda: load_multiple_stocks_with_indicators(codes, settings=settings, use_precomputed=False))
    read = {
        "stocks": len(codes),
        "columns": len(next(iter(frames.values())).columns),
        "store_seconds": round(store, 2),
        "computed_seconds": round(computed, 2),
        "wide_parquet_seconds": round(parquet, 2),
        "computed_over_store": round(computed / store, 1),
        "store_over_wide_parquet": round(store / parquet, 2),
    }
    calendar = next(iter(frames.values())).index
    start, end = calendar[0], calendar[-1]
    backtests = {}
    topk = {"topk": max(1, len(codes) // 10), "n_drop": 2}
    runs = {name: (name, topk if name == "multi_factor" else {}) for name in STRATEGIES}
    runs["multi_factor_replay"] = ("multi_factor", {**topk, "engine": "replay"})  # Qlib's fills, without its loop
    for label, (name, params) in runs.items():
        with_store = best_of(3, partial(run_backtest, name, codes, start, end, True, settings=settings, **params))
        without = best_of(3, partial(run_backtest, name, codes, start, end, False, settings=settings, **params))
        backtests[label] = {
            "with_store_seconds": round(with_store, 2),
            "without_seconds": round(without, 2),
            "speedup": round(without / with_store, 1),
        }
    return {"read": read, "backtest": backtests}


def print_table(results: dict) -> None:
    for section, values in results.items():
        print(f"\n[{section}]")
        if isinstance(values, dict):
            for key, value in values.items():
                print(f"  {key:<40} {json.dumps(value) if isinstance(value, dict) else value}")
        else:
            print(f"  {values}")


if __name__ == "__main__":
    main()
