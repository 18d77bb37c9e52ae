"""The precompute, step by step, as plain functions the Dagster assets (and notebooks) call.

calendar -> per bucket: bars -> four families -> store -> manifest. Each step reads what the step
before it left (the store's calendar, the bucket's intermediates) and returns a report whose fields
become the materialization's metadata.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets import intermediates
from precompute_assets.bars import load_bars, scan_calendar
from precompute_assets.buckets import codes_in_bucket
from precompute_assets.families import compute_family
from precompute_assets.parquet_input import file_fingerprint, scan_folder
from precompute_assets.registry import load_registry
from precompute_assets.settings import Settings
from precompute_assets.store.bucket_state import record_bucket
from precompute_assets.store.bucket_writer import write_stock
from precompute_assets.store.calendar import read_calendar, write_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import write_manifest


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
    stored = read_calendar(layout)
    dates = stored.union(scan.dates).rename("date")
    inserted = int((dates[: len(stored)] != stored).any()) if len(stored) else 0
    if not dates.equals(stored):
        write_calendar(layout, dates)
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


def build_bars(settings: Settings, bucket: str) -> StepReport:
    """Read and clean the bucket's input files onto the calendar; the families all start from these."""
    started = time.perf_counter()
    calendar = read_calendar(StoreLayout(settings.qlib_data_path))
    folder = scan_folder(settings.parquet_data_path)
    codes = codes_in_bucket(folder.files, bucket, settings.batches)
    loaded = load_bars(folder.files, codes, calendar)
    work = intermediates.bucket_dir(settings.work_path, bucket)
    intermediates.write_frames(work / "bars.parquet", loaded.bars)
    fingerprints = file_fingerprints(folder.files, codes)
    quality = {code: dict(stock.quality) for code, stock in loaded.inputs.items()}
    errors = [str(e) for e in loaded.errors]
    notes = {"codes": sorted(loaded.bars), "fingerprints": fingerprints, "quality": quality, "errors": errors}
    intermediates.write_notes(work / "bars.json", notes)
    rows = sum(len(b) for b in loaded.bars.values())
    totals = {rule: sum(q.get(rule, 0) for q in quality.values()) for rule in _rules(quality)}
    report = StepReport(errors=errors, data_version=input_version(fingerprints))
    report.metadata = {
        "stocks": len(loaded.bars),
        "stocks_skipped": len(errors),
        "rows": rows,
        **{f"quality_{rule}": n for rule, n in totals.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def build_family(settings: Settings, bucket: str, family: str) -> StepReport:
    """Compute one family for the bucket's stocks and leave its columns as an intermediate."""
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    calendar = read_calendar(layout)
    work = intermediates.bucket_dir(settings.work_path, bucket)
    bars = intermediates.read_frames(work / "bars.parquet")
    result = compute_family(family, bars, calendar)
    intermediates.write_frames(work / f"{family}.parquet", result.frames)
    errors = [str(e) for e in result.errors]
    intermediates.write_notes(work / f"{family}.json", {"errors": errors})
    seconds = time.perf_counter() - started
    rows = sum(len(f) for f in result.frames.values())
    report = StepReport(errors=errors, data_version=_frames_digest(result.frames))
    report.metadata = {
        "stocks": len(result.frames),
        "stocks_failed": len({e.code for e in result.errors}),
        "rows": rows,
        "columns": len(load_registry().all(family)),
        "nan_share_after_warmup": _nan_share_after_warmup(family, result.frames),
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }
    return report


def write_bucket(settings: Settings, bucket: str, families: tuple[str, ...]) -> StepReport:
    """Merge the bucket's bars and family columns and commit every stock to the store."""
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    registry = load_registry()
    calendar = read_calendar(layout)
    work = intermediates.bucket_dir(settings.work_path, bucket)
    bars = intermediates.read_frames(work / "bars.parquet")
    notes = intermediates.read_notes(work / "bars.json")
    family_frames = {f: intermediates.read_frames(work / f"{f}.parquet") for f in families}
    errors = list(notes.get("errors", []))
    for family in families:
        errors.extend(intermediates.read_notes(work / f"{family}.json").get("errors", []))
    written = []
    for code, stock_bars in bars.items():
        frames = {f: frames_of[code] for f, frames_of in family_frames.items() if code in frames_of}
        try:
            written.append(
                write_stock(layout, registry, code, calendar, stock_bars, frames, notes["fingerprints"][code])
            )
        except (ValueError, OSError) as exc:
            errors.append(f"{code} store: {exc}")
    rows = sum(w.rows for w in written)
    version = input_version(notes.get("fingerprints", {}))
    if len(written) == len(bars):  # a failed commit (disk, I/O) must be retried by the next run
        record_bucket(layout, bucket, version, calendar)
    report = StepReport(errors=errors, data_version=version)
    report.metadata = {
        "stocks_written": len(written),
        "stocks_skipped": len(bars) - len(written) + len(notes.get("errors", [])),
        "rows": rows,
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
    data_version = write_manifest(layout, load_registry(), folder.files, version)
    report = StepReport(data_version=f"{data_version['version']}-{version}")
    report.metadata = {
        "version": data_version["version"],
        "stocks": data_version["stock_count"],
        "delisted": len(data_version["delisted"]),
        "first_date": data_version["date_range"][0],
        "last_date": data_version["date_range"][1],
        "columns": sum(len(v) for v in data_version["indicators"].values()),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def _rules(quality: dict[str, dict[str, int]]) -> list[str]:
    return sorted({rule for q in quality.values() for rule in q})


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _frames_digest(frames: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha1()
    for code in sorted(frames):
        digest.update(code.encode())
        digest.update(pd.util.hash_pandas_object(frames[code], index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _nan_share_after_warmup(family: str, frames: dict[str, pd.DataFrame]) -> float | None:
    """Share of NaN among values past each column's warm-up, over the bucket (missing days included)."""
    registry = load_registry()
    nan = total = 0
    for frame in frames.values():
        for name in frame.columns:
            values = frame[name].to_numpy()[registry.get(name).warmup :]
            nan += int(np.isnan(values).sum())
            total += values.size
    return round(nan / total, 4) if total else None
