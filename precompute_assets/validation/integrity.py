"""Integrity: every stored file is the one its stock's commit recorded, and stocks sit right on the calendar.

Each commit records `files: {field: [size, crc32]}`, `start_index`, `rows` and the first and last date
in `_stock.json`. A truncated, extended, overwritten, missing or stray bin file, an unreadable
`_stock.json`, or a calendar that no longer puts the stock's first and last row on its recorded dates
is damage that a re-materialization of the bucket repairs.

`stock_problems` is the plain form (backups, restores, deciding what to rebuild); `validate_integrity`
runs the same findings through Great Expectations for the asset check: a row per damaged item, and one
per stock for all that is whole (`files_checked` counts every item inspected).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.build.written import WrittenStock
from precompute_assets.settings import Settings
from precompute_assets.store.bin_checksums import check_files
from precompute_assets.store.bin_columns import MISSING, Paths
from precompute_assets.store.calendar import history_inserted, read_calendar, read_working_calendar
from precompute_assets.store.layout import BIN_SUFFIX, META_FILE, StoreLayout
from precompute_assets.store.stock_commit import bin_entries, read_stock_meta
from precompute_assets.validation.bucket_scope import BucketScope, StoreListing
from precompute_assets.validation.gx_runner import CODE, COLUMN, Rule
from precompute_assets.validation.judging import FrameRules, Inspection, judge
from precompute_assets.validation.result import ValidationResult

PUBLISHED, WORKING = "calendars/day.txt", "working calendar"
PROBLEMS = {
    "meta_ok": f"{META_FILE} missing or unreadable",
    "listed": f"bin file not recorded in {META_FILE}",
    "exists": f"file recorded in {META_FILE} is missing",
    "size_ok": f"size differs from {META_FILE} (truncated or extended)",
    "crc_ok": f"checksum differs from {META_FILE} (overwritten)",
    "first_ok": "calendar mismatch: the first row is not on the recorded first date",
    "last_ok": "calendar mismatch: the last row is not on the recorded last date",
}
FLAGS = list(PROBLEMS)
WHOLE = "*"
"""The column of a stock's row that stands for its whole files, metadata and calendar places."""


@dataclass(frozen=True)
class Finding:
    """One inspected item of a stock (a file, its metadata, or its place on a calendar) and what fails."""

    code: str
    column: str
    failed: tuple[str, ...] = ()
    detail: str = ""

    def row(self) -> tuple:
        return (self.code, self.column, *(flag not in self.failed for flag in FLAGS), self.detail)

    def problems(self) -> list[str]:
        return [
            f"{self.column}: {PROBLEMS[flag]}" + (f" ({self.detail})" if self.detail else "") for flag in self.failed
        ]


@dataclass
class StoreCalendars:
    """The published calendar and the working one; `ahead` when an update has appended unpublished days."""

    published: pd.DatetimeIndex
    working: pd.DatetimeIndex

    def __post_init__(self) -> None:
        self.ahead = len(self.working) > len(self.published) and self.working[: len(self.published)].equals(
            self.published
        )

    @classmethod
    def read(cls, layout: StoreLayout) -> StoreCalendars:
        return cls(read_calendar(layout), read_working_calendar(layout))

    def labelled(self, pending: bool = False) -> dict[str, pd.DatetimeIndex]:
        """The calendars a stock must sit on. With inserted history, a pending version (rebuilt onto the
        working calendar, not yet readable) sits on the working one; a current version on the published
        one, what readers use (one not on the working calendar is a holdout the manifest reports)."""
        same = self.working.equals(self.published)
        if same:
            return {PUBLISHED: self.published}
        if pending:
            return {WORKING: self.working}
        if history_inserted(self.published, self.working):
            return {PUBLISHED: self.published}
        return {PUBLISHED: self.published, WORKING: self.working}


