"""Stable hash buckets of stock codes: the unit of work and of partitioning.

A code's bucket depends only on the code and the bucket count (hashlib, not the salted `hash()`), so
a new stock lands in an existing bucket and every process and machine agrees on the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cache


def bucket_keys(batches: int) -> list[str]:
    """Partition keys `b00` .. `b63` (zero-padded so they sort)."""
    return list(_keys(batches))


@cache
def bucket_of(code: str, batches: int) -> str:
    """Cached: every bucket's steps and checks pick their codes out of the whole market's."""
    index = int.from_bytes(hashlib.sha1(code.encode()).digest()[:8], "big") % batches
    return _keys(batches)[index]


@cache
def _keys(batches: int) -> tuple[str, ...]:
    width = max(2, len(str(batches - 1)))
    return tuple(f"b{i:0{width}d}" for i in range(batches))


def codes_in_bucket(codes: Iterable[str], bucket: str, batches: int) -> list[str]:
    return sorted(c for c in codes if bucket_of(c, batches) == bucket)
