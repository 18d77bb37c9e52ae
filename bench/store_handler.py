"""StoreHandler benchmark: its load against Qlib's Alpha158 load and one wide Parquet read, and its peak memory.

    .venv/bin/python bench/store_handler.py --store DIR [--input DIR] [--start 2016-01-01] [--end 2026-12-31]
    .venv/bin/python bench/store_handler.py --store DIR --full-market   # one load: time and peak RSS only

On the same stocks (every stock of the store) and dates it prints, in one run:
- `StoreHandler`'s load (`StoreDataLoader.load`: the frame `DataHandlerLP` keeps, before Qlib's
  processors) of the 158 alpha columns plus the label, and of every stored column;
- Qlib's `Alpha158` load of the same 158 factors and label (Qlib's default provider, as a Qlib user has it);
- one `pd.read_parquet` of a wide Parquet file holding the same frame;
- the load's peak traced memory (tracemalloc, a separate run) against the final frame's size.
Each time is the best of a few runs; ratios are measured in this run. No assertions: it reports.
`--full-market` loads the 158 alpha columns once and reports the time and the process's peak resident
memory above what it held before the load, against the final frame (Parquet and Alpha158 need more
memory than the machine has at that size). Then, unless `--no-dataset`, it builds a `DatasetH` over a
`StoreHandler` with Alpha158's processors (`--processors alpha158`: Alpha158's defaults, no infer
processors; `nn`: ZScoreNorm fitted on train and Fillna, as Qlib's neural-net configs add; `--drop-raw`)
and prepares its segments as Qlib's model and `SignalRecord` do (train and valid for learning,
test for inference), reporting the time and the peak resident memory against the same frame size.
`--dataset-handler qlib` runs Qlib's own `DataHandlerLP` processing and fetching on the same loader
instead, for comparison. `--stocks N` takes the first N stocks of the store.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute_assets.consumers.handler import StoreDataLoader  # noqa: E402
from precompute_assets.consumers.qlib_session import init_store_qlib, kept_qlib_config  # noqa: E402
from precompute_assets.indicators.catalog import load_registry  # noqa: E402
from precompute_assets.settings import Settings  # noqa: E402


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def frame_bytes(frame: pd.DataFrame) -> int:
    """The frame's values plus its index (levels and codes), what a reader must hold at the end."""
    return int(frame.memory_usage(index=True, deep=False).sum())


def traced_peak(fn: Callable[[], pd.DataFrame]) -> tuple[int, int]:
    """(peak traced bytes while `fn` runs, bytes of the frame it returns)."""
    gc.collect()
    tracemalloc.start()
    try:
        frame = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, frame_bytes(frame)


def rss_bytes() -> int:
    """The process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def report_full_market(loader: StoreDataLoader, window: tuple, out: Path, results: dict) -> None:
    """One load: its time and the peak resident memory it added, against the frame it returns."""
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    frame = loader.load(*window)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    final = frame_bytes(frame)
    rows, columns = frame.shape
    print(f"{len(window[0])} stocks, {rows} rows x {columns} columns ({final / 2**20:.0f} MiB)")
    print(f"  StoreHandler load, 158 alpha columns + label {seconds:8.2f} s")
    added = f"{peak / 2**20:.0f} MiB: {peak / final:.2f}x the frame"
    print(f"  peak resident memory added by the load {added} (target <= 1.5x)")
    results.update(
        shape={"stocks": len(window[0]), "rows": rows, "columns": columns},
        seconds={"store_handler_alpha158_columns": seconds},
        peak_memory={"peak_rss_added_mib": peak / 2**20, "frame_mib": final / 2**20, "ratio": peak / final},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"JSON: {out}")


NN_INFER_PROCESSORS = [{"class": "ZScoreNorm", "kwargs": {}}, {"class": "Fillna", "kwargs": {}}]
"""Qlib's `_DEFAULT_INFER_PROCESSORS` (Alpha360's; Alpha158's own default is none) but `ProcessInf`, which
has nothing to do on a checked store (no infinities) and takes minutes at full market."""


def segments_of(calendar: pd.DatetimeIndex) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Train on all but the last four years, validate on the next two, test on the last two."""
    last = calendar[-1].year
    cut = {"train": (None, last - 4), "valid": (last - 3, last - 2), "test": (last - 1, None)}
    bounds = {}
    for name, (first, final) in cut.items():
        lo = calendar[0] if first is None else calendar[calendar.year >= first][0]
        hi = calendar[-1] if final is None else calendar[calendar.year <= final][-1]
        bounds[name] = (lo, hi)
    return bounds


