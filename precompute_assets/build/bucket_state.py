"""What each bucket was last built from, so unchanged buckets are skipped (one file per bucket).

A bucket is current when its input version and the registry's code version are those recorded, and
the calendar it was aligned to is still a prefix of the store's calendar (appended days do not move
any stored row; inserted days do).
"""

from __future__ import annotations

import hashlib

import pandas as pd

from precompute_assets.indicators.catalog import family_code_version
from precompute_assets.indicators.registry import FAMILIES
from precompute_assets.store.atomic import write_json_atomic
from precompute_assets.store.calendar import calendar_fingerprint
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json


def registry_code_version() -> str:
    text = ",".join(family_code_version(family) for family in FAMILIES)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def record_bucket(layout: StoreLayout, bucket: str, input_version: str, calendar: pd.DatetimeIndex) -> None:
    state = {
        "input_version": input_version,
        "code_version": registry_code_version(),
        "calendar_days": len(calendar),
        "calendar_fingerprint": calendar_fingerprint(calendar),
    }
    write_json_atomic(layout.bucket_state_path(bucket), state)


def record_input_problems(
    layout: StoreLayout,
    bucket: str,
    skipped: list[str],
    problems: list[str],
    ignored: dict[str, list[str]],
    shrunk: dict[str, str],
) -> None:
    """The input problems the bucket's build found: a bucket is not rebuilt while its input is
    unchanged, so this is where a later run's summary finds the problems still present, and where
    the checks learn which readable files the store deliberately does not follow (`shrunk`: code ->
    which stored dates the file lacks)."""
    content = {"skipped": skipped, "problems": problems, "ignored_columns": ignored, "history_shrunk": shrunk}
    if read_json(layout.input_problems_path(bucket)) != content:
        write_json_atomic(layout.input_problems_path(bucket), content)


def input_problems(layout: StoreLayout, buckets: list[str]) -> dict[str, list]:
    """Every bucket's recorded input problems together: skipped files, dropped rows, ignored columns."""
    found: dict = {"skipped": [], "problems": [], "ignored_columns": {}, "history_shrunk": {}}
    for bucket in buckets:
        recorded = read_json(layout.input_problems_path(bucket))
        found["skipped"] += recorded.get("skipped", [])
        found["problems"] += recorded.get("problems", [])
        found["ignored_columns"].update(recorded.get("ignored_columns", {}))
        found["history_shrunk"].update(recorded.get("history_shrunk", {}))
    return found


INPUT_CHANGED = "input changed"
"""The reason of a bucket whose only change is its input files (a daily update, or restated history)."""


def stale_reason(layout: StoreLayout, bucket: str, input_version: str, calendar: pd.DatetimeIndex) -> str | None:
    """Why the bucket must be rebuilt, or None when the store already holds exactly its input."""
    state = read_json(layout.bucket_state_path(bucket))
    if not state:
        return "never built"
    if state["input_version"] != input_version:
        return INPUT_CHANGED
    if state["code_version"] != registry_code_version():
        return "indicator definitions changed"
    days = state["calendar_days"]
    if days > len(calendar) or calendar_fingerprint(calendar[:days]) != state["calendar_fingerprint"]:
        return "calendar history changed"
    return None


def mark_for_repair(layout: StoreLayout, bucket: str, codes: list[str], reason: str) -> None:
    """Record stocks a check found damaged; the next run of the bucket rebuilds them in full."""
    marks = read_json(layout.repair_path(bucket))
    marks.update({code: reason for code in codes})
    write_json_atomic(layout.repair_path(bucket), marks)


def marked_for_repair(layout: StoreLayout, bucket: str) -> dict[str, str]:
    return read_json(layout.repair_path(bucket))


def clear_repairs(layout: StoreLayout, bucket: str, codes: list[str]) -> None:
    marks = read_json(layout.repair_path(bucket))
    if any(code in marks for code in codes):
        remaining = {code: reason for code, reason in marks.items() if code not in codes}
        write_json_atomic(layout.repair_path(bucket), remaining)
