"""Reading the files every bucket shares (`data_version.json`, `indicator_versions.json`) and the
stocks' `_stock.json` records; `build.manifest` writes the shared files."""

from __future__ import annotations

import json

from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import read_stock_meta, stored_codes


def stock_metas(layout: StoreLayout) -> dict[str, dict]:
    metas = {}
    for code in stored_codes(layout):
        meta = read_stock_meta(layout, code)
        if meta is not None:
            metas[code] = meta
    return metas


def read_json(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
