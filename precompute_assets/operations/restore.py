"""Restore: bring back a backup as the store, without losing the current store on the way.

The backup is verified (each stock put together from its files and appended segments, against the
sizes and checksums its `_stock.json` records), rebuilt in a hidden folder beside the store in the
store's own shape (stock versions plus `features/<code>` links), verified again, and only then
swapped in: in one step where the OS can exchange two directories, else by two renames. The store it
replaces is kept beside it as `.<name>.before-restore-<time>` (listed by `list`, restorable by path,
removed by the cleanup after the retention).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from precompute_assets.operations.backup import find_backup
from precompute_assets.operations.backup_area import BackupArea
from precompute_assets.operations.backup_increments import StockRecord, content_problems, stock_contents
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.store_copy import copy_shared, copy_stock
from precompute_assets.operations.swap import exchange
from precompute_assets.settings import Settings
from precompute_assets.store.disk_space import ensure_free_space, tree_bytes
from precompute_assets.store.errors import OperationError
from precompute_assets.store.layout import BIN_SUFFIX, META_FILE, StoreLayout
from precompute_assets.store.lock import LOCK_DIR, store_lock
from precompute_assets.store.stock_commit import stored_codes
from precompute_assets.validation.integrity import StoreCalendars, stock_problems

KEPT_PREFIX = "before-restore"


class RestoreError(OperationError):
    """A restore refused or stopped; the current store is untouched."""


@dataclass(frozen=True)
class RestoreReport:
    source: Path
    stocks: int
    previous_store: Path | None


def kept_stores(settings: Settings) -> list[Path]:
    """Stores a restore replaced, oldest first."""
    root = settings.qlib_data_path
    return sorted(root.parent.glob(f".{root.name}.{KEPT_PREFIX}-*")) if root.parent.is_dir() else []


def restore_backup(settings: Settings, config: OperationsConfig, ref: str | Path) -> RestoreReport:
    """Make the backup `ref` (a name, `latest`, or a path) the store; returns where the old store is kept."""
    source = StoreLayout(find_backup(config, ref))
    damaged = _damaged(source)
    if damaged:
        raise RestoreError(f"backup {source.root} is damaged, choose another one: {'; '.join(damaged[:3])}")
    root = settings.qlib_data_path
    stamp = _free_stamp(root, datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    with store_lock(root, purpose=f"restoring {source.root.name}", stale_after=config.stale_lock_seconds):
        ensure_free_space(root.parent, tree_bytes(source.root), f"restore {source.root.name}")
        staging = root.parent / f".{root.name}.restoring-{stamp}"
        try:
            codes = _rebuild(source, StoreLayout(staging), stamp)
            damaged = _damaged(StoreLayout(staging))
            if damaged:
                raise RestoreError(f"the restored copy does not verify: {'; '.join(damaged[:3])}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        previous = _swap_in(staging, root, root.parent / f".{root.name}.{KEPT_PREFIX}-{stamp}")
    if previous is not None:
        shutil.rmtree(previous / LOCK_DIR, ignore_errors=True)
    return RestoreReport(source.root, len(codes), previous)


def _free_stamp(root: Path, stamp: str) -> str:
    """A stamp no kept or half-restored store uses yet (two restores may fall in the same second)."""
    candidate, n = stamp, 1
    while any(root.parent.glob(f".{root.name}.*-{candidate}")):
        n += 1
        candidate = f"{stamp}-{n}"
    return candidate


def _rebuild(source: StoreLayout, target: StoreLayout, stamp: str) -> list[str]:
    """The backup in the store's shape: each stock a version folder, `features/<code>` a relative link."""
    copy_shared(source.root, target.root)
    target.features_dir.mkdir(parents=True, exist_ok=True)
    codes = stored_codes(source)
    area = BackupArea(source.root.parent)
    for code in codes:
        version = target.versions_dir / code.lower() / f"restored-{stamp}"
        folder = source.stock_dir(code)
        if StockRecord.read(folder) is None:
            copy_stock(source, code, version)
        else:
            _meta, files = stock_contents(area, folder)
            version.mkdir(parents=True)
            for name, data in files.items():
                (version / f"{name}{BIN_SUFFIX}").write_bytes(data)
            (version / META_FILE).write_bytes((folder / META_FILE).read_bytes())
        os.symlink(os.path.relpath(version, target.features_dir), target.stock_dir(code))
    return codes


def _swap_in(staging: Path, root: Path, kept: Path) -> Path | None:
    """Put `staging` at `root`; the store that was there moves to `kept` (returned)."""
    if not root.exists():
        os.rename(staging, root)
        return None
    if exchange(staging, root):
        os.rename(staging, kept)
        return kept
    os.rename(root, kept)
    try:
        os.rename(staging, root)
    except OSError as exc:
        raise RestoreError(
            f"could not move the restored store into place ({exc}); the previous store is at {kept} and the "
            f"restored one at {staging}: rename one of them to {root}"
        ) from exc
    return kept


def _damaged(layout: StoreLayout) -> list[str]:
    calendars, area = StoreCalendars.read(layout), BackupArea(layout.root.parent)
    return [f"{code} {p}" for code in stored_codes(layout) for p in _stock_problems(layout, area, code, calendars)]


def _stock_problems(layout: StoreLayout, area: BackupArea, code: str, calendars: StoreCalendars) -> list[str]:
    """A plain stock's integrity problems; a backed-up one's content put together and checked."""
    folder = layout.stock_dir(code)
    if StockRecord.read(folder) is None:
        return stock_problems(layout, code, calendars)
    try:
        return content_problems(*stock_contents(area, folder))
    except (OSError, ValueError, KeyError) as exc:
        return [f"cannot be put together ({exc})"]
