"""Reading the files every bucket shares (`data_version.json`, `indicator_versions.json`) and the
stocks' `_stock.json` records; `build.manifest` writes the shared files."""

from __future__ import annotations

import json

from precompute_assets.store.calendar import read_working_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import read_stock_meta, sits_on_calendar, stored_codes


def stock_metas(layout: StoreLayout) -> dict[str, dict]:
    metas = {}
    for code in stored_codes(layout):
        meta = read_stock_meta(layout, code)
        if meta is not None:
            metas[code] = meta
    return metas


def calendar_holdouts(layout: StoreLayout) -> dict[str, str]:
    """Stored stocks that do not sit on the working calendar, each with why: while there is one, the
    working calendar (and the pending versions built on it) must not be published, or that stock
    would read shifted."""
    working = read_working_calendar(layout)
    view = StoreLayout(layout.root, pending=True)
    holdouts = {}
    for code in stored_codes(view):
        meta = read_stock_meta(view, code)
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
