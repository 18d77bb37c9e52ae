"""Atomic per-stock writes: all of a stock's files change together or not at all.

Each write builds a complete new folder under `.stock_versions/<code>/` and then swaps the
`features/<code>` symlink to it with one `rename`, which POSIX makes atomic; the previous version is
kept one generation so readers that opened it keep a whole stock. A crash at any point leaves either
the old link (old version, whole) or the new one (new version, whole), plus a stray temporary folder
that the next commit or the cleanup removes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import numpy as np
import pandas as pd

from precompute_assets.store.bin_appends import APPENDED, MISSING, SHORT_WRITE, append_files
from precompute_assets.store.bin_file import encode
from precompute_assets.store.layout import BIN_SUFFIX, META_FILE, PENDING, StoreLayout


def align_to_calendar(frame: pd.DataFrame, calendar: pd.DatetimeIndex) -> tuple[int, pd.DataFrame]:
    """Place a stock's rows on the global calendar from its first to its last date.

    A calendar day inside that span with no row becomes a NaN row (never a shifted neighbour).
    """
    if frame.empty:
        raise ValueError("cannot align an empty frame")
    start = calendar.get_loc(frame.index[0])
    end = calendar.get_loc(frame.index[-1])
    span = calendar[start : end + 1]
    unknown = frame.index.difference(span)
    if len(unknown):
        raise ValueError(f"dates {list(unknown[:3])} are not in the store calendar; materialize the calendar first")
    return int(start), frame.reindex(span)


def commit_stock(
    layout: StoreLayout,
    code: str,
    start_index: int,
    columns: Mapping[str, np.ndarray],
    meta: Mapping[str, object],
    publish: bool = True,
) -> Path:
    """Write every field of one stock as a new version and make it current atomically.

    `publish=False` leaves the current version as it is and records the new one as pending: a stock
    rebuilt onto a calendar with inserted history would read shifted against the published calendar,
    so it becomes current only with that calendar (`publish_pending`).
    """
    code_dir = layout.versions_dir / code.lower()
    code_dir.mkdir(parents=True, exist_ok=True)
    token = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    staging = code_dir / f"{token}.tmp"
    staging.mkdir()
    checksums: dict[str, list[int]] = {}
    for field, values in columns.items():
        payload = encode(start_index, values)
        (staging / f"{field.lower()}{BIN_SUFFIX}").write_bytes(payload)
        checksums[field.lower()] = [len(payload), zlib.crc32(payload)]
    full_meta = {**meta, "code": code, "start_index": start_index, "files": checksums}
    (staging / META_FILE).write_text(meta_text(full_meta))
    version = code_dir / token
    os.rename(staging, version)
    if publish:
        _point_link(layout, code, version)
        _clear_pending(layout, code)
        _drop_old_versions(code_dir, keep={version.name})
    else:
        tmp_link = code_dir / f".{uuid.uuid4().hex}.lnk"
        os.symlink(version.name, tmp_link)
        os.replace(tmp_link, layout.pending_link(code))
        current = layout.stock_dir(code)
        keep = {version.name} | ({current.resolve().name} if current.is_symlink() else set())
        _drop_old_versions(code_dir, keep=keep)
    return version


def pending_codes(layout: StoreLayout) -> list[str]:
    """Stocks with a version waiting for its calendar to be published (upper case)."""
    if not layout.versions_dir.is_dir():
        return []
    # string paths: every check of every bucket lists the store, and a Path per stock cost most of it
    with os.scandir(layout.versions_dir) as entries:
        return sorted(e.name.upper() for e in entries if os.path.islink(os.path.join(e.path, PENDING)))


def publish_pending(layout: StoreLayout, codes: list[str]) -> None:
    """Make each stock's pending version current (one atomic link swap per stock)."""
    for code in codes:
        link = layout.pending_link(code)
        _point_link(layout, code, link.resolve())
        _clear_pending(layout, code)


def _clear_pending(layout: StoreLayout, code: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.pending_link(code))


@dataclass
class Appended:
    """What `update_stock` appended: the version folder and, per field, (the file's size before, its
    modification time right after, the bytes appended)."""

    directory: str = ""
    fields: dict[str, tuple[int, int, bytes]] = dataclass_field(default_factory=dict)

    def tail(self, name: str, size_before: int, size: int, mtime_ns: int) -> bytes | None:
        """The bytes appended to `name` if its file is now exactly as this append left it: of that size
        before, those bytes longer now, and not modified since (the caller checks it is the same file)."""
        entry = self.fields.get(name)
        if entry is None or entry[0] != size_before or entry[1] != mtime_ns or size_before + len(entry[2]) != size:
            return None
        return entry[2]


