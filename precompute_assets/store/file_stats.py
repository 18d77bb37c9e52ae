"""Size, inode and modification time of many files in one compiled loop (`statx`, one call a file).

A daily update's backup and checks ask this of every bin file of the stocks it wrote, hundreds per
stock; through `os.stat` each costs a result object and its attribute lookups, several times the
system call. `statx` has one layout on every architecture (linux/stat.h), where `struct stat` does
not; libc is bound by name as in `bin_columns`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numba import types

from precompute_assets.store.bin_columns import Paths

_JIT = {"nopython": True, "nogil": True, "cache": True}
_statx = types.ExternalFunction("statx", types.int32(types.int32, types.intp, types.int32, types.uint32, types.intp))
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
_MASK = 0x200 | 0x100 | 0x40  # STATX_SIZE | STATX_INO | STATX_MTIME
_INO_AT, _SIZE_AT, _MTIME_AT = 32, 40, 112
STATX_BYTES = 256
MISSING = -1
"""`size` of a file that could not be looked up."""


@numba.jit(**_JIT)
def _int_at(data: np.ndarray, at: int, width: int) -> int:
    """The little-endian unsigned integer of `width` bytes at `at` (statx's fields used are below 2**63)."""
    value = 0
    for k in range(width):
        value |= int(data[at + k]) << (8 * k)
    return value


@numba.jit(**_JIT)
def statx_into(dirfd: int, path_address: int, flags: int, found: np.ndarray) -> tuple[int, int, int]:
    """(size, inode, modification time in ns) by `statx`; size MISSING when it fails. `found` is a
    scratch buffer of STATX_BYTES."""
    if _statx(dirfd, path_address, flags, _MASK, found.ctypes.data) != 0:
        return MISSING, 0, 0
    mtime = _int_at(found, _MTIME_AT, 8) * 1_000_000_000 + _int_at(found, _MTIME_AT + 8, 4)
    return _int_at(found, _SIZE_AT, 8), _int_at(found, _INO_AT, 8), mtime


@numba.jit(**_JIT)
def _stat_files(
    path_bytes: np.ndarray, path_starts: np.ndarray, sizes: np.ndarray, inos: np.ndarray, mtimes: np.ndarray
) -> None:
    found = np.zeros(STATX_BYTES, dtype=np.uint8)
    for j in range(len(path_starts)):
        sizes[j], inos[j], mtimes[j] = statx_into(AT_FDCWD, path_bytes[path_starts[j] :].ctypes.data, 0, found)


@dataclass(frozen=True)
class FileStats:
    """Per file: `size` (MISSING when it could not be looked up), `ino` and `mtime_ns`."""

    size: np.ndarray
    ino: np.ndarray
    mtime_ns: np.ndarray


def stat_files(paths: Sequence[str]) -> FileStats:
    """Each path's size, inode and modification time (symbolic links followed, as `os.stat`)."""
    stats = FileStats(*(np.zeros(len(paths), dtype=np.int64) for _ in range(3)))
    packed = Paths.of(paths)
    _stat_files(packed.data, packed.starts, stats.size, stats.ino, stats.mtime_ns)
    return stats
