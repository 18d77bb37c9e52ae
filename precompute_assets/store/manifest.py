"""Reading the files every bucket shares (`data_version.json`, `indicator_versions.json`) and the
stocks' `_stock.json` records; `build.manifest` writes the shared files."""

from __future__ import annotations

import json
import os
import time

from precompute_assets.store.calendar import read_working_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import read_stock_meta, sits_on_calendar, stored_codes


def stock_metas(layout: StoreLayout) -> dict[str, dict]:
    """Every stored stock's `_stock.json`, as `stock_record` gives it (not to be modified)."""
    metas = {}
    for code in stored_codes(layout):
        meta = stock_record(layout, code)
        if meta is not None:
            metas[code] = meta
    return metas


SETTLED_NS = 2_000_000_000
"""A record rewritten this recently may be rewritten again within one timestamp tick (file times are
coarse), so its stat cannot vouch for it: it is read again next time."""
_records: dict[str, tuple[tuple[int, int, int, int], dict]] = {}


def stock_record(layout: StoreLayout, code: str) -> dict | None:
    """The stock's `_stock.json`, shared by every caller in this process and so not to be modified.

    A record whose inode, size and modification time are those it had when this process last read
    it costs a `stat`: the manifest, the summary and its check each read every stock's record, one
    after another in one process. Every write replaces the file (a new inode), so a stat that matches
    is the same record.
    """
    path = str(layout.stock_meta_path(code))
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    signature = (stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns)
    known = _records.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    meta = read_stock_meta(layout, code)
    if meta is not None and time.time_ns() - stat.st_mtime_ns > SETTLED_NS:
        _records[path] = (signature, meta)
    return meta


def calendar_holdouts(layout: StoreLayout) -> dict[str, str]:
    """Stored stocks that do not sit on the working calendar, each with why: while there is one, the
    working calendar (and the pending versions built on it) must not be published, or that stock
    would read shifted."""
    working = read_working_calendar(layout)
    view = StoreLayout(layout.root, pending=True)
    holdouts = {}
    for code in stored_codes(view):
        meta = stock_record(view, code)
        if meta is None:
            continue
        if not sits_on_calendar(meta, working):
            holdouts[code] = (
                f"its stored rows ({meta['first_date']}..{meta['last_date']}) were not rebuilt onto the new calendar"
            )
    return holdouts


def read_json(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
