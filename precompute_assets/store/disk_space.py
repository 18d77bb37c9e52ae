"""A disk-space guard: refuse a write up front with a clear error instead of leaving it half done."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from precompute_assets.store.errors import OperationError

BLOCK = 4096
HEADROOM = 1.1
"""Ask for 10% more than the estimate: file-system metadata, and other writers on the same disk."""


class InsufficientDiskSpace(OperationError):
    """Not enough free space for a write; nothing was written."""


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or would hold it: its nearest existing parent)."""
    probe = Path(path).absolute()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def ensure_free_space(path: Path, need_bytes: int, purpose: str) -> None:
    """Raise `InsufficientDiskSpace` unless `need_bytes` (plus headroom) are free where `path` lives."""
    need = int(need_bytes * HEADROOM)
    free = free_bytes(path)
    if free < need:
        raise InsufficientDiskSpace(
            f"not enough disk space to {purpose}: it needs about {human_size(need)} at {path}, but only "
            f"{human_size(free)} is free there. Nothing was written. Free some space (`python -m "
            "precompute_assets.cli.operations cleanup` removes old stock versions, backups and intermediates) "
            "and run it again."
        )


def stock_write_bytes(rows: int, columns: int) -> int:
    """Disk a stock's new version takes: one float32 file per column (header + rows), whole blocks."""
    per_file = -(-(rows + 1) * 4 // BLOCK) * BLOCK
    return columns * per_file + BLOCK


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` as they lie on disk (links are not followed)."""
    total = 0
    for directory, _subdirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:
                continue
    return total


def disk_bytes(paths: list[Path]) -> int:
    """Disk the files under `paths` take (allocated blocks), a file hard-linked several times counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in paths:
        for directory, _subdirs, files in os.walk(path):
            for name in [*files, ""]:  # "" is the folder itself
                try:
                    stat = os.lstat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_blocks * 512
    return total


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
