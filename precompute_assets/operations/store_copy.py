"""Copying a store's content: the shared files, and each stock's current version as a plain folder.

A backup is itself a readable Qlib directory (`qlib.init(provider_uri=<backup>)` works), because
every `features/<code>` link is resolved to the files of the version it points at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from precompute_assets.operations.backup_area import BACKUP_META, BASES, RELEASED
from precompute_assets.store.layout import StoreLayout

NOT_COPIED = frozenset({".stock_versions", ".locks", "features", BACKUP_META, RELEASED, BASES})
"""Old versions, locks and a backup's own records and inherited files never travel; `features` is
copied stock by stock."""


def is_temporary(name: str) -> bool:
    """Leftovers of atomic writes (`.<name>.<uuid>.tmp`) and link swaps (`.<code>.<uuid>.lnk`)."""
    return name.startswith(".") and name.endswith((".tmp", ".lnk"))


def shared_entries(root: Path) -> list[Path]:
    """Top-level files and folders of a store other than stock data: calendars, instruments, manifests, state."""
    return sorted(p for p in Path(root).iterdir() if p.name not in NOT_COPIED and not is_temporary(p.name))


def copy_shared(source: Path, target: Path) -> None:
    """Copy the shared entries of the store at `source` into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns(".*.tmp", ".*.lnk")
    for entry in shared_entries(source):
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target / entry.name)


def stock_files(layout: StoreLayout, code: str) -> list[Path]:
    """The files of the stock's current version (the link resolved once, so a swap mid-copy cannot mix)."""
    version = layout.stock_dir(code).resolve(strict=True)
    return sorted(p for p in version.iterdir() if p.is_file() and not is_temporary(p.name))


def copy_stock(layout: StoreLayout, code: str, target_dir: Path) -> None:
    """Copy the stock's current version into `target_dir`, replacing what is there."""
    files = stock_files(layout, code)
    if target_dir.exists():
        shutil.rmtree(target_dir)
    target_dir.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, target_dir / path.name)
