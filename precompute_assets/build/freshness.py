"""Is the store current for its input? Per bucket (what to run) and per stock (what a reader gets).

`make run`, the sensor and the schedule all ask `stale_buckets`; readers ask `store_status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from precompute_assets.build.bucket_state import marked_for_repair, stale_reason
from precompute_assets.build.buckets import bucket_keys, codes_in_bucket
from precompute_assets.build.pipeline import file_fingerprints, input_version
from precompute_assets.input.parquet import scan_folder
from precompute_assets.settings import Settings
from precompute_assets.store.calendar import calendar_fingerprint, read_calendar, read_working_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json, stock_metas
from precompute_assets.store.stock_commit import files_match_meta, read_stock_meta, stored_codes


@dataclass(frozen=True)
class StaleBucket:
    """A bucket to run, why, and a key naming this exact state (a sensor requests each key once)."""

    bucket: str
    reason: str
    input_version: str
    run_key: str


def stale_buckets(settings: Settings) -> dict[str, StaleBucket]:
    """Buckets whose input, indicator definitions, calendar history or stored files call for a run.

    Stored files are only inspected in buckets that would otherwise be skipped: a bucket that runs
    anyway checks each stock's files itself (`update_plan.plan_stock`), and on a daily update every
    bucket runs, so listing every stock's folder here would only repeat that work.
    """
    layout = StoreLayout(settings.qlib_data_path)
    calendar = read_working_calendar(layout)
    files = scan_folder(settings.parquet_data_path).files
    stored = stored_codes(layout)
    stale = {}
    calendar_print = calendar_fingerprint(calendar)
    for bucket in bucket_keys(settings.batches):
        version = input_version(file_fingerprints(files, codes_in_bucket(files, bucket, settings.batches)))
        reason = "damaged store files" if marked_for_repair(layout, bucket) else None
        reason = reason or stale_reason(layout, bucket, version, calendar)
        if reason is None and _damaged(layout, codes_in_bucket(stored, bucket, settings.batches)):
            reason = "damaged store files"
        if reason:
            key = f"{bucket}:{version}:{calendar_print}:{reason.replace(' ', '_')}"
            stale[bucket] = StaleBucket(bucket, reason, version, key)
    return stale


def _damaged(layout: StoreLayout, codes: list[str]) -> bool:
    """Whether any of these stored stocks has a file missing or of another size than recorded."""
    for code in codes:
        meta = read_stock_meta(layout, code)
        if meta is not None and not files_match_meta(layout, code, meta):
            return True
    return False


@dataclass
class StoreStatus:
    """What a reader should know: is the store current, and which stocks are behind their input."""

    current: bool
    built_from: str | None
    input_version: str
    behind: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    delisted: list[str] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)


def store_status(settings: Settings) -> StoreStatus:
    """Compare the store with its input stock by stock (content hashes, not timestamps)."""
    layout = StoreLayout(settings.qlib_data_path)
    files = scan_folder(settings.parquet_data_path).files
    fingerprints = file_fingerprints(files, list(files))
    metas = stock_metas(layout)
    published = read_calendar(layout)
    last_published = f"{published[-1]:%Y-%m-%d}" if len(published) else ""
    status = StoreStatus(
        current=False,
        built_from=read_json(layout.data_version_path).get("input_version"),
        input_version=input_version(fingerprints),
        behind=sorted(c for c, m in metas.items() if c in files and m.get("input_fingerprint") != fingerprints[c]),
        missing=sorted(set(files) - set(metas)),
        delisted=sorted(set(metas) - set(files)),
        unpublished=sorted(c for c, m in metas.items() if m["last_date"] > last_published),
    )
    status.current = status.built_from == status.input_version and not (
        status.behind or status.missing or status.unpublished
    )
    return status
