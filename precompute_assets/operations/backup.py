"""Backups: a verified copy of the store's current versions under `<backup path>/<UTC timestamp>/`.

A backup stores what changed since the previous one (`backup_increments`): a field the previous
backup holds is referenced where it is, one that grew is referenced plus the appended bytes, and only
new or rewritten fields are copied whole; the first backup, or the one after a fresh build, is a full
copy. Pruning hands what newer backups still reference to the oldest one kept (`backup_area`).
The backup is built in a hidden `.partial` folder, every stock's content is checked against its
recorded sizes and checksums, and only then is the folder renamed to its final name: a backup that
exists is whole. A stock damaged in the store fails the backup (re-materialize its bucket first); a
stock replaced by a concurrent commit while it was copied is copied again.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

from precompute_assets.build.appended import AppendedRecords
from precompute_assets.build.buckets import bucket_of
from precompute_assets.operations.backup_area import BACKUP_META, BackupArea, remove_backup, write_released
from precompute_assets.operations.backup_increments import StockBackup, StockChanged, backup_stock
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.store_copy import copy_shared, shared_entries
from precompute_assets.settings import RUNS_AT_A_TIME, Settings
from precompute_assets.store.calendar import calendar_fingerprint
from precompute_assets.store.disk_space import disk_bytes, ensure_free_space, tree_bytes
from precompute_assets.store.errors import OperationError
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json
from precompute_assets.store.stock_commit import Appended, read_stock_meta, stored_codes, version_dir
from precompute_assets.validation.integrity import StoreCalendars

COPY_ATTEMPTS = 3
BACKUP_PROCESSES = RUNS_AT_A_TIME
BACKUP_THREADS = 4
"""Stocks backed up at once by each process."""
PRESCAN_THREADS = 8
"""Stocks whose space need is read at once."""


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
    new_bytes: int | None = None
    """Bytes this backup wrote (the rest it references in earlier ones); None for older backups."""
    previous: str | None = None

    @classmethod
    def read(cls, path: Path) -> BackupInfo:
        meta = read_json(path / BACKUP_META)
        return cls(
            path.name,
            path,
            meta["created"],
            meta["stocks"],
            meta["bytes"],
            meta.get("data_version"),
            meta.get("new_bytes"),
            meta.get("previous"),
        )


def create_backup(settings: Settings, config: OperationsConfig) -> BackupInfo:
    """Back up the store into a new backup and return it (prune old ones with `prune_backups`)."""
    layout = StoreLayout(settings.qlib_data_path)
    if not layout.features_dir.is_dir():
        raise BackupError(f"there is no store to back up at {layout.root}")
    codes = stored_codes(layout)
    previous = _previous_backup(config)
    # Processes, one per core: a stock's backup is mostly Python (its records, a few hundred fields)
    # between system calls, so threads of one process wait for its GIL; so is reading what each
    # stock may need (two JSON files). Forked, they start at once with what this process has
    # imported; each takes every other stock.
    shares = [share for share in (codes[i::BACKUP_PROCESSES] for i in range(BACKUP_PROCESSES)) if share]
    staging = None
    try:  # the pool is shut down, its processes done writing, before a failed backup's folder is removed
        with ProcessPoolExecutor(BACKUP_PROCESSES, mp_context=get_context("fork")) as pool:
            need = sum(tree_bytes(p) for p in shared_entries(layout.root))
            need += sum(pool.map(_share_bytes, repeat(layout), shares, repeat(previous)))
            ensure_free_space(config.backup_path, need, f"back up {layout.root}")
            calendars_before = _calendar_text(layout)
            name, staging = _claim_name(config.backup_path, datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
            copy_shared(layout.root, staging)
            written, released = StockBackup(), {}
            jobs = [pool.submit(_backup_share, settings, staging, share, previous, name) for share in shares]
            for job in jobs:
                totals, share_released = job.result()
                written.add(totals)
                released.update(share_released)
        write_released(staging, released)
        shared_bytes = sum(tree_bytes(p) for p in shared_entries(staging))
        written.new_bytes += shared_bytes
        written.bytes += shared_bytes
        if _calendar_text(layout) != calendars_before:
            raise BackupError("the store's calendar changed while it was being backed up (a run wrote it); run again")
        data_version = read_json(layout.data_version_path)
        meta = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(layout.root.resolve()),
            "stocks": len(codes),
            "bytes": written.bytes,
            "data_version": data_version.get("version"),
            "input_version": data_version.get("input_version"),
            "date_range": data_version.get("date_range"),
            "previous": previous.name if previous is not None else None,
            "new_bytes": written.new_bytes,
            "fields": {"linked": written.linked, "appended": written.appended, "copied": written.copied},
            "appended_from_record": written.fed,
            "holders": sorted(written.holders),
        }
        (staging / BACKUP_META).write_text(json.dumps(meta, indent=1))
        final = config.backup_path / name
        os.rename(staging, final)
    except BaseException:
        if staging is not None:
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
    """Remove complete backups beyond the newest `keep_backups`, oldest first; returns what was removed.

    Each hands the files newer backups reference to the next one, so no kept backup loses data."""
    backups = list_backups(config)
    doomed = [b.path for b in backups[: max(len(backups) - config.keep_backups, 0)]]
    for i, path in enumerate(doomed):
        remove_backup(path, backups[i + 1].path if i + 1 < len(backups) else None)
    return doomed


def kept_backups_disk_bytes(config: OperationsConfig) -> int:
    """What the complete backups take on disk, each file counted once (hard links of older backups once)."""
    return disk_bytes([b.path for b in list_backups(config)])


def _previous_backup(config: OperationsConfig) -> BackupInfo | None:
    """The newest complete backup, the one a new backup shares its unchanged files with."""
    backups = list_backups(config)
    return backups[-1] if backups else None


def _backup_share(
    settings: Settings, staging: Path, codes: list[str], previous: BackupInfo | None, name: str
) -> tuple[StockBackup, dict[str, list[tuple[str, str]]]]:
    """Back up `codes` into the staging backup, several stocks at once; what they wrote, summed, and
    per stock what the previous backup referenced and this one does not."""
    layout, target = StoreLayout(settings.qlib_data_path), StoreLayout(staging)
    appended = AppendedRecords(settings.work_path) if previous is not None else None  # nothing to extend otherwise
    area = BackupArea(staging.parent)
    written, released = StockBackup(), {}
    # Threads within the process: a stock's stats, links and the reads of a cold page cache are waits
    # on the file system that release the GIL, so several stocks at once overlap them (each its own folder)
    pool = ThreadPoolExecutor(BACKUP_THREADS)
    try:
        backed_up = pool.map(
            lambda code: _backup_verified(
                layout, target, code, settings.batches, area, previous, name, appended.pop(code) if appended else None
            ),
            codes,
        )
        for code, done in zip(codes, backed_up, strict=True):
            written.add(done)
            released[code.lower()] = done.released
    finally:  # a damaged stock fails the backup: the stocks not started yet are not backed up
        pool.shutdown(wait=True, cancel_futures=True)
    return written, released


def _backup_verified(
    layout: StoreLayout,
    target: StoreLayout,
    code: str,
    batches: int,
    area: BackupArea,
    previous: BackupInfo | None,
    name: str,
    appended: Appended | None = None,
) -> StockBackup:
    problems: list[str] = []
    for attempt in range(COPY_ATTEMPTS):
        folder = target.stock_dir(code)
        if attempt:  # what the attempt before left
            shutil.rmtree(folder, ignore_errors=True)
        try:
            version = Path(version_dir(layout, code))
            if not version.is_dir():
                raise FileNotFoundError(f"{code}: no current version in the store")
            return backup_stock(version, folder, area, previous.name if previous else None, name, appended)
        except (FileNotFoundError, StockChanged) as exc:  # its version was replaced (and dropped) meanwhile
            problems = [str(exc)]
        except ValueError as exc:
            problems = [str(exc)]
    raise BackupError(
        f"{code} is damaged in the store ({'; '.join(problems[:3])}); re-materialize bucket "
        f"{bucket_of(code, batches)} (or restore a backup) and back up again"
    )


def _share_bytes(layout: StoreLayout, codes: list[str], previous: BackupInfo | None) -> int:
    """What backing up `codes` may write (`_stock_bytes`), several stocks at once: each is two small
    reads, a disk wait when the page cache is cold."""
    with ThreadPoolExecutor(PRESCAN_THREADS) as pool:
        return sum(pool.map(lambda code: _stock_bytes(layout, code, previous), codes))


def _calendar_text(layout: StoreLayout) -> str:
    calendars = StoreCalendars.read(layout)
    return f"{calendar_fingerprint(calendars.published)}:{calendar_fingerprint(calendars.working)}"


def _stock_bytes(layout: StoreLayout, code: str, previous: BackupInfo | None) -> int:
    """What backing the stock up may write: its recorded files, less what the previous backup holds of them."""
    try:
        text = layout.stock_meta_path(code).read_bytes()
        meta = json.loads(text)
    except (FileNotFoundError, ValueError):  # unreadable: the backup names the damage
        return 0
    held = read_stock_meta(StoreLayout(previous.path), code) if previous is not None else None
    held_sizes = {name: size for name, (size, _crc) in (held or {}).get("files", {}).items()}
    sizes = {name: size for name, (size, _crc) in meta["files"].items()}
    grown = sum(size - held_sizes[n] if size >= held_sizes.get(n, size + 1) else size for n, size in sizes.items())
    return grown + len(text)


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