def report_dataset(
    codes: list[str],
    calendar: pd.DatetimeIndex,
    columns: list[str],
    processors: str,
    kind: str,
    drop_raw: bool,
    frame_mib: float,
) -> dict:
    """A `DatasetH` over `StoreHandler` (or, `kind="qlib"`, Qlib's `DataHandlerLP` on the same loader)
    prepared as a model trains and predicts on it: time and peak RSS."""
    from qlib.contrib.data.handler import check_transform_proc
    from qlib.data.dataset import DatasetH
    from qlib.data.dataset.handler import DataHandlerLP

    from precompute_assets.consumers.handler import (
        ALPHA158_INFER_PROCESSORS,
        ALPHA158_LEARN_PROCESSORS,
        StoreDataLoader,
        StoreHandler,
    )

    segments = segments_of(calendar)
    infer = NN_INFER_PROCESSORS if processors == "nn" else ALPHA158_INFER_PROCESSORS
    window = (codes, segments["train"][0], segments["test"][1])
    fit = (segments["train"][0], segments["train"][1])
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    if kind == "qlib":
        handler = DataHandlerLP(
            *window,
            data_loader=StoreDataLoader(columns),
            infer_processors=check_transform_proc(infer, *fit),
            learn_processors=check_transform_proc(ALPHA158_LEARN_PROCESSORS, *fit),
            drop_raw=drop_raw,
        )
    else:
        handler = StoreHandler(*window, columns=columns, infer_processors=infer, fit_start_time=fit[0],
                               fit_end_time=fit[1], drop_raw=drop_raw)  # fmt: skip
    dataset = DatasetH(handler, segments=segments)
    setup = time.perf_counter() - started
    train, valid = dataset.prepare(["train", "valid"], col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)
    test = dataset.prepare("test", col_set="feature", data_key=DataHandlerLP.DK_I)
    seconds = time.perf_counter() - started
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / 2**20
    rows = {name: len(part) for name, part in zip(("train", "valid", "test"), (train, valid, test), strict=True)}
    name = type(handler).__name__
    print(f"  DatasetH over {name} ({processors} processors, drop_raw={drop_raw}) set up in {setup:.2f} s,"
          f" segments prepared by {seconds:.2f} s: {rows}")  # fmt: skip
    print(f"  peak resident memory added by DatasetH {peak:.0f} MiB: {peak / frame_mib:.2f}x the frame")
    return {
        "handler": type(handler).__name__,
        "processors": processors,
        "drop_raw": drop_raw,
        "segments": {k: [str(v[0].date()), str(v[1].date())] for k, v in segments.items()},
        "rows": rows,
        "setup_seconds": setup,
        "prepared_seconds": seconds,
        "peak_rss_added_mib": peak,
        "ratio": peak / frame_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--input", type=Path, help="the store's parquet input (only for columns it lacks)")
    parser.add_argument("--start", default=None)
    parser.add_argument("--end", default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-alpha158", action="store_true", help="full market: Alpha158 needs > 32 GB there")
    parser.add_argument("--full-market", action="store_true", help="one load: time and peak RSS only")
    parser.add_argument("--stocks", type=int, help="only the first N stocks of the store")
    parser.add_argument("--no-dataset", action="store_true", help="full market: skip the DatasetH")
    parser.add_argument("--processors", choices=("alpha158", "nn"), default="alpha158")
    parser.add_argument("--dataset-handler", choices=("store", "qlib"), default="store")
    parser.add_argument("--drop-raw", action="store_true", help="the DatasetH's handler drops its raw frame")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "store_handler.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    settings = Settings(args.input or args.store.parent / "parquet", args.store)
    alpha = load_registry().all("alpha158")
    every = load_registry().names()
    results: dict[str, object] = {"store": str(args.store)}
    with kept_qlib_config(), tempfile.TemporaryDirectory(prefix="bench_handler_") as tmp:
        init_store_qlib(settings.qlib_data_path, fast=False)
        from qlib.data import D

        codes = sorted(D.list_instruments(D.instruments("all"), args.start, args.end, as_list=True))[: args.stocks]
        window = (codes, args.start, args.end)
        ours = StoreDataLoader([i.name for i in alpha], settings)
        if args.full_market:
            report_full_market(ours, window, args.json, results)
            if not args.no_dataset:
                frame_mib = results["peak_memory"]["frame_mib"]
                calendar = pd.DatetimeIndex(D.calendar(args.start, args.end))
                results["dataset"] = report_dataset(
                    codes, calendar, ours.columns, args.processors, args.dataset_handler, args.drop_raw, frame_mib
                )
                args.json.write_text(json.dumps(results, indent=2))
            return
        wide = StoreDataLoader(every, settings)
        frame = ours.load(*window)
        rows, columns = frame.shape
        print(f"{len(codes)} stocks, {rows} rows x {columns} columns ({frame_bytes(frame) / 2**20:.0f} MiB)")
        results["shape"] = {"stocks": len(codes), "rows": rows, "columns": columns}

        parquet = Path(tmp) / "wide.parquet"
        frame.to_parquet(parquet)
        del frame
        times = {
            "store_handler_alpha158_columns": best_of(args.runs, lambda: ours.load(*window)),
            "wide_parquet_read": best_of(args.runs, lambda: pd.read_parquet(parquet)),
            "store_handler_every_column": best_of(args.runs, lambda: wide.load(*window)),
        }
        if not args.skip_alpha158:
            from qlib.contrib.data.handler import Alpha158

            qlib_loader = Alpha158(instruments=codes[:1], start_time=args.start, end_time=args.end).data_loader
            times["qlib_alpha158"] = best_of(1, lambda: qlib_loader.load(*window))
        peak, final = traced_peak(lambda: ours.load(*window))
        results["seconds"] = times
        results["peak_memory"] = {"peak_mib": peak / 2**20, "frame_mib": final / 2**20, "ratio": peak / final}

    base = times["store_handler_alpha158_columns"]
    print(f"  {'StoreHandler load, 158 alpha columns + label':<48} {base:8.2f} s")
    print(f"  {'StoreHandler load, every stored column + label':<48} {times['store_handler_every_column']:8.2f} s")
    print(f"  {'one wide Parquet read of the same frame':<48} {times['wide_parquet_read']:8.2f} s"
          f"   StoreHandler / Parquet = {base / times['wide_parquet_read']:.2f}x (target <= 1.5x)")  # fmt: skip
    if "qlib_alpha158" in times:
        print(f"  {'Qlib Alpha158 load (default provider)':<48} {times['qlib_alpha158']:8.2f} s"
              f"   Alpha158 / StoreHandler = {times['qlib_alpha158'] / base:.1f}x (target >= 15x)")  # fmt: skip
    memory = results["peak_memory"]
    print(f"  peak traced memory during the load {memory['peak_mib']:.0f} MiB, final frame "
          f"{memory['frame_mib']:.0f} MiB: {memory['ratio']:.2f}x (target <= 1.5x)")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
