"""The precompute, step by step, as plain functions the Dagster assets (and notebooks) call.

calendar -> per bucket: bars -> four families -> store -> manifest. Each step reads what the step
before it left (the store's calendar, the bucket's intermediates) and returns a report whose fields
become the materialization's metadata.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets import intermediates
from precompute_assets.bars import BucketBars, load_bars, scan_calendar
from precompute_assets.buckets import codes_in_bucket
from precompute_assets.families.base import valid_rows
from precompute_assets.families.update import compute_family_update, tail_start
from precompute_assets.operations.disk_space import ensure_free_space, stock_write_bytes
from precompute_assets.operations.lock import bucket_lock
from precompute_assets.parquet_input import InputError, file_fingerprint, read_stock_cached, scan_folder
from precompute_assets.progress import Log, Progress, no_log, stock_line
from precompute_assets.registry import history_need, load_registry
from precompute_assets.settings import Settings
from precompute_assets.store.base_fields import BASE_FIELDS
from precompute_assets.store.bucket_state import (
    clear_repairs,
    marked_for_repair,
    record_bucket,
    record_input_problems,
)
from precompute_assets.store.bucket_writer import StockWrite, write_stock
from precompute_assets.store.calendar import (
    history_inserted,
    publish_calendar,
    read_calendar,
    read_working_calendar,
    write_working_calendar,
)
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import calendar_holdouts, write_manifest
from precompute_assets.store.stock_commit import pending_codes, publish_pending
from precompute_assets.update_plan import HistoryShrunk, StockPlan, plan_stock
from precompute_assets.warmup import nan_after_warmup

WRITER_THREADS = 4
"""Stocks committed at once by a bucket's store step (measured: 4 threads write a bucket 2-3x faster)."""


class _Unreadable(Exception):
    """A stock whose input could not be read; its `InputError` is already recorded."""


@dataclass
class StepReport:
    """What a step did: numbers for metadata, skipped stocks with reasons, and a content version."""

    metadata: dict[str, object] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    data_version: str = ""


def input_version(fingerprints: Mapping[str, str]) -> str:
    """Content version of a set of input files: changes exactly when a file's bytes, or the set, change."""
    digest = hashlib.sha1()
    for code, fingerprint in sorted(fingerprints.items()):
        digest.update(f"{code}:{fingerprint};".encode())
    return digest.hexdigest()[:16]


def file_fingerprints(files: Mapping[str, Path], codes: list[str]) -> dict[str, str]:
    return {code: file_fingerprint(files[code]) for code in codes}


def bucket_input_versions(settings: Settings, buckets: list[str]) -> dict[str, str]:
    """Each bucket's input version, as the observable source reports it."""
    files = scan_folder(settings.parquet_data_path).files
    return {b: input_version(file_fingerprints(files, codes_in_bucket(files, b, settings.batches))) for b in buckets}


