"""Stocks' `_stock.json` as the validations read them: parsed once per version of the file in a process.

The four checks after a run (and the audit) each read the record of every stock they judge, and never
change it. A commit or an append replaces the file (a new inode), and any write gives it a new change
time, so the file's identity tells whether a record parsed earlier is still the one on disk: a `stat`
instead of a parse. A file changed within the last `RACY_NS` is parsed every time: its change time may
not have moved yet for a write that came just after it.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict

from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import read_stock_meta

CACHED_RECORDS = 3000
"""Records kept: a daily update's run judges half the market, each check one stock after another."""
RACY_NS = 50_000_000
_parsed: OrderedDict[str, tuple[tuple[int, int, int, int], dict]] = OrderedDict()


def stock_record(layout: StoreLayout, code: str) -> dict | None:
    """`read_stock_meta`, shared by this process's validations: the caller must not change it."""
    path = str(layout.stock_meta_path(code))
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    known = _parsed.get(path)
    if known is not None and known[0] == identity:
        _parsed.move_to_end(path)
        return known[1]
    meta = read_stock_meta(layout, code)
    if meta is not None and time.time_ns() - stat.st_ctime_ns > RACY_NS:
        _parsed[path] = (identity, meta)
        if len(_parsed) > CACHED_RECORDS:
            _parsed.popitem(last=False)
    return meta
