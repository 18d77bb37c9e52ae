"""Sizes and crc32s of many bin files in one compiled loop: `open`, `lseek` to the end for the size,
one `pread` of the bytes from a given offset (asked for beforehand, a batch of files at once, with
`posix_fadvise`), `close`, and zlib's crc32 continued over those bytes.

A check after a daily update verifies every appended file by its few new bytes. In Python each file
costs an open, a stat, a read and a crc32 call with their objects, several times the system calls
themselves; here only the system calls are left (libc bound by name as in `bin_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import types

from precompute_assets.store.bin_columns import MISSING, Paths, open_for_reading_at

_JIT = {"nopython": True, "nogil": True, "cache": True}
_lseek = types.ExternalFunction("lseek", types.int64(types.int32, types.int64, types.int32))
_pread = types.ExternalFunction("pread", types.int64(types.int32, types.intp, types.uintp, types.int64))
_close = types.ExternalFunction("close", types.int32(types.int32))
_fadvise = types.ExternalFunction("posix_fadvise", types.int32(types.int32, types.int64, types.int64, types.int32))
_SEEK_END, _WILLNEED = 2, 3
OPEN_AT_ONCE = 64
"""Files open at once: their reads are asked for together, so on a cold page cache they overlap."""


def _crc_table() -> np.ndarray:
    """The table of zlib's crc32 (the reflected IEEE polynomial)."""
    table = np.zeros(256, dtype=np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else c >> 1
        table[n] = c
    return table


CRC_TABLE = _crc_table()


@numba.jit(**_JIT)
def crc32_continued(data: np.ndarray, count: int, value: int, table: np.ndarray) -> int:
    """zlib.crc32(data[:count], value)."""
    crc = np.uint32(value) ^ np.uint32(0xFFFFFFFF)
    for i in range(count):
        crc = table[(crc ^ data[i]) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
    return int(crc ^ np.uint32(0xFFFFFFFF))


@numba.jit(**_JIT)
def _check_files(
    path_bytes: np.ndarray,
    path_starts: np.ndarray,
    expected: np.ndarray,
    offsets: np.ndarray,
    crc_before: np.ndarray,
    table: np.ndarray,
    sizes: np.ndarray,
    crcs: np.ndarray,
) -> None:
    scratch = np.empty(4096, dtype=np.uint8)  # grown to the longest read: sizes come from the files
    handles = np.full(OPEN_AT_ONCE, -1, dtype=np.int32)
    for first in range(0, len(path_starts), OPEN_AT_ONCE):
        last = min(first + OPEN_AT_ONCE, len(path_starts))
        for j in range(first, last):  # open a batch and ask for the bytes to read, all at once
            fd = open_for_reading_at(path_bytes[path_starts[j] :].ctypes.data)
            handles[j - first] = fd
            if fd < 0:
                sizes[j] = MISSING
                continue
            sizes[j] = _lseek(fd, 0, _SEEK_END)
            if sizes[j] == expected[j] and sizes[j] > offsets[j]:
                _fadvise(fd, offsets[j], sizes[j] - offsets[j], _WILLNEED)
        for j in range(first, last):
            fd = handles[j - first]
            if fd < 0:
                continue
            wanted = sizes[j] - offsets[j]
            if sizes[j] == expected[j] and wanted >= 0:
                if wanted > len(scratch):
                    scratch = np.empty(wanted, dtype=np.uint8)
                got = _pread(fd, scratch.ctypes.data, wanted, offsets[j]) if wanted > 0 else 0
                if got == wanted:
                    crcs[j] = crc32_continued(scratch, wanted, crc_before[j], table)
            _close(fd)


@dataclass(frozen=True)
class Checked:
    """Per file: its `size` (MISSING when it could not be opened) and, where that is the expected size,
    the crc32 continued from `crc_before` over its bytes from the offset (-1 when it could not be read)."""

    size: np.ndarray
    crc: np.ndarray


def check_files(paths: Paths, expected: np.ndarray, offsets: np.ndarray, crc_before: np.ndarray) -> Checked:
    """Each file's size and, where it is `expected`, zlib.crc32(bytes[offset:], crc_before)."""
    checked = Checked(np.full(len(expected), MISSING, dtype=np.int64), np.full(len(expected), -1, dtype=np.int64))
    _check_files(
        paths.data,
        paths.starts,
        np.asarray(expected, dtype=np.int64),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(crc_before, dtype=np.int64),
        CRC_TABLE,
        checked.size,
        checked.crc,
    )
    return checked
