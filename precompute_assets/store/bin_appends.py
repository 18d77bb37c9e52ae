"""A stock's daily append to its bin files in one compiled loop: per file `open(O_APPEND)`, its last
page asked for (a batch of files at once, `posix_fadvise`), one `write`, one `statx` on the
descriptor for the size and modification time it now has (`file_stats`), `close`, and its crc32
continued over the bytes written.

A daily update appends to every field of every stock, a few bytes each. In Python each file costs
several objects and calls around its system calls, under the GIL the store step's writer threads
share; here only the system calls are left, and the threads run them side by side. libc is bound by
name as in `bin_columns`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numba
import numpy as np
from numba import types

from precompute_assets.store.bin_checksums import CRC_TABLE, crc32_continued
from precompute_assets.store.bin_columns import Paths
from precompute_assets.store.file_stats import AT_EMPTY_PATH, STATX_BYTES, statx_into

_JIT = {"nopython": True, "nogil": True, "cache": True}
_open = types.ExternalFunction("open", types.int32(types.intp, types.int32))
_write = types.ExternalFunction("write", types.int64(types.int32, types.intp, types.uintp))
_close = types.ExternalFunction("close", types.int32(types.int32))
_fadvise = types.ExternalFunction("posix_fadvise", types.int32(types.int32, types.int64, types.int64, types.int32))
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND
_WILLNEED = os.POSIX_FADV_WILLNEED
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
OPEN_AT_ONCE = 64
"""Files a stock's append holds open at once (its writer threads stay far below the open-file limit)."""

APPENDED, MISSING, SHORT_WRITE, NOT_AS_RECORDED = 0, 1, 2, 3
"""Per file: appended as recorded; no file to open; the write took fewer bytes; its size before the
append was not the recorded one (the bytes are appended all the same: the caller rebuilds the stock)."""


@numba.jit(**_JIT)
def _append_files(
    path_bytes: np.ndarray,
    path_starts: np.ndarray,
    payloads: np.ndarray,
    sizes_before: np.ndarray,
    crcs_before: np.ndarray,
    table: np.ndarray,
    page: int,
    status: np.ndarray,
    mtimes: np.ndarray,
    crcs: np.ndarray,
) -> None:
    handles = np.full(OPEN_AT_ONCE, -1, dtype=np.int32)
    empty = np.zeros(1, dtype=np.uint8)  # the "" path statx takes with AT_EMPTY_PATH
    found = np.zeros(STATX_BYTES, dtype=np.uint8)
    width = payloads.shape[1]
    for first in range(0, len(path_starts), OPEN_AT_ONCE):
        last = min(first + OPEN_AT_ONCE, len(path_starts))
        for j in range(first, last):  # open a batch and ask for each file's last page, all at once
            fd = _open(path_bytes[path_starts[j] :].ctypes.data, _APPEND_FLAGS)
            handles[j - first] = fd
            if fd < 0:
                status[j] = MISSING
                continue
            _fadvise(fd, sizes_before[j] - sizes_before[j] % page, page, _WILLNEED)
        for j in range(first, last):
            fd = handles[j - first]
            if fd < 0:
                continue
            row = payloads[j]
            if _write(fd, row.ctypes.data, width) != width:
                status[j] = SHORT_WRITE
            else:
                size, _ino, mtimes[j] = statx_into(fd, empty.ctypes.data, AT_EMPTY_PATH, found)
                status[j] = APPENDED if size == sizes_before[j] + width else NOT_AS_RECORDED
                crcs[j] = crc32_continued(row, width, crcs_before[j], table)
            _close(fd)


@dataclass(frozen=True)
class Appends:
    """Per file: its `status` (APPENDED, MISSING, SHORT_WRITE, NOT_AS_RECORDED), its modification
    time right after the write, and its crc32 continued over the bytes written."""

    status: np.ndarray
    mtime_ns: np.ndarray
    crc: np.ndarray


def append_files(paths: list[str], payloads: np.ndarray, sizes_before: np.ndarray, crcs_before: np.ndarray) -> Appends:
    """Append row i of `payloads` (bytes, one row per file) to file i, which should be
    `sizes_before[i]` bytes long with crc32 `crcs_before[i]`."""
    out = Appends(
        np.zeros(len(paths), dtype=np.int8), np.zeros(len(paths), dtype=np.int64), np.zeros(len(paths), dtype=np.int64)
    )
    packed = Paths.of(paths)
    _append_files(
        packed.data,
        packed.starts,
        np.ascontiguousarray(payloads, dtype=np.uint8),
        np.asarray(sizes_before, dtype=np.int64),
        np.asarray(crcs_before, dtype=np.int64),
        CRC_TABLE,
        PAGE_BYTES,
        out.status,
        out.mtime_ns,
        out.crc,
    )
    return out