class StockFilesDamaged(ValueError):
    """A stock's file is missing or not of the size its `_stock.json` records: rebuild the stock in full."""


def update_stock(
    layout: StoreLayout,
    code: str,
    appends: Mapping[str, np.ndarray],
    replacements: Mapping[str, np.ndarray],
    meta: Mapping[str, object],
    current: Mapping[str, object] | None = None,
) -> Appended:
    """Append new days to a stock's current files in place and replace whole columns; `_stock.json` last.

    `current` is the stock's `_stock.json` when the caller has just read it. The appended rows lie
    past the published calendar until the manifest step publishes it, so neither Qlib nor the
    project's reader sees a half-appended stock. A crash leaves files longer than `_stock.json`
    records, which the next run finds and rebuilds in full.

    Each append checks its file on its own descriptor after writing (one `statx`, no path lookup: the
    size must be the recorded one plus the bytes written, and the modification time goes to the
    backup), and an update that appends also checks the recorded files it neither appends to nor
    replaces, so the planner need not stat a stock it plans to append to. A file missing or of
    another size than recorded raises `StockFilesDamaged` and leaves `_stock.json` as it was (files
    may hold the append: the caller rebuilds the stock in full, as a new version, so a damaged
    version is never written to again). Returns what was appended, for the backup.
    """
    current = current if current is not None else read_stock_meta(layout, code)
    if current is None:
        raise ValueError(f"{code}: no stored version to update")
    directory = version_dir(layout, code)
    files = dict(current["files"])  # type: ignore[call-overload]
    appended = Appended(directory)
    if appends:
        _check_sizes(directory, {f: files[f][0] for f in files if f not in appends and f not in replacements})
        _append(directory, appends, files, appended)
    for field, values in replacements.items():
        payload = encode(current["start_index"], values)  # type: ignore[arg-type]
        tmp = f"{directory}/.{field}.{uuid.uuid4().hex}.tmp"
        Path(tmp).write_bytes(payload)
        os.replace(tmp, f"{directory}/{field}{BIN_SUFFIX}")
        files[field] = [len(payload), zlib.crc32(payload)]
    merged = {**current, **meta, "files": files}
    tmp = f"{directory}/.{META_FILE}.{uuid.uuid4().hex}.tmp"
    Path(tmp).write_text(meta_text(merged))
    os.replace(tmp, f"{directory}/{META_FILE}")
    return appended


def _append(directory: str, appends: Mapping[str, np.ndarray], files: dict[str, list[int]], appended: Appended) -> None:
    """Append each field's values to its file (`bin_appends`, one compiled pass over the stock's
    files), updating `files` (size, crc32) and `appended`; raise `StockFilesDamaged` for a file
    missing or not of its recorded size before the append."""
    fields = list(appends)
    payloads = np.stack([np.asarray(appends[f], dtype="<f4") for f in fields]).view(np.uint8)
    sizes = np.array([files[f][0] for f in fields], dtype=np.int64)
    done = append_files(
        [f"{directory}/{f}{BIN_SUFFIX}" for f in fields], payloads, sizes, [files[f][1] for f in fields]
    )
    bad = np.flatnonzero(done.status != APPENDED)
    if bad.size:
        at = int(bad[0])
        field, status = fields[at], int(done.status[at])
        if status == MISSING:
            raise StockFilesDamaged(f"{field}: {field}{BIN_SUFFIX} is missing")
        if status == SHORT_WRITE:
            raise OSError(f"{field}: short write to {directory}/{field}{BIN_SUFFIX}")
        found = os.stat(f"{directory}/{field}{BIN_SUFFIX}").st_size - payloads.shape[1]
        raise StockFilesDamaged(f"{field}: recorded {sizes[at]} bytes, found {found}")
    width = payloads.shape[1]
    for field, size, mtime, crc, row in zip(
        fields, sizes.tolist(), done.mtime_ns.tolist(), done.crc.tolist(), payloads, strict=True
    ):
        appended.fields[field] = (size, mtime, row.tobytes())
        files[field] = [size + width, crc]


