"""The precompute, step by step, as plain functions the Dagster assets (and notebooks) call.

calendar -> per bucket: bars -> four families -> store -> manifest. Each step reads what the step
before it left (the store's calendar, the bucket's intermediates) and returns a report whose fields
become the materialization's metadata.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets.build import intermediates
from precompute_assets.build.appended import record_appended
from precompute_assets.build.bucket_state import clear_repairs, marked_for_repair, record_bucket, record_input_problems
from precompute_assets.build.bucket_writer import StockWrite, write_stock
from precompute_assets.build.buckets import bucket_keys, codes_in_bucket
from precompute_assets.build.family_update import compute_family_update, tail_start
from precompute_assets.build.manifest import write_manifest
from precompute_assets.build.progress import Log, Progress, no_log, stock_line
from precompute_assets.build.update_plan import HistoryShrunk, StockPlan, plan_stock, stored_digest
from precompute_assets.build.written import WrittenStock, record_written
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.families.base import valid_rows
from precompute_assets.indicators.history import history_need
from precompute_assets.indicators.registry import FAMILIES, Registry
from precompute_assets.indicators.warmup import nan_after_warmup
from precompute_assets.input.bars import READ_THREADS, BucketBars, load_bars, scan_calendar
from precompute_assets.input.parquet import (
    InputError,
    file_fingerprint,
    file_stat,
    known_fingerprint,
    read_input,
    read_stock_cached,
    scan_folder,
)
from precompute_assets.settings import Settings
from precompute_assets.store.base_fields import ALL_BASE_FIELDS
from precompute_assets.store.calendar import (
    calendar_fingerprint,
    history_inserted,
    publish_calendar,
    read_calendar,
    read_working_calendar,
    write_working_calendar,
)
from precompute_assets.store.disk_space import ensure_free_space, stock_write_bytes
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.lock import bucket_lock
from precompute_assets.store.manifest import calendar_holdouts
from precompute_assets.store.stock_commit import (
    StockFilesDamaged,
    pending_codes,
    publish_pending,
    read_stock_meta,
    sits_on_calendar,
    update_stock,
)

LOCK_WAIT = 1800.0
"""Seconds a bucket's writer waits for another run writing the same bucket (it then re-checks its plans)."""
WRITER_THREADS = 4
"""Stocks committed at once by a bucket's store step: each commit waits on the disk, and threads overlap those waits."""


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
    stored = read_working_calendar(layout)
    scan = scan_calendar(folder.files, lambda code, path: _dates_on_calendar(layout, code, path, stored))
    dates = stored.union(scan.dates).rename("date")
    inserted = int((dates[: len(stored)] != stored).any()) if len(stored) else 0
    write_working_calendar(layout, dates)
    errors = [str(e) for e in folder.errors + scan.errors]
    report = StepReport(errors=errors, data_version=calendar_fingerprint(dates))
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


def _dates_on_calendar(layout: StoreLayout, code: str, path: Path, calendar: pd.DatetimeIndex) -> bool:
    """Whether the file's dates are already on `calendar` without reading it: its stat is the one its
    stock recorded at commit, and the stock still sits on the calendar (every date of the file it was
    built from was on the calendar then, and the calendar never loses a date)."""
    meta = read_stock_meta(layout, code)
    try:
        stat = file_stat(path)
    except OSError:
        return False
    return _stat_vouches(meta, stat) and sits_on_calendar(meta, calendar)


def _stat_vouches(meta: dict | None, stat: list[int] | None) -> bool:
    """Whether the input's stat is the one its stock recorded at commit with the input's hash."""
    if stat is None or meta is None:
        return False
    return bool(meta.get("input_fingerprint")) and meta.get("input_stat") == stat