def build_calendar(settings: Settings) -> StepReport:
    """Union of all input dates with the stored calendar (it never loses a date a stock may use)."""
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    folder = scan_folder(settings.parquet_data_path)
    scan = scan_calendar(folder.files)
    stored = read_working_calendar(layout)
    dates = stored.union(scan.dates).rename("date")
    inserted = int((dates[: len(stored)] != stored).any()) if len(stored) else 0
    write_working_calendar(layout, dates)
    errors = [str(e) for e in folder.errors + scan.errors]
    report = StepReport(errors=errors, data_version=_digest("".join(f"{d:%Y%m%d}" for d in dates)))
    report.metadata = {
        "trading_days": len(dates),
        "first_date": f"{dates[0]:%Y-%m-%d}" if len(dates) else None,
        "last_date": f"{dates[-1]:%Y-%m-%d}" if len(dates) else None,
        "new_days": len(dates) - len(stored),
        "history_inserted": bool(inserted),
        "files_skipped": len(errors),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def build_bars(settings: Settings, bucket: str, log: Log = no_log) -> StepReport:
    """Plan each stock of the bucket against the store and leave the bars its plan needs.

    Unchanged stocks are not even read; appended stocks keep only the tail their columns' history
    needs; new, restated or damaged stocks keep their whole history.
    """
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    registry = load_registry()
    calendar = read_working_calendar(layout)
    folder = scan_folder(settings.parquet_data_path)
    codes = codes_in_bucket(folder.files, bucket, settings.batches)
    fingerprints = file_fingerprints(folder.files, codes)
    need = max(history_need(i) for i in registry.all())
    repairs = marked_for_repair(layout, bucket)
    published = read_calendar(layout)
    inserted = history_inserted(published, calendar)
    bars, plans, quality, errors = {}, {}, {}, []
    problems: list[str] = []
    ignored: dict[str, list[str]] = {}
    shrunk: dict[str, str] = {}
    progress = Progress(f"{bucket} bars", len(codes), log)
    for code in codes:
        progress.advance()
        loaded: BucketBars = BucketBars()

        def load(code: str = code, loaded: BucketBars = loaded) -> pd.DataFrame:
            result = load_bars(
                folder.files, [code], calendar, lambda path, stock: read_stock_cached(path, stock, fingerprints[stock])
            )
            loaded.errors.extend(result.errors)
            loaded.inputs.update(result.inputs)
            if code not in result.bars:
                raise _Unreadable(code)
            return result.bars[code]

        def dates(code: str = code, loaded: BucketBars = loaded) -> pd.DatetimeIndex:
            return loaded.inputs[code].bars.index

        try:
            plan, stock_bars = plan_stock(
                layout, registry, code, fingerprints[code], calendar, load, repairs.get(code), dates, published
            )
        except _Unreadable:  # skipped with its InputError; whatever the store holds stays as it is
            errors.extend(str(e) for e in loaded.errors)
            continue
        except HistoryShrunk as exc:  # the file lost stored days: keep them, and say so
            errors.append(str(InputError(folder.files[code], code, "history_shrunk", str(exc))))
            shrunk[code] = str(exc)
            continue
        finally:
            for read in loaded.inputs.values():
                problems.extend(str(p) for p in read.problems)
                if read.ignored_columns:
                    ignored[read.code] = read.ignored_columns
        quality.update({c: dict(s.quality) for c, s in loaded.inputs.items()})
        if inserted and plan.mode == "update":  # appended rows would read shifted until the new calendar is out
            plan = StockPlan(code, "full", "calendar history inserted: rebuilt as a pending version")
        plans[code] = plan
        if stock_bars is not None:
            update = plan.update
            if update is not None and update.new_from is not None and not update.stale:
                stock_bars = stock_bars.iloc[tail_start(stock_bars, update.new_from, need) :]
            bars[code] = stock_bars
    work = intermediates.bucket_dir(settings.work_path, bucket)
    intermediates.write_frames(intermediates.frames_path(work, "bars"), bars)
    notes = {
        "fingerprints": fingerprints,
        "quality": quality,
        "errors": errors,
        "problems": problems,
        "ignored_columns": ignored,
        "history_shrunk": shrunk,
        "plans": {code: plan.to_notes() for code, plan in plans.items()},
    }
    intermediates.write_notes(work / "bars.json", notes)
    totals = {rule: sum(q.get(rule, 0) for q in quality.values()) for rule in _rules(quality)}
    modes = [plan.mode for plan in plans.values()]
    report = StepReport(errors=errors + problems, data_version=input_version(fingerprints))
    report.metadata = {
        "stocks": len(plans),
        "stocks_skipped": len(errors),
        "input_problems": len(problems),
        "stocks_full": modes.count("full"),
        "stocks_updated": modes.count("update"),
        "stocks_unchanged": modes.count("skip"),
        "rows": sum(len(b) for b in bars.values()),
        **{f"quality_{rule}": n for rule, n in totals.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def build_family(settings: Settings, bucket: str, family: str, log: Log = no_log) -> StepReport:
    """Compute one family for the bucket's stocks and leave its columns as an intermediate."""
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    calendar = read_working_calendar(layout)
    work = intermediates.bucket_dir(settings.work_path, bucket)
    bars = intermediates.read_frames(intermediates.frames_path(work, "bars"))
    plans = _plans(work)
    updates = {code: plans[code].update for code in bars}
    log(f"{bucket} {family}: computing {len(bars)} stocks ({sum(u is None for u in updates.values())} in full)")
    result = compute_family_update(family, bars, calendar, updates)
    intermediates.write_frames(intermediates.frames_path(work, family), result.frames)
    errors = [str(e) for e in result.errors]
    nan_shares = _nan_shares(bars, result.frames)
    notes = {"errors": errors, "state": result.state, "nan_share": nan_shares}
    intermediates.write_notes(work / f"{family}.json", notes)
    seconds = time.perf_counter() - started
    rows = sum(len(f) for f in result.frames.values())
    failed = {e.code: str(e) for e in result.errors}
    lines = [f"{bucket} {family}: {len(result.frames)} stocks in {seconds:.1f}s"]
    for code, frame in result.frames.items():
        outcome = f"failed: {failed[code]}" if code in failed else "ok"
        share = seconds * len(frame) / rows if rows else 0.0  # families run as one batch: time by rows
        lines.append(
            stock_line(
                bucket=bucket, stock=code, family=family, rows=len(frame), seconds=round(share, 4), outcome=outcome
            )
        )
    log("\n".join(lines))  # one message: each is a Dagster event, about 3 ms to store
    report = StepReport(errors=errors, data_version=_frames_digest(result.frames))
    report.metadata = {
        "stocks": len(result.frames),
        "stocks_failed": len({e.code for e in result.errors}),
        "rows": rows,
        "columns": len(load_registry().all(family)),
        "nan_share_after_warmup": _mean_share(nan_shares, len(result.frames), len(load_registry().all(family))),
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }
    return report


def write_bucket(settings: Settings, bucket: str, families: tuple[str, ...], log: Log = no_log) -> StepReport:
    """Merge the bucket's bars and family columns and write each stock by its plan.

    Checks the free disk space first (a clear error, nothing written) and holds the bucket's lock
    while writing, so a second writer of the same bucket, on any host, stops with the holder's name.
    """
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    registry = load_registry()
    calendar = read_working_calendar(layout)
    work = intermediates.bucket_dir(settings.work_path, bucket)
    bars = intermediates.read_frames(intermediates.frames_path(work, "bars"))
    notes = intermediates.read_notes(work / "bars.json")
    plans = _plans(work)
    family_notes = {f: intermediates.read_notes(work / f"{f}.json") for f in families}
    errors = list(notes.get("errors", []))
    for family in families:
        errors.extend(family_notes[family].get("errors", []))
    columns = len(registry.all()) + len(BASE_FIELDS) + 1
    need = sum(stock_write_bytes(len(b), columns) for c, b in bars.items() if plans[c].mode != "skip")
    ensure_free_space(layout.root, need, f"write bucket {bucket}")
    version = input_version(notes.get("fingerprints", {}))
    # rebuilt stocks stay pending until the manifest publishes the calendar they were built on
    publish = not history_inserted(read_calendar(layout), calendar)
    if len(calendar):
        # build the index's lookup table here: the writer threads' first get_loc calls would build it
        # at once, and pandas' lazy build is not thread-safe (a date it holds was reported missing)
        calendar.get_loc(calendar[0])
    with bucket_lock(layout.root, bucket):
        family_frames = {f: intermediates.read_frames(intermediates.frames_path(work, f)) for f in families}
        written, failed = [], 0
        progress = Progress(f"{bucket} store", len(bars), log)

        def write_one(code: str) -> tuple[StockWrite | Exception, float]:
            stock_started = time.perf_counter()
            frames = {f: frames_of[code] for f, frames_of in family_frames.items() if code in frames_of}
            notes_of = {f: {k: v.get(code, {}) for k, v in family_notes[f].items() if k != "errors"} for f in families}
            state = {k: v for n in notes_of.values() for k, v in n.get("state", {}).items()}
            nan_share = {k: v for n in notes_of.values() for k, v in n.get("nan_share", {}).items()}
            quality = {"input": notes.get("quality", {}).get(code, {}), "nan_share": nan_share}
            fingerprint = notes["fingerprints"][code]
            try:
                outcome: StockWrite | Exception = write_stock(
                    layout,
                    registry,
                    code,
                    calendar,
                    bars[code],
                    frames,
                    fingerprint,
                    plans[code],
                    state,
                    quality,
                    publish=publish,
                )
            except (ValueError, OSError) as exc:
                outcome = exc
            return outcome, time.perf_counter() - stock_started

        # Threads, because creating a file costs a disk round trip that several writers overlap (each
        # stock has its own folder); the outcomes are reported here, in the bucket's order.
        with ThreadPoolExecutor(WRITER_THREADS) as pool:
            for code, (outcome, seconds) in zip(bars, pool.map(write_one, bars), strict=True):
                if isinstance(outcome, Exception):
                    failed += 1
                    errors.append(f"{code} store: {outcome}")
                    status = f"failed: {outcome}"
                else:
                    written.append(outcome)
                    status = "ok"
                line = stock_line(
                    bucket=bucket,
                    stock=code,
                    family="store",
                    mode=plans[code].mode,
                    outcome=status,
                    seconds=round(seconds, 4),
                )
                progress.advance(lines=[line])
        record_input_problems(
            layout,
            bucket,
            notes.get("errors", []),
            notes.get("problems", []),
            notes.get("ignored_columns", {}),
            notes.get("history_shrunk", {}),
        )
        if not failed:  # a failed commit (disk, I/O) must be retried by the next run
            record_bucket(layout, bucket, version, calendar)
            clear_repairs(layout, bucket, [w.code for w in written])
    report = StepReport(errors=errors, data_version=version)
    report.metadata = {
        "stocks_written": len(written),
        "stocks_rebuilt": sum(w.mode == "full" for w in written),
        "stocks_updated": sum(w.mode == "update" for w in written),
        "stocks_unchanged": sum(p.mode == "skip" for p in plans.values()),
        "stocks_failed": failed,
        "rows_written": sum(w.rows_written for w in written),
        "columns": max((w.columns for w in written), default=0),
        "first_date": min((w.first_date for w in written), default=None),
        "last_date": max((w.last_date for w in written), default=None),
        "missing_columns": sum(len(w.missing_columns) for w in written),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def build_manifest(settings: Settings) -> StepReport:
    """Instrument list and version files, from what the buckets committed."""
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    folder = scan_folder(settings.parquet_data_path)
    version = input_version(file_fingerprints(folder.files, list(folder.files)))
    holdouts = calendar_holdouts(layout)
    if not holdouts:
        # the pending stocks sit on the working calendar only: swapped in just before it is published
        publish_pending(layout, pending_codes(layout))
        publish_calendar(layout)
    data_version = write_manifest(layout, load_registry(), folder.files, version)
    errors = [f"calendar not published: {code} holds it back, {why}" for code, why in sorted(holdouts.items())]
    report = StepReport(errors=errors, data_version=f"{data_version['version']}-{version}")
    report.metadata = {
        "calendar_published": not holdouts,
        "calendar_held_back_by": ", ".join(sorted(holdouts)) or None,
        "version": data_version["version"],
        "stocks": data_version["stock_count"],
        "delisted": len(data_version["delisted"]),
        "first_date": data_version["date_range"][0],
        "last_date": data_version["date_range"][1],
        "columns": sum(len(v) for v in data_version["indicators"].values()),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def _plans(work: Path) -> dict[str, StockPlan]:
    notes = intermediates.read_notes(work / "bars.json").get("plans", {})
    return {code: StockPlan.from_notes(code, plan) for code, plan in notes.items()}


def _rules(quality: dict[str, dict[str, int]]) -> list[str]:
    return sorted({rule for q in quality.values() for rule in q})


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _frames_digest(frames: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha1()  # over the raw bytes: pandas' per-column object hashing cost 0.8 s a bucket
    for code in sorted(frames):
        frame = frames[code]
        digest.update(code.encode())
        digest.update("|".join(map(str, frame.columns)).encode())
        digest.update(frame.index.to_numpy().tobytes())
        digest.update(np.ascontiguousarray(frame.to_numpy()).tobytes())
    return digest.hexdigest()[:16]


def _nan_shares(bars: dict[str, pd.DataFrame], frames: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Per stock, the share of NaN in each column past its warm-up, on days the input has (not missing days).

    Only columns with some NaN are listed; frames that hold only appended days are left out.
    """
    registry = load_registry()
    shares: dict[str, dict[str, float]] = {}
    for code, frame in frames.items():
        if code not in bars or not frame.index.equals(bars[code].index):
            continue
        valid = valid_rows(bars[code])
        warmups = np.array([registry.get(name).warmup for name in frame.columns])
        nans, totals = nan_after_warmup(frame.to_numpy(np.float32), valid, warmups)
        for name, total, nan in zip(frame.columns, totals, nans, strict=True):
            if total and nan:
                shares.setdefault(code, {})[name] = round(float(nan / total), 4)
    return shares


def _mean_share(shares: dict[str, dict[str, float]], stocks: int, columns: int) -> float | None:
    cells = stocks * columns
    return round(sum(sum(s.values()) for s in shares.values()) / cells, 4) if cells else None
