"""Consumers benchmark: the store against computing on the fly, and against a wide Parquet read.

    .venv/bin/python bench/consumers.py [--stocks 20] [--years 3] [--store DIR --input DIR]

Without `--store`, it builds a store of the first `--stocks` csi300_daily stocks (full history) in a
temporary folder. Then, in one run, it prints:
- loading every registered column of those stocks: from the store, read from one wide Parquet file
  of all stocks and from one wide Parquet file per stock holding the same values, and computed on the
  fly (`use_precomputed=False`: the precompute's own family code);
- one stock's load, the same three ways;
- each backtest over the last `--years` with the store and without it.
Each time is the best of a few runs; ratios are against the store. No assertions: it reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from precompute_assets.build import pipeline
from precompute_assets.consumers import (
    STRATEGIES,
    load_multiple_stocks_with_indicators,
    load_stock_data_with_indicators,
    run_backtest,
    trading_calendar,
)
from precompute_assets.consumers.loader import load_grid
from precompute_assets.consumers.strategies import MultiFactor
from precompute_assets.input.parquet import scan_folder
from precompute_assets.settings import Settings

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata" / "csi300_daily"


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def build_store(root: Path, stocks: int) -> Settings:
    parquet = root / "parquet"
    parquet.mkdir(parents=True)
    for path in sorted(REFDATA.glob("*.parquet"))[:stocks]:
        shutil.copy(path, parquet / path.name)
    settings = Settings(parquet_data_path=parquet, qlib_data_path=root / "qlib_data", batches=4)
    started = time.perf_counter()
    pipeline.build_in_process(settings)
    print(f"built a store of {stocks} stocks in {time.perf_counter() - started:.1f} s at {settings.qlib_data_path}")
    return settings


def row(label: str, seconds: float, base: float) -> None:
    print(f"  {label:<44} {seconds * 1000:>10.1f} ms   {seconds / base:>8.1f}x the store")


def bench_loader(settings: Settings, codes: list[str], wide: Path, computing: bool = True) -> None:
    frames = load_multiple_stocks_with_indicators(codes, settings=settings)
    for code, frame in frames.items():
        frame.to_parquet(wide / f"{code}.parquet")
    columns = len(next(iter(frames.values())).columns)
    rows = sum(len(f) for f in frames.values())
    print(f"\nloader: {len(codes)} stocks x {columns} columns, {rows} rows")
    pd.concat(frames, names=["instrument", "date"]).to_parquet(wide / "all.parquet")
    del frames
    store = best_of(3, lambda: load_multiple_stocks_with_indicators(codes, settings=settings))
    one_file = best_of(3, lambda: pd.read_parquet(wide / "all.parquet"))
    parquet = best_of(3, lambda: {code: pd.read_parquet(wide / f"{code}.parquet") for code in codes})
    row("store (bin files)", store, store)
    row("one wide Parquet file of all stocks, one read", one_file, store)
    row("one wide Parquet file per stock", parquet, store)
    if computing:
        computed = best_of(
            1, lambda: load_multiple_stocks_with_indicators(codes, settings=settings, use_precomputed=False)
        )
        row("computed on the fly (use_precomputed=False)", computed, store)

    code = codes[0]
    print(f"one stock ({code}), all columns:")
    store = best_of(5, lambda: load_stock_data_with_indicators(code, settings=settings))
    computed = best_of(2, lambda: load_stock_data_with_indicators(code, settings=settings, use_precomputed=False))
    parquet = best_of(5, lambda: pd.read_parquet(wide / f"{code}.parquet"))
    row("store (bin files)", store, store)
    row("computed on the fly", computed, store)
    row("wide Parquet read", parquet, store)


def bench_backtests(settings: Settings, codes: list[str], years: int) -> dict[str, dict[str, float]]:
    """Each backtest with and without the store (seconds, best of a few), and multi_factor's inputs."""
    calendar = trading_calendar(settings)
    start, end = calendar[-years * 252], calendar[-1]
    print(f"\nbacktests: {len(codes)} stocks, {start:%Y-%m-%d} .. {end:%Y-%m-%d}")
    results = {}
    for name in STRATEGIES:
        params = {"topk": max(1, len(codes) // 4), "n_drop": 2} if name == "multi_factor" else {}
        with_store = best_of(3, partial(run_backtest, name, codes, start, end, True, settings=settings, **params))
        without = best_of(2, partial(run_backtest, name, codes, start, end, False, settings=settings, **params))
        print(f"  {name:<14} with store {with_store * 1000:>8.1f} ms   without {without * 1000:>9.1f} ms"
              f"   {without / with_store:>6.1f}x faster with the store")  # fmt: skip
        results[name] = {"with_store_s": with_store, "without_s": without, "ratio": without / with_store}
    spec = MultiFactor()
    score = partial(_factor_score, spec, codes, calendar[-years * 252 - 1], end, settings)
    with_store, without = best_of(3, partial(score, True)), best_of(2, partial(score, False))
    print(f"  {'of which multi_factor inputs (load + score)':<44} with store {with_store * 1000:>8.1f} ms"
          f"   without {without * 1000:>9.1f} ms   {without / with_store:>6.1f}x")  # fmt: skip
    results["multi_factor_inputs"] = {"with_store_s": with_store, "without_s": without, "ratio": without / with_store}
    return results


def _factor_score(
    spec: MultiFactor, codes: list[str], since: pd.Timestamp, end: pd.Timestamp, settings: Settings, stored: bool
) -> None:
    """The part of multi_factor the store serves (its load from the day before the first trade, and the
    scores); the rest is the TopkDropout replay, the same both ways."""
    columns = [*spec.columns(), "factor"]
    spec.score(load_grid(codes, since, end, columns, settings=settings, use_precomputed=stored))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stocks", type=int, default=20)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--store", type=Path, help="an existing store (with --input)")
    parser.add_argument("--input", type=Path, help="the store's parquet input folder")
    parser.add_argument("--only", choices=("loader", "backtests"), help="run one part (the loader without computing)")
    parser.add_argument("--json", type=Path, help="write the backtests' times and ratios here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bench_consumers_") as tmp:
        if args.store:
            settings = Settings(parquet_data_path=args.input, qlib_data_path=args.store)
        elif REFDATA.is_dir():
            settings = build_store(Path(tmp), args.stocks)
        else:
            sys.exit(f"no reference data at {REFDATA}; pass --store and --input")
        codes = sorted(scan_folder(settings.parquet_data_path).files)[: args.stocks]
        load_stock_data_with_indicators(codes[0], settings=settings, use_precomputed=False)  # imports, Qlib init
        wide = Path(tmp) / "wide"
        wide.mkdir()
        if args.only != "backtests":
            bench_loader(settings, codes, wide, computing=args.only is None)
        if args.only != "loader":
            results = bench_backtests(settings, codes, args.years)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(
                    json.dumps({"stocks": len(codes), "years": args.years, "backtests": results}, indent=2)
                )


if __name__ == "__main__":
    main()
