"""Where the files a backup references are, and how pruning keeps them for the backups that use them.

A backup's own files are in `<backup>/features/<stock>/`; its records reference files of earlier
backups by their holder's name. When a backup is pruned, its stock folders, and those it had
inherited, move to the next backup kept, under `.bases/<holder>/<stock>/`, with one rename each;
there the files that backup no longer references are deleted: the holders it does not read (the
`holders` of its `backup.json`; a backup without them read only its own folder), the stocks it does
not hold, the files it released (its `released.json`: referenced by its previous backup, not by it)
and the pruned backup's own records. A backup takes its references from its previous one, so a file
the oldest kept backup does not reference, no newer one does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from precompute_assets.store.layout import META_FILE

BACKUP_META = "backup.json"
RECORD_FILE = "_backup.json"
BASES = ".bases"
RELEASED = "released.json"


class BackupArea:
    """The folder holding every backup, and where each holder's stock folders are now."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._places: dict[str, Path] = {}

    def stock_folder(self, holder: str, stock: str) -> Path:
        """The folder of backup `holder` with its files of `stock` (lower-case code)."""
        place = self._places.get(holder)
        if place is None:
            place = self._places[holder] = self._place(holder)
        return place / stock

    def _place(self, holder: str) -> Path:
        own = self.root / holder / "features"
        if own.is_dir():
            return own
        inherited = sorted(self.root.glob(f"*/{BASES}/{holder}"))
        return inherited[0] if inherited else own  # missing: reading a file names it


def write_released(backup: Path, released: dict[str, list[tuple[str, str]]]) -> None:
    """Record, per stock, the `(holder, file)` pairs the previous backup referenced and `backup` does not."""
    (backup / RELEASED).write_text(json.dumps({s: files for s, files in released.items() if files}))


def remove_backup(pruned: Path, heir: Path | None) -> None:
    """Delete the backup `pruned`, handing what it holds to `heir`, the next backup kept (None: no heir)."""
    if heir is not None:
        _hand_over(pruned, heir)
    shutil.rmtree(pruned)


def _hand_over(pruned: Path, heir: Path) -> None:
    bases = heir / BASES
    bases.mkdir(exist_ok=True)
    own, moved = pruned / "features", bases / pruned.name
    if own.is_dir() and not moved.exists():
        os.rename(own, moved)
        _drop_records(moved)
    if (pruned / BASES).is_dir():
        for held in (pruned / BASES).iterdir():
            if not (bases / held.name).exists():
                os.rename(held, bases / held.name)
    holders = set(json.loads((heir / BACKUP_META).read_text()).get("holders", [heir.name]))
    kept = set(os.listdir(heir / "features"))
    for holder in os.listdir(bases):
        if holder not in holders:
            shutil.rmtree(bases / holder)
            continue
        for stock in os.listdir(bases / holder):
            if stock not in kept:
                shutil.rmtree(bases / holder / stock)
    released_path = heir / RELEASED
    released = json.loads(released_path.read_text()) if released_path.is_file() else {}
    for stock, files in released.items():
        for holder, name in files:
            (bases / holder / stock / name).unlink(missing_ok=True)


def _drop_records(stocks: Path) -> None:
    """Delete a pruned backup's `_stock.json` and record in each of its stock folders: no one reads them."""
    with os.scandir(stocks) as entries:
        for entry in entries:
            for name in (META_FILE, RECORD_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{entry.path}/{name}")