def build_bars(settings: Settings, bucket: str, log: Log = no_log, run: str = "") -> StepReport:
    """Plan each stock of the bucket against the store and leave the bars its plan needs.

    Unchanged stocks are not even read; appended stocks keep only the tail their columns' history
    needs; new, restated or damaged stocks keep their whole history. The plans are made without the
    bucket lock and re-checked under it by `write_bucket`. `run` names the run's own work folder.
    """
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    registry = load_registry()
    calendar = read_working_calendar(layout)
    folder = scan_folder(settings.parquet_data_path)
    codes = codes_in_bucket(folder.files, bucket, settings.batches)
    inputs = _read_changed_inputs(layout, folder.files, codes)
    fingerprints = inputs.fingerprints
    repairs = marked_for_repair(layout, bucket)
    progress = Progress(f"{bucket} bars", len(codes), log)
    planned = _plan_stocks(
        layout,
        registry,
        calendar,
        folder.files,
        codes,
        fingerprints,
        repairs,
        progress.advance,
        inputs.contents,
        inputs.metas,
    )
    bars, plans, quality, errors = planned.bars, planned.plans, planned.quality, planned.errors
    work = intermediates.bucket_dir(settings.work_path, bucket, run)
    intermediates.write_frames(intermediates.frames_path(work, "bars"), bars)
    notes = {
        "fingerprints": fingerprints,
        "input_stats": inputs.stats,
        "quality": quality,
        "errors": errors,
        "problems": planned.problems,
        "ignored_columns": planned.ignored,
        "history_shrunk": planned.shrunk,
        "plans": {code: plan.to_notes() for code, plan in plans.items()},
    }
    intermediates.write_notes(work / "bars.json", notes)
    totals = {rule: sum(q.get(rule, 0) for q in quality.values()) for rule in _rules(quality)}
    modes = [plan.mode for plan in plans.values()]
    report = StepReport(errors=errors + planned.problems, data_version=input_version(fingerprints))
    report.metadata = {
        "stocks": len(plans),
        "stocks_skipped": len(errors),
        "input_problems": len(planned.problems),
        "stocks_full": modes.count("full"),
        "stocks_updated": modes.count("update"),
        "stocks_unchanged": modes.count("skip"),
        "rows": sum(len(b) for b in bars.values()),
        **{f"quality_{rule}": n for rule, n in totals.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


@dataclass
class BucketInputs:
    """Each input file's content hash and the stat that will vouch for it once committed; the bytes
    of the files that had to be read (those whose stat differs from the one their stock recorded)."""

    fingerprints: dict[str, str] = field(default_factory=dict)
    stats: dict[str, list[int] | None] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)
    metas: dict[str, dict | None] = field(default_factory=dict)
    """Each stock's `_stock.json` as read for its stat, which its plan is made against."""


def _read_changed_inputs(layout: StoreLayout, files: Mapping[str, Path], codes: list[str]) -> BucketInputs:
    """An input file whose size and modification time are those its stock recorded at commit costs a
    `stat` (its recorded hash stands); any other is read once, hashed, and its bytes kept for parsing."""

    def read_one(code: str) -> tuple[list[int] | None, dict | None, str, bytes | None]:
        path = files[code]
        stat = file_stat(path)
        meta = read_stock_meta(layout, code)
        if _stat_vouches(meta, stat):
            known_fingerprint(path, meta["input_fingerprint"])
            return stat, meta, meta["input_fingerprint"], None
        return stat, meta, *read_input(path)

    out = BucketInputs()
    with ThreadPoolExecutor(READ_THREADS) as pool:  # each read may wait on the disk: threads overlap them
        for code, (stat, meta, fingerprint, content) in zip(codes, pool.map(read_one, codes), strict=True):
            out.stats[code], out.metas[code], out.fingerprints[code] = stat, meta, fingerprint
            if content is not None:
                out.contents[code] = content
    return out


@dataclass
class PlannedStocks:
    """Each stock's plan against what the store holds now, the bars it needs, and what its input showed."""

    bars: dict[str, pd.DataFrame] = field(default_factory=dict)
    plans: dict[str, StockPlan] = field(default_factory=dict)
    quality: dict[str, dict] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: dict[str, list[str]] = field(default_factory=dict)
    shrunk: dict[str, str] = field(default_factory=dict)


def _plan_stocks(
    layout: StoreLayout,
    registry: Registry,
    calendar: pd.DatetimeIndex,
    files: Mapping[str, Path],
    codes: list[str],
    fingerprints: Mapping[str, str],
    repairs: Mapping[str, str],
    advance=lambda: None,
    contents: Mapping[str, bytes] | None = None,
    metas: Mapping[str, dict | None] | None = None,
) -> PlannedStocks:
    """Plan every stock against its `_stock.json` (from `metas` when the caller has just read it); a
    file that lost stored days is refused (`history_shrunk`), its stored data kept."""
    need = max(history_need(i) for i in registry.all())
    published = read_calendar(layout)
    inserted = history_inserted(published, calendar)
    out = PlannedStocks()
    for code in codes:
        advance()
        loaded: BucketBars = BucketBars()

        def load(code: str = code, loaded: BucketBars = loaded) -> pd.DataFrame:
            result = load_bars(
                files,
                [code],
                calendar,
                lambda path, stock: read_stock_cached(path, stock, fingerprints[stock], (contents or {}).get(stock)),
            )
            loaded.errors.extend(result.errors)
            loaded.inputs.update(result.inputs)
            if code not in result.bars:
                raise _Unreadable(code)
            return result.bars[code]

        def dates(code: str = code, loaded: BucketBars = loaded) -> pd.DatetimeIndex:
            return loaded.inputs[code].bars.index

        try:
            meta = metas[code] if metas is not None and code in metas else read_stock_meta(layout, code)
            plan, stock_bars = plan_stock(
                layout, registry, code, meta, fingerprints[code], calendar, load, repairs.get(code), dates, published
            )
        except _Unreadable:  # skipped with its InputError; whatever the store holds stays as it is
            out.errors.extend(str(e) for e in loaded.errors)
            continue
        except HistoryShrunk as exc:  # the file lost stored days: keep them, and say so
            out.errors.append(str(InputError(files[code], code, "history_shrunk", str(exc))))
            out.shrunk[code] = str(exc)
            continue
        finally:
            for read in loaded.inputs.values():
                out.problems.extend(str(p) for p in read.problems)
                if read.ignored_columns:
                    out.ignored[read.code] = read.ignored_columns
        out.quality.update({c: dict(s.quality) for c, s in loaded.inputs.items()})
        if inserted and plan.mode == "update":  # appended rows would read shifted until the new calendar is out
            plan = StockPlan(code, "full", "calendar history inserted: rebuilt as a pending version")
        out.plans[code] = plan
        if stock_bars is not None:
            update = plan.update
            if update is not None and update.new_from is not None and not update.stale:
                stock_bars = stock_bars.iloc[tail_start(stock_bars, update.new_from, need) :]
            out.bars[code] = stock_bars
    return out


def _planned_work(settings: Settings, bucket: str, run: str, log: Log) -> Path:
    """The run's work folder, with the bars step's plans in it: a run that re-materializes a family
    (and the store) without `stock_bars`, as the UI does for a changed indicator, plans its bucket
    against the store first, so it finds the columns that are stale and the bars they need."""
    work = intermediates.bucket_dir(settings.work_path, bucket, run)
    if run and not (work / "bars.json").exists():
        log(f"{bucket}: this run did not plan the bucket (no stock_bars step): planning it against the store")
        build_bars(settings, bucket, log, run)
    return work


def build_family(settings: Settings, bucket: str, family: str, log: Log = no_log, run: str = "") -> StepReport:
    """Compute one family for the bucket's stocks and leave its columns as an intermediate."""
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    calendar = read_working_calendar(layout)
    work = _planned_work(settings, bucket, run, log)
    bars = intermediates.read_frames(intermediates.frames_path(work, "bars"))
    plans = _plans(work)
    in_full = sum(plans[code].update is None for code in bars)
    if in_full:  # a long computation is announced; a daily update's tails take less than the log event
        log(f"{bucket} {family}: computing {len(bars)} stocks ({in_full} in full)")
    result, notes = _compute_family(family, bars, calendar, plans)
    intermediates.write_frames(intermediates.frames_path(work, family), result.frames)
    errors = notes["errors"]
    nan_shares = notes["nan_share"]
    intermediates.write_notes(work / f"{family}.json", notes)
    seconds = time.perf_counter() - started
    rows = sum(len(f) for f in result.frames.values())
    failed = {e.code: str(e) for e in result.errors}
    lines = [f"{bucket} {family}: {len(result.frames)} stocks ({in_full} in full) in {seconds:.1f}s"]
    for code, frame in result.frames.items():
        outcome = f"failed: {failed[code]}" if code in failed else "ok"
        share = seconds * len(frame) / rows if rows else 0.0  # families run as one batch: time by rows
        lines.append(
            stock_line(
                bucket=bucket, stock=code, family=family, rows=len(frame), seconds=round(share, 4), outcome=outcome
            )
        )
    log("\n".join(lines))  # one message: each is a Dagster event stored in the instance
    report = StepReport(errors=errors, data_version=_frames_digest(result.frames))
    report.metadata = {
        "stocks": len(result.frames),
        "stocks_failed": len({e.code for e in result.errors}),
        "rows": rows,
        "columns": len(load_registry().all(family)),
        "nan_share_after_warmup": _mean_share(nan_shares, len(result.frames), len(load_registry().computed(family))),
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }
    return report


def _compute_family(
    family: str, bars: dict[str, pd.DataFrame], calendar: pd.DatetimeIndex, plans: Mapping[str, StockPlan]
):
    """One family's result for these stocks by their plans, and the notes the store step reads."""
    result = compute_family_update(family, bars, calendar, {code: plans[code].update for code in bars})
    notes = {
        "errors": [str(e) for e in result.errors],
        "state": result.state,
        "nan_share": _nan_shares(bars, result.frames),
    }
    return result, notes


def write_bucket(
    settings: Settings, bucket: str, families: tuple[str, ...], log: Log = no_log, run: str = ""
) -> StepReport:
    """Merge the bucket's bars and family columns and write each stock by its plan.

    Checks the free disk space first (a clear error, nothing written) and holds the bucket's lock
    while writing; a second writer of the same bucket, on any host, waits for it (`LOCK_WAIT`). Under
    the lock each plan is re-checked against the store: a stock another run wrote since the plan was
    made is planned again from what is stored now (usually: nothing left to do), so two runs at once
    never append the same days twice.
    """
    started = time.perf_counter()
    layout = StoreLayout(settings.qlib_data_path)
    registry = load_registry()
    calendar = read_working_calendar(layout)
    work = _planned_work(settings, bucket, run, log)
    bars = intermediates.read_frames(intermediates.frames_path(work, "bars"))
    notes = intermediates.read_notes(work / "bars.json")
    plans = _plans(work)
    family_notes = {f: intermediates.read_notes(work / f"{f}.json") for f in families}
    errors = list(notes.get("errors", []))
    for family in families:
        errors.extend(family_notes[family].get("errors", []))
    columns = len(registry.all()) + len(ALL_BASE_FIELDS)
    need = sum(stock_write_bytes(len(b), columns) for c, b in bars.items() if plans[c].mode != "skip")
    ensure_free_space(layout.root, need, f"write bucket {bucket}")
    version = input_version(notes.get("fingerprints", {}))
    # rebuilt stocks stay pending until the manifest publishes the calendar they were built on
    publish = not history_inserted(read_calendar(layout), calendar)
    with bucket_lock(layout.root, bucket, wait=LOCK_WAIT, on_wait=log) as lock:
        if lock.waited:
            log(f"{bucket} store: waited {lock.waited:.1f}s for the bucket lock held by {lock.waited_for}")
        family_frames = {f: intermediates.read_frames(intermediates.frames_path(work, f)) for f in families}
        stored = {code: read_stock_meta(layout, code) for code in plans}  # what each write starts from
        meanwhile = [c for c, plan in plans.items() if plan.stored != stored_digest(stored[c])]
        for code in meanwhile:
            del stored[code]  # planned again below: its write reads what is stored then
        if meanwhile:
            redone = _replan_written_meanwhile(
                settings, bucket, calendar, meanwhile, notes, plans, bars, family_frames, family_notes
            )
            log(
                f"{bucket} store: {len(meanwhile)} stocks were written by another run since this run planned them; "
                f"planned again under the lock: {len(meanwhile) - redone} already current (nothing to do), "
                f"{redone} recomputed"
            )
        written: list[StockWrite] = []
        failed: list[str] = []
        progress = Progress(f"{bucket} store", len(bars), log)

        def write_one(code: str) -> tuple[StockWrite | Exception, float]:
            stock_started = time.perf_counter()
            frames = {f: frames_of[code] for f, frames_of in family_frames.items() if code in frames_of}
            notes_of = {f: {k: v.get(code, {}) for k, v in family_notes[f].items() if k != "errors"} for f in families}
            state = {k: v for n in notes_of.values() for k, v in n.get("state", {}).items()}
            nan_share = {k: v for n in notes_of.values() for k, v in n.get("nan_share", {}).items()}
            quality = {"input": notes.get("quality", {}).get(code, {}), "nan_share": nan_share}
            fingerprint = notes["fingerprints"][code]
            input_stat = notes.get("input_stats", {}).get(code)
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
                    input_stat=input_stat,
                    current=stored.get(code),
                )
            except (ValueError, OSError) as exc:
                outcome = exc
            return outcome, time.perf_counter() - stock_started

        # Threads, because creating a file costs a disk round trip that several writers overlap (each
        # stock has its own folder); the outcomes are reported here, in the bucket's order.
        if len(calendar):
            # pandas builds an index's lookup table lazily, and not thread-safely: threads that build it
            # at once can raise KeyError for a date it holds (pandas#21150, #28439). Build it here, once.
            calendar.get_loc(calendar[0])
        damaged: dict[str, str] = {}

        def settle(code: str, outcome: StockWrite | Exception, seconds: float) -> None:
            done = 1
            if isinstance(outcome, StockFilesDamaged) and code not in damaged:
                damaged[code] = f"damaged store files ({outcome})"
                status, done = f"rebuilding: {outcome}", 0  # counted once rebuilt
            elif isinstance(outcome, Exception):
                failed.append(code)
                errors.append(f"{code} store: {outcome}")
                status = f"failed: {outcome}"
            else:
                written.append(outcome)
                status = "ok"
            mode, seconds = plans[code].mode, round(seconds, 4)
            line = stock_line(bucket=bucket, stock=code, family="store", mode=mode, outcome=status, seconds=seconds)
            progress.advance(done, lines=[line])

        with ThreadPoolExecutor(WRITER_THREADS) as pool:
            for code, (outcome, seconds) in zip(bars, pool.map(write_one, bars), strict=True):
                settle(code, outcome, seconds)
        if damaged:  # found by an append: rebuilt in full now, as the planner does with damage it sees
            log(f"{bucket} store: {len(damaged)} stocks have damaged files; rebuilding them in full")
            for code in damaged:
                stored.pop(code, None)
            _replan_written_meanwhile(
                settings, bucket, calendar, list(damaged), notes, plans, bars, family_frames, family_notes, damaged
            )
            for code, reason in damaged.items():
                if code in bars:
                    settle(code, *write_one(code))
                else:
                    failed.append(code)
                    errors.append(f"{code} store: {reason}, and it could not be planned again: see the bars step")
        # a stock whose write failed is judged whole: its checks must see what the failure left
        record_written(work, {**{c: WrittenStock() for c in failed}, **{w.code: w.written for w in written}})
        if any(w.appended.fields for w in written):  # a run that appended nothing leaves the last record
            record_appended(settings.work_path, bucket, {w.code: w.appended for w in written})
        _record_input_stats(layout, plans, notes)
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
        "stocks_failed": len(failed),
        "rows_written": sum(w.rows_written for w in written),
        "columns": max((w.columns for w in written), default=0),
        "first_date": min((w.first_date for w in written), default=None),
        "last_date": max((w.last_date for w in written), default=None),
        "missing_columns": sum(len(w.missing_columns) for w in written),
        "stocks_written_by_another_run": len(meanwhile),
        "lock_waited_seconds": round(lock.waited, 1),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if run and not failed:  # the run's frames are spent; its notes stay for the summary and audits
        for path in work.glob(f"*{intermediates.FRAMES_SUFFIX}"):
            path.unlink(missing_ok=True)
    return report


