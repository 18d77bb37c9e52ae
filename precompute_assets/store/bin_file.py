"""Qlib's bin format: little-endian float32, the first value being the calendar index of row 0."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DTYPE = np.dtype("<f4")
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOATIME", 0)
"""How the store's files are opened to be read: without updating their access time. A daily update
modifies every bin file, so the first read of each after it (its checks, the backup, a reader) would
otherwise dirty its inode, and a million inode updates queue behind the appends on a slow disk."""


def open_for_reading(path: str | Path) -> int:
    """A read-only descriptor of `path` (`READ_FLAGS`; plain `O_RDONLY` where the caller does not own
    the file, which O_NOATIME needs)."""
    try:
        return os.open(path, READ_FLAGS)
    except PermissionError:
        return os.open(path, os.O_RDONLY)


def encode(start_index: int, values: np.ndarray) -> bytes:
    body = np.asarray(values, dtype=DTYPE)
    return np.concatenate([np.array([start_index], dtype=DTYPE), body]).tobytes()


def write_bin(path: Path, start_index: int, values: np.ndarray) -> None:
    """Write one field of one stock (callers make it atomic by writing into a fresh folder)."""
    Path(path).write_bytes(encode(start_index, values))


READ_CHUNK = 1 << 16
"""Bytes asked of the first `os.read`: a field of 16,000 days, more than any daily file holds, so a read
is one open, one read and one close."""


def read_raw(path: str | Path) -> np.ndarray:
    """The whole file as float32, header first (read-only). Bare `os.open`/`os.read` skip the file
    object Python builds per `open`, and readers open hundreds of small files per stock. A torn tail
    (a size that is not a multiple of 4) is left out, as `np.fromfile` would."""
    fd = open_for_reading(path)
    try:
        raw = os.read(fd, READ_CHUNK)
        if len(raw) == READ_CHUNK:  # a longer file: read on to its end
            parts = [raw]
            while chunk := os.read(fd, 4 * READ_CHUNK):
                parts.append(chunk)
            raw = b"".join(parts)
    finally:
        os.close(fd)
    if len(raw) % DTYPE.itemsize:
        raw = raw[: len(raw) - len(raw) % DTYPE.itemsize]
    return np.frombuffer(raw, dtype=DTYPE)


def read_bin(path: Path) -> tuple[int, np.ndarray]:
    """(calendar index of the first row, float32 values)."""
    data = read_raw(path)
    if data.size == 0:
        raise ValueError(f"{path} is empty, not a Qlib bin file")
    return int(data[0]), data[1:]
