"""Backups: a verified copy of the store's current versions under `<backup path>/<UTC timestamp>/`.

The copy is built in a hidden `.partial` folder, every stock is checked against its recorded sizes
and checksums, and only then is the folder renamed to its final name: a backup that exists is whole.
A stock damaged in the store fails the backup (re-materialize its bucket first); a stock replaced by
a concurrent commit while it was copied is copied again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from precompute_assets.build.buckets import bucket_of
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.store_copy import copy_shared, copy_stock, shared_entries, stock_files
from precompute_assets.settings import Settings
from precompute_assets.store.calendar import calendar_fingerprint
from precompute_assets.store.disk_space import ensure_free_space, tree_bytes
from precompute_assets.store.errors import OperationError
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json
from precompute_assets.store.stock_commit import stored_codes
from precompute_assets.validation.integrity import StoreCalendars, stock_problems

BACKUP_META = "backup.json"
COPY_ATTEMPTS = 3


class BackupError(OperationError):
    """A backup could not be made or found; no partial backup is left behind."""


@dataclass(frozen=True)
class BackupInfo:
    """One complete backup, as its `backup.json` describes it."""

    name: str
    path: Path
    created: str
    stocks: int
    bytes: int
    data_version: int | None

    @classmethod
    def read(cls, path: Path) -> BackupInfo:
        meta = read_json(path / BACKUP_META)
        return cls(path.name, path, meta["created"], meta["stocks"], meta["bytes"], meta.get("data_version"))


def create_backup(settings: Settings, config: OperationsConfig) -> BackupInfo:
    """Copy the store into a new backup and return it (prune old ones with `prune_backups`)."""
    layout = StoreLayout(settings.qlib_data_path)
    if not layout.features_dir.is_dir():
        raise BackupError(f"there is no store to back up at {layout.root}")
    codes = stored_codes(layout)
    need = sum(tree_bytes(p) for p in shared_entries(layout.root))
    need += sum(_stock_bytes(layout, code) for code in codes)
    ensure_free_space(config.backup_path, need, f"back up {layout.root}")
    calendars_before = _calendar_text(layout)
    name, staging = _claim_name(config.backup_path, datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    try:
        copy_shared(layout.root, staging)
        target = StoreLayout(staging)
        calendars = StoreCalendars.read(target)
        for code in codes:
            _copy_verified(layout, target, code, calendars, settings.batches)
        if _calendar_text(layout) != calendars_before:
            raise BackupError("the store's calendar changed while it was being backed up (a run wrote it); run again")
        data_version = read_json(layout.data_version_path)
        meta = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(layout.root.resolve()),
            "stocks": len(codes),
            "bytes": tree_bytes(staging),
            "data_version": data_version.get("version"),
            "input_version": data_version.get("input_version"),
            "date_range": data_version.get("date_range"),
        }
        (staging / BACKUP_META).write_text(json.dumps(meta, indent=1))
        final = config.backup_path / name
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BackupInfo.read(final)


def list_backups(config: OperationsConfig) -> list[BackupInfo]:
    """Complete backups, oldest first."""
    if not config.backup_path.is_dir():
        return []
    paths = sorted(p for p in config.backup_path.iterdir() if (p / BACKUP_META).is_file())
    return [BackupInfo.read(p) for p in paths]


def find_backup(config: OperationsConfig, ref: str | Path) -> Path:
    """A backup by name (`latest` for the newest) or by path (a store kept aside by a restore also works)."""
    backups = list_backups(config)
    if str(ref) == "latest" and backups:
        return backups[-1].path
    for candidate in (Path(ref), config.backup_path / str(ref)):
        if (candidate / "features").is_dir():
            return candidate
    names = ", ".join(b.name for b in backups) or "none"
    raise BackupError(f"no backup {ref!r} in {config.backup_path} (backups there: {names})")


def prune_backups(config: OperationsConfig) -> list[Path]:
    """Remove complete backups beyond the newest `keep_backups`; returns what was removed."""
    backups = list_backups(config)
    doomed = [b.path for b in backups[: max(len(backups) - config.keep_backups, 0)]]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def _copy_verified(
    layout: StoreLayout, target: StoreLayout, code: str, calendars: StoreCalendars, batches: int
) -> None:
    problems: list[str] = []
    for _attempt in range(COPY_ATTEMPTS):
        try:
            copy_stock(layout, code, target.stock_dir(code))
        except FileNotFoundError as exc:  # its version was replaced and dropped while we copied it
            problems = [str(exc)]
            continue
        problems = stock_problems(target, code, calendars)
        if not problems:
            return
    raise BackupError(
        f"{code} is damaged in the store ({'; '.join(problems[:3])}); re-materialize bucket "
        f"{bucket_of(code, batches)} (or restore a backup) and back up again"
    )


def _calendar_text(layout: StoreLayout) -> str:
    calendars = StoreCalendars.read(layout)
    return f"{calendar_fingerprint(calendars.published)}:{calendar_fingerprint(calendars.working)}"


def _stock_bytes(layout: StoreLayout, code: str) -> int:
    try:
        return sum(p.stat().st_size for p in stock_files(layout, code))
    except FileNotFoundError:  # a dangling link: the copy names the damage
        return 0


def _claim_name(folder: Path, name: str) -> tuple[str, Path]:
    """A backup name no other backup has, and its staging folder, created here: two backups started in
    the same second (two `make run` at once) each get their own and never remove the other's."""
    folder.mkdir(parents=True, exist_ok=True)
    candidate, n = name, 1
    while True:
        staging = folder / f".{candidate}.partial"
        if not (folder / candidate).exists():
            try:
                staging.mkdir()
                return candidate, staging
            except FileExistsError:
                pass
        n += 1
        candidate = f"{name}-{n}"
