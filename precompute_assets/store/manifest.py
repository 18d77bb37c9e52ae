"""The files every bucket shares: instrument list, `data_version.json`, `indicator_versions.json`.

Only the manifest step writes them, after the buckets, from what the buckets committed; so buckets
running at the same time (on one machine or many) never write the same file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from precompute_assets.registry import FAMILIES, Registry
from precompute_assets.store.atomic import write_json_atomic, write_text_atomic
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


def write_manifest(layout: StoreLayout, registry: Registry, input_codes: Iterable[str], input_version: str) -> dict:
    """Rewrite the shared files from the committed stocks; returns the new `data_version.json`."""
    metas = stock_metas(layout)
    input_codes = set(input_codes)
    write_text_atomic(
        layout.instruments_path,
        "".join(f"{code}\t{m['first_date']}\t{m['last_date']}\n" for code, m in sorted(metas.items())),
    )
    previous = read_json(layout.data_version_path)
    now = dt.datetime.now().isoformat(timespec="seconds")
    firsts = [m["first_date"] for m in metas.values()]
    lasts = [m["last_date"] for m in metas.values()]
    content = {
        "input_version": input_version,
        "indicators": {family: registry.names(family) for family in FAMILIES},
        "stock_count": len(metas),
        "date_range": [min(firsts, default=None), max(lasts, default=None)],
        "delisted": sorted(set(metas) - input_codes),
    }
    unchanged = {k: previous.get(k) for k in content} == content
    version = previous.get("version", 0) if unchanged else previous.get("version", 0) + 1
    data_version = {"version": version, "precompute_date": previous.get("precompute_date", now) if unchanged else now}
    data_version.update(content)
    if not unchanged:
        write_json_atomic(layout.data_version_path, data_version)
    _write_indicator_versions(layout, registry, now)
    return data_version


def _write_indicator_versions(layout: StoreLayout, registry: Registry, now: str) -> None:
    previous = read_json(layout.indicator_versions_path).get("indicators", {})
    entries = {}
    for indicator in registry.all():
        before = previous.get(indicator.name, {})
        changed = before.get("fingerprint") != indicator.fingerprint
        entries[indicator.name] = {
            "family": indicator.family,
            "version": indicator.version,
            "added": before.get("added", indicator.added),
            "updated": now if changed else before.get("updated", now),
            "fingerprint": indicator.fingerprint,
            "formula": indicator.formula,
            "expression": indicator.expression,
            "qlib_name": indicator.qlib_name,
            "warmup": indicator.warmup,
            "history": indicator.history,
        }
    if entries != previous:
        write_json_atomic(layout.indicator_versions_path, {"indicators": entries})