def _check_sizes(directory: str, sizes: Mapping[str, int]) -> None:
    """Raise `StockFilesDamaged` unless each field's file in `directory` has the size given."""
    for field, size in sizes.items():
        try:
            found = os.stat(f"{directory}/{field}{BIN_SUFFIX}").st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise StockFilesDamaged(f"{field}: {field}{BIN_SUFFIX} is missing") from exc
        if found != size:
            raise StockFilesDamaged(f"{field}: recorded {size} bytes, found {found}")


def version_dir(layout: StoreLayout, code: str) -> str:
    """The stock's current version folder as a real path. The link's target is read once (`readlink`)
    and joined to its folder's real path, where `realpath` looks up every component in Python; a plain
    folder (written by another tool) is its own real path."""
    link = layout.stock_dir(code)
    try:
        target = os.readlink(link)
    except OSError:  # not a link, or none
        return os.path.realpath(link)
    return os.path.normpath(os.path.join(_real_folder(str(link.parent)), target))


@functools.lru_cache(maxsize=64)
def _real_folder(path: str) -> str:
    return os.path.realpath(path)


def meta_text(meta: Mapping[str, object]) -> str:
    """`_stock.json`'s text: compact, because an indented dump runs json's pure-Python encoder, the
    largest cost of a stock's daily append."""
    return json.dumps(meta, separators=(",", ":"), default=str)


def sits_on_calendar(meta: Mapping[str, object], calendar: pd.DatetimeIndex) -> bool:
    """Whether the stock's recorded first and last dates are where its rows fall on `calendar`."""
    start, rows = int(meta["start_index"]), int(meta["rows"])  # type: ignore[call-overload]
    if start + rows > len(calendar):
        return False
    return (
        f"{calendar[start]:%Y-%m-%d}" == meta["first_date"]
        and f"{calendar[start + rows - 1]:%Y-%m-%d}" == meta["last_date"]
    )


def files_match_meta(layout: StoreLayout, code: str, meta: Mapping[str, object]) -> bool:
    """Every file `_stock.json` lists exists with the recorded size (a cheap check; the crc is for audits)."""
    try:
        sizes = {field: entry.stat().st_size for field, entry in bin_entries(layout, code).items()}
    except (FileNotFoundError, NotADirectoryError):
        return False
    return all(sizes.get(field) == size for field, (size, _crc) in meta["files"].items())  # type: ignore[union-attr]


def bin_entries(layout: StoreLayout, code: str) -> dict[str, os.DirEntry]:
    """The stock's bin files by field name, from one listing of its folder (a stat per file through
    pathlib cost more than the check itself); raises as `os.scandir` does when there is no folder.
    The entries' paths are in the real version folder, so opening each does not follow the link."""
    with os.scandir(version_dir(layout, code)) as entries:
        return {e.name[: -len(BIN_SUFFIX)]: e for e in entries if e.name.endswith(BIN_SUFFIX)}


def read_stock_meta(layout: StoreLayout, code: str) -> dict | None:
    path = layout.stock_meta_path(code)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def stored_codes(layout: StoreLayout) -> list[str]:
    """Codes with a current version in the store (upper case); in the pending view, also those whose
    only version is pending."""
    current = (
        {p.name.upper() for p in layout.features_dir.iterdir() if not p.name.startswith(".")}
        if layout.features_dir.is_dir()
        else set()
    )
    return sorted(current | set(pending_codes(layout))) if layout.pending else sorted(current)


def _point_link(layout: StoreLayout, code: str, version: Path) -> None:
    layout.features_dir.mkdir(parents=True, exist_ok=True)
    link = layout.stock_dir(code)
    if link.is_dir() and not link.is_symlink():
        # A plain folder (written by another tool): keep it as a version so the swap stays atomic.
        legacy = version.parent / f"legacy-{uuid.uuid4().hex[:6]}"
        os.rename(link, legacy)
    tmp_link = layout.features_dir / f".{code.lower()}.{uuid.uuid4().hex}.lnk"
    os.symlink(os.path.relpath(version, layout.features_dir), tmp_link)
    os.replace(tmp_link, link)


def _drop_old_versions(code_dir: Path, keep: set[str]) -> None:
    """Keep the current version and the one before it; remove older ones and stray temporaries."""
    finished = sorted(
        (p for p in code_dir.iterdir() if not p.name.endswith(".tmp") and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    previous = [p for p in finished if p.name not in keep][-1:]
    for path in code_dir.iterdir():
        if path.name in keep or path in previous or path.name.startswith("."):
            continue
        shutil.rmtree(path, ignore_errors=True)