def inspect_stock(
    layout: StoreLayout,
    code: str,
    meta: dict | None,
    calendars: StoreCalendars,
    *,
    verify_crc: bool = True,
    appended: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[list[Finding], int]:
    """What fails of everything checkable about one stored stock with the record `meta` (its
    `_stock.json`, None when unreadable), and how many items were inspected; `verify_crc=False` only
    stats the files (cheap).

    `appended` (field -> size and crc32 before a run's append) verifies those files by their appended
    bytes alone: the recorded crc32 must continue the one before the append over them."""
    if meta is None or not isinstance(meta.get("files"), dict):
        return [Finding(code, META_FILE, ("meta_ok",))], 1
    try:
        entries = bin_entries(layout, code)
    except (FileNotFoundError, NotADirectoryError):
        entries = {}
    if verify_crc:
        findings, inspected = _verify_files(code, meta["files"], entries, appended or {})
    else:
        files = meta["files"].items()
        sized = [_inspect_size(code, name, recorded, entries.get(name.lower())) for name, recorded in files]
        findings, inspected = [finding for finding in sized if finding.failed], len(sized)
    for entry in sorted((e for name, e in entries.items() if name not in meta["files"]), key=lambda e: e.name):
        findings.append(Finding(code, entry.name[: -len(BIN_SUFFIX)], ("listed",), f"{entry.stat().st_size} bytes"))
        inspected += 1
    for label, dates in calendars.labelled(pending=layout.pending and layout.pending_link(code).is_symlink()).items():
        placed = _inspect_calendar(code, meta, label, dates, calendars.ahead and label == PUBLISHED)
        if placed.failed:
            findings.append(placed)
        inspected += 1
    return findings, inspected


def stock_problems(
    layout: StoreLayout, code: str, calendars: StoreCalendars | None = None, *, verify_crc: bool = True
) -> list[str]:
    """What is damaged in one stored stock, as sentences (empty when it is whole)."""
    calendars = calendars or StoreCalendars.read(layout)
    findings, _ = inspect_stock(layout, code, read_stock_meta(layout, code), calendars, verify_crc=verify_crc)
    return [problem for finding in findings for problem in finding.problems()]


def damaged_stocks(layout: StoreLayout, codes: Iterable[str], *, verify_crc: bool = False) -> dict[str, list[str]]:
    """The stocks among `codes` whose stored files are damaged, with why (cheap by default: sizes only)."""
    calendars = StoreCalendars.read(layout)
    found = {code: stock_problems(layout, code, calendars, verify_crc=verify_crc) for code in codes}
    return {code: problems for code, problems in found.items() if problems}


def validate_integrity(
    settings: Settings, bucket: str | None, written: dict[str, WrittenStock] | None = None
) -> ValidationResult:
    """Every stored stock of the bucket, or with `written` the files and appended bytes a run wrote."""
    return next(validate_integrity_buckets(settings, {bucket: written}))


def validate_integrity_buckets(
    settings: Settings, written: Mapping[str | None, dict[str, WrittenStock] | None]
) -> Iterator[ValidationResult]:
    """`validate_integrity` of each bucket in `written` (in its order), judged together by GX."""
    import great_expectations as gx

    listing = StoreListing(settings)
    calendars = StoreCalendars.read(listing.layout)
    rules = [
        Rule(gx.expectations.ExpectColumnValuesToBeInSet(column=flag, value_set=[True]), problem)
        for flag, problem in PROBLEMS.items()
    ]
    inspections = (_inspect_bucket(BucketScope(listing, bucket, w), calendars) for bucket, w in written.items())
    return judge("integrity", [FrameRules("files", rules, [CODE, COLUMN], ["detail"])], inspections)


def _inspect_bucket(scope: BucketScope, calendars: StoreCalendars) -> Inspection:
    """One row per damaged item and one per stock standing for its items that are whole: GX names
    every damaged file, and a bucket of whole stocks costs it a row per stock, not per file."""
    rows, files = [], 0
    for code in scope.stored:
        appended = scope.written[code].appended if scope.written else None
        findings, inspected = inspect_stock(scope.layout, code, scope.meta(code), calendars, appended=appended)
        files += inspected
        rows.append(Finding(code, WHOLE).row())
        rows.extend(finding.row() for finding in findings)
    checked = {"stocks_checked": len(scope.stored), "files_checked": files, "calendar_days": len(calendars.working)}
    return Inspection(scope.name, {"files": pd.DataFrame(rows, columns=[CODE, COLUMN, *FLAGS, "detail"])}, checked)


def _verify_files(
    code: str, recorded: Mapping[str, list[int]], entries: Mapping[str, os.DirEntry], appended: Mapping[str, tuple]
) -> tuple[list[Finding], int]:
    """Each recorded file's size and crc32, all of a stock's files in one compiled pass: a file a run
    appended to is verified by its appended bytes alone (`appended`: its size and crc32 before), its
    recorded crc32 continuing the one before over them. Returns the failing files and how many were
    checked: a stock's few hundred whole files are compared as arrays, with no finding for each."""
    names = list(recorded)
    size, crc = np.array([recorded[name] for name in names], dtype=np.int64).reshape(len(names), 2).T
    listed = np.array([i for i, name in enumerate(names) if name.lower() in entries], dtype=np.int64)
    start, before = np.zeros(len(names), dtype=np.int64), np.zeros(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        if name in appended and appended[name][0] <= size[i]:
            start[i], before[i] = appended[name]
    paths = Paths.of([entries[names[i].lower()].path for i in listed.tolist()])
    checked = check_files(paths, size[listed], start[listed], before[listed])
    actual, actual_crc = np.full(len(names), MISSING, dtype=np.int64), np.full(len(names), -1, dtype=np.int64)
    actual[listed], actual_crc[listed] = checked.size, checked.crc
    findings = []
    for i in np.flatnonzero((actual != size) | (actual_crc != crc)).tolist():
        name, found = names[i], int(actual[i])
        if found == MISSING:
            findings.append(Finding(code, name, ("exists",), f"{name.lower()}{BIN_SUFFIX}"))
        elif found != size[i]:
            findings.append(Finding(code, name, ("size_ok",), f"recorded {size[i]} bytes, found {found}"))
        else:
            where = f"bytes {start[i]}-{found} appended by this run" if start[i] else f"{found} bytes"
            findings.append(Finding(code, name, ("crc_ok",), where))
    return findings, len(names)


def _inspect_size(code: str, name: str, recorded: list[int], entry: os.DirEntry | None) -> Finding:
    """A file's size against the recorded one (the cheap check, no read)."""
    try:
        actual = entry.stat().st_size if entry is not None else None
    except FileNotFoundError:  # a dangling link
        actual = None
    if actual is None:
        return Finding(code, name, ("exists",), f"{name.lower()}{BIN_SUFFIX}")
    if actual != recorded[0]:
        return Finding(code, name, ("size_ok",), f"recorded {recorded[0]} bytes, found {actual}")
    return Finding(code, name)


def _inspect_calendar(code: str, meta: dict, label: str, calendar: pd.DatetimeIndex, pending_tail: bool) -> Finding:
    """The recorded first/last dates against `calendar` at start_index and start_index + rows - 1.

    With `pending_tail` (the working calendar runs ahead and the published one is its prefix), rows
    past the published calendar are not published yet: the working calendar must hold them.
    """
    start, rows = int(meta.get("start_index", -1)), int(meta.get("rows", 0))
    failed, details = [], []
    for flag, day, recorded in (
        ("first_ok", start, meta.get("first_date")),
        ("last_ok", start + rows - 1, meta.get("last_date")),
    ):
        if pending_tail and day >= len(calendar):
            continue
        found = f"{calendar[day]:%Y-%m-%d}" if 0 <= day < len(calendar) else "outside the calendar"
        if found != str(recorded):
            failed.append(flag)
            details.append(f"day {day} is {found}, recorded {recorded}")
    return Finding(code, label, tuple(failed), "; ".join(details))
