"""Cleanup: remove what crashes and time leave behind, and nothing a reader or a running write may need.

- stray `.tmp` version folders and temporary files of atomic writes, older than the grace period
  (younger ones may belong to a write in progress);
- stock versions older than the previous one (the current and the previous version stay, as every
  commit leaves them);
- complete backups beyond the newest `keep_backups`, and unfinished ones older than the grace period;
- stores replaced by a restore, and per-bucket intermediates, older than the retention (never those of
  a bucket whose write lock is held);
- stale locks.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from precompute_assets.operations.backup import list_backups, prune_backups
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.restore import KEPT_PREFIX, kept_stores
from precompute_assets.operations.store_copy import is_temporary
from precompute_assets.settings import Settings
from precompute_assets.store.disk_space import human_size, tree_bytes
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.lock import held_locks, lock_dir, stale_reason


@dataclass(frozen=True)
class Removal:
    kind: str
    path: Path
    bytes: int


@dataclass
class CleanupReport:
    removed: list[Removal] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for removal in self.removed:
            counts[removal.kind] = counts.get(removal.kind, 0) + 1
        return counts

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"cleanup {verb} {len(self.removed)} item(s), {human_size(self.bytes_freed)}"]
        lines += [f"  - {r.kind}: {r.path}" for r in self.removed]
        return "\n".join(lines)


def cleanup(settings: Settings, config: OperationsConfig, *, dry_run: bool = False) -> CleanupReport:
    layout = StoreLayout(settings.qlib_data_path)
    now = time.time()
    grace, retention = config.grace_seconds, config.retention_days * 86400
    candidates = [
        *_stock_versions(layout, now, grace),
        *_temporary_files(layout, now, grace),
        *_old_backups(config, now, grace),
        *(("replaced store", p) for p in kept_stores(settings) if now - _stamp_time(p) > retention),
        *_intermediates(settings, now, retention, config.stale_lock_seconds),
        *(("stale lock", p) for p in _locks(layout) if stale_reason(p, config.stale_lock_seconds)),
    ]
    report = CleanupReport(dry_run=dry_run)
    for kind, path in candidates:
        report.removed.append(Removal(kind, path, tree_bytes(path) if path.is_dir() else _size(path)))
        if not dry_run and kind != "old backup":
            _remove(path)
    if not dry_run:
        prune_backups(config)  # each hands what newer backups reference to the next one
    return report


def _stock_versions(layout: StoreLayout, now: float, grace: float) -> Iterator[tuple[str, Path]]:
    """Unfinished versions past the grace; finished ones older than the previous version of their stock."""
    if not layout.versions_dir.is_dir():
        return
    for code_dir in sorted(layout.versions_dir.iterdir()):
        link = layout.features_dir / code_dir.name
        if not link.is_symlink():
            continue  # no current version to measure "old" against: leave the stock alone
        current = link.resolve()
        pending = layout.pending_link(code_dir.name)
        versions = [p for p in code_dir.iterdir() if p.is_dir() and not p.is_symlink()]
        finished = sorted((p for p in versions if not p.name.endswith(".tmp")), key=_mtime)
        keep = {current, *[p for p in finished if p != current][-1:]}
        if pending.is_symlink():  # waiting for its calendar: never old
            keep.add(pending.resolve())
        for path in versions:
            young = now - _mtime(path) <= grace
            if path.name.endswith(".tmp") and not young:
                yield "unfinished stock version", path
            elif not path.name.endswith(".tmp") and path not in keep and not young:
                yield "old stock version", path


def _temporary_files(layout: StoreLayout, now: float, grace: float) -> Iterator[tuple[str, Path]]:
    """Leftovers of atomic writes: in the store's own folders and inside current stock versions."""
    if not layout.root.is_dir():
        return
    folders = [layout.root, *(p for p in layout.root.iterdir() if p.is_dir() and p.name != ".stock_versions")]
    if layout.features_dir.is_dir():
        folders += [p.resolve() for p in layout.features_dir.iterdir() if p.is_symlink() and p.resolve().is_dir()]
    for folder in folders:
        for path in folder.iterdir():
            if is_temporary(path.name) and now - _mtime(path) > grace:
                yield "temporary file", path


def _old_backups(config: OperationsConfig, now: float, grace: float) -> Iterator[tuple[str, Path]]:
    backups = list_backups(config)
    for backup in backups[: max(len(backups) - config.keep_backups, 0)]:
        yield "old backup", backup.path
    if config.backup_path.is_dir():
        for path in config.backup_path.glob(".*.partial"):
            if now - _mtime(path) > grace:
                yield "unfinished backup", path


def _intermediates(settings: Settings, now: float, retention: float, stale_after: float) -> Iterator[tuple[str, Path]]:
    """A bucket's intermediates once nothing in them changed for the retention, unless its bucket is locked."""
    if not settings.work_path.is_dir():
        return
    held = held_locks(settings.qlib_data_path, stale_after)
    for bucket_dir in sorted(p for p in settings.work_path.iterdir() if p.is_dir()):
        newest = max((_mtime(p) for p in bucket_dir.rglob("*")), default=_mtime(bucket_dir))
        if f"bucket-{bucket_dir.name}" in held:
            continue
        if now - newest > retention:
            yield "intermediates", bucket_dir
            continue
        for run_dir in sorted(p for p in bucket_dir.iterdir() if p.is_dir()):  # one folder per run
            if now - max((_mtime(p) for p in run_dir.rglob("*")), default=_mtime(run_dir)) > retention:
                yield "intermediates", run_dir


def _locks(layout: StoreLayout) -> list[Path]:
    directory = lock_dir(layout.root)
    return sorted(directory.glob("*.lock")) if directory.is_dir() else []


def _stamp_time(path: Path) -> float:
    """The time in a kept store's name (`.<store>.before-restore-<UTC time>`)."""
    stamp = path.name.rsplit(f"{KEPT_PREFIX}-", 1)[-1]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return _mtime(path)


def _mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except FileNotFoundError:
        return time.time()


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
