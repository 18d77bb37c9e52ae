"""One field of many stocks read from their bin files in one compiled loop, straight into the caller's
array: `open`, a 4-byte header `pread`, one `pread` of the wanted window, `close`, then the values put
at their destinations. The loop runs without the GIL, so two threads read two fields at once.

A read of a panel is tens of thousands of small files: in Python each costs a file object or a bytes
object, numpy views and a fancy-indexed assignment under the GIL, several times the system calls
themselves. Here only the system calls are left. libc's `open`, `pread` and `close` are bound by name
(`numba.types.ExternalFunction`), which keeps the compiled loop cacheable on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numba import types

from precompute_assets.store.bin_file import READ_FLAGS

_JIT = {"nopython": True, "nogil": True, "cache": True}
_open = types.ExternalFunction("open", types.int32(types.intp, types.int32))
_pread = types.ExternalFunction("pread", types.int64(types.int32, types.intp, types.uintp, types.int64))
_close = types.ExternalFunction("close", types.int32(types.int32))

MISSING = -1
"""`first` of a stock whose file could not be opened."""


@numba.jit(**_JIT)
def open_for_reading_at(path_address: int) -> int:
    """`bin_file.open_for_reading` of the NUL-terminated path at `path_address`: -1 when it cannot be
    opened at all."""
    fd = _open(path_address, READ_FLAGS)
    if fd < 0:  # not the file's owner (O_NOATIME), or no file
        fd = _open(path_address, os.O_RDONLY)
    return fd


@numba.jit(**_JIT)
def _read_window(path_bytes: np.ndarray, path_at: int, lo: int, hi: int, scratch: np.ndarray) -> tuple[int, int]:
    """(calendar position of the first value read, values read into `scratch`) of the file's values on
    positions [lo, hi]; (MISSING, 0) when it cannot be opened; a torn tail (under 4 bytes) is left out."""
    fd = open_for_reading_at(path_bytes[path_at:].ctypes.data)
    if fd < 0:
        return MISSING, 0
    got_header = _pread(fd, scratch.ctypes.data, 4, 0)
    start, count = lo, 0
    if got_header == 4 and scratch[0] >= 0:
        first = int(scratch[0])
        start = max(lo, first)
        wanted = hi - start + 1
        if wanted > 0:
            got = _pread(fd, scratch.ctypes.data, wanted * 4, 4 + (start - first) * 4)
            count = max(0, got // 4)
    _close(fd)
    return start, count


@numba.jit(**_JIT)
def _fill_rows(
    path_bytes: np.ndarray,
    path_starts: np.ndarray,
    lo: int,
    hi: int,
    positions: np.ndarray,
    position_starts: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray,
    firsts: np.ndarray,
    counts: np.ndarray,
) -> None:
    """For each stock j: its values on `positions[position_starts[j]:position_starts[j + 1]]` into
    `out` at the matching `rows`; `firsts[j]`, `counts[j]`: what its file holds within [lo, hi]."""
    scratch = np.empty(max(1, hi - lo + 1), dtype=np.float32)
    for j in range(len(path_starts)):
        start, count = _read_window(path_bytes, path_starts[j], lo, hi, scratch)
        firsts[j], counts[j] = start, count
        for k in range(position_starts[j], position_starts[j + 1]):
            offset = positions[k] - start
            if 0 <= offset < count:
                out[rows[k]] = scratch[offset]


@numba.jit(**_JIT)
def _fill_grid(
    path_bytes: np.ndarray,
    path_starts: np.ndarray,
    lo: int,
    hi: int,
    out: np.ndarray,
    firsts: np.ndarray,
    counts: np.ndarray,
) -> None:
    """For each stock j: its values on [lo, hi] into column j of `out` (dates, stocks), row p - lo."""
    scratch = np.empty(max(1, hi - lo + 1), dtype=np.float32)
    for j in range(len(path_starts)):
        start, count = _read_window(path_bytes, path_starts[j], lo, hi, scratch)
        firsts[j], counts[j] = start, count
        for i in range(count):
            out[start - lo + i, j] = scratch[i]


@dataclass(frozen=True)
class Paths:
    """NUL-terminated file paths packed into one byte array, as the compiled loop opens them."""

    data: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, paths: Sequence[str]) -> Paths:
        encoded = [p.encode() + b"\0" for p in paths]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        starts = np.zeros(len(encoded), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        return cls(np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8), starts)


@dataclass(frozen=True)
class Spans:
    """What each file held within the window read: `first` (MISSING when the file could not be opened)
    and `count` values from there."""

    first: np.ndarray
    count: np.ndarray

    @classmethod
    def empty(cls, files: int) -> Spans:
        return cls(np.full(files, MISSING, dtype=np.int64), np.zeros(files, dtype=np.int64))


def read_into_rows(
    paths: Paths,
    lo: int,
    hi: int,
    positions: np.ndarray,
    position_starts: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray,
) -> Spans:
    """Each file's values on its stock's `positions` (a slice per file, `position_starts` delimiting
    them; calendar positions within [lo, hi]) into `out[rows]`."""
    spans = Spans.empty(len(paths.starts))
    _fill_rows(paths.data, paths.starts, lo, hi, positions, position_starts, rows, out, spans.first, spans.count)
    return spans


def read_into_grid(paths: Paths, lo: int, hi: int, out: np.ndarray) -> Spans:
    """File j's values on calendar positions [lo, hi] into column j of `out`, (hi - lo + 1, files)."""
    spans = Spans.empty(len(paths.starts))
    _fill_grid(paths.data, paths.starts, lo, hi, out, spans.first, spans.count)
    return spans