def _record_input_stats(layout: StoreLayout, plans: Mapping[str, StockPlan], notes: dict) -> None:
    """Record the input stat of each unchanged stock whose record lacks it (a store written before
    stats were recorded, or a file touched but not changed), so the next run costs it a `stat`
    instead of a hash; only `_stock.json` is rewritten, atomically."""
    stats, fingerprints = notes.get("input_stats", {}), notes.get("fingerprints", {})
    for code, plan in plans.items():
        stat = stats.get(code)
        if plan.mode != "skip" or stat is None:
            continue
        meta = read_stock_meta(layout, code)
        if meta is not None and meta.get("input_stat") != stat and meta.get("input_fingerprint") == fingerprints[code]:
            update_stock(layout, code, {}, {}, {"input_stat": stat}, meta)


def _replan_written_meanwhile(
    settings: Settings,
    bucket: str,
    calendar: pd.DatetimeIndex,
    codes: list[str],
    notes: dict,
    plans: dict[str, StockPlan],
    bars: dict[str, pd.DataFrame],
    family_frames: dict[str, dict[str, pd.DataFrame]],
    family_notes: dict[str, dict],
    repairs: Mapping[str, str] | None = None,
) -> int:
    """Plan `codes` again against what is stored now and recompute what they need, in place; how many
    still needed a write. Called under the bucket lock, so what is stored cannot change meanwhile.
    `repairs` names stocks to rebuild in full, with why, besides those a check marked."""
    layout = StoreLayout(settings.qlib_data_path)
    registry = load_registry()
    files = scan_folder(settings.parquet_data_path).files
    present = [code for code in codes if code in files and code in notes["fingerprints"]]
    fingerprints = {code: notes["fingerprints"][code] for code in present}
    repairs = {**marked_for_repair(layout, bucket), **(repairs or {})}
    replanned = _plan_stocks(layout, registry, calendar, files, present, fingerprints, repairs)
    new_bars, new_plans, quality = replanned.bars, replanned.plans, replanned.quality
    for code in codes:
        bars.pop(code, None)
        plans.pop(code, None)
        for frames in family_frames.values():
            frames.pop(code, None)
    plans.update(new_plans)
    bars.update(new_bars)
    notes.setdefault("quality", {}).update(quality)
    for family in family_frames:
        result, extra = _compute_family(family, new_bars, calendar, plans)
        family_frames[family].update(result.frames)
        for key in ("state", "nan_share"):
            family_notes[family].setdefault(key, {}).update(extra[key])
        family_notes[family].setdefault("errors", []).extend(extra["errors"])
    return len(new_bars)


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


def _frames_digest(frames: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha1()  # over the raw bytes: pandas' object hashing goes value by value
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


def build_in_process(
    settings: Settings, buckets: Iterable[str] | None = None, families: Sequence[str] = FAMILIES
) -> dict[str, dict]:
    """Every step of a build in this process, in the graph's order and without Dagster (benchmarks,
    tests); returns each bucket's store-step metadata."""
    build_calendar(settings)
    reports = {}
    for bucket in buckets if buckets is not None else bucket_keys(settings.batches):
        build_bars(settings, bucket)
        for family in families:
            build_family(settings, bucket, family)
        reports[bucket] = write_bucket(settings, bucket, families).metadata
    build_manifest(settings)
    return reports
