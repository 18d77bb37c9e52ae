"""Decide, per stock, what the store lacks: nothing, a full rebuild, or appended days and stale columns.

- no stored version, damaged files (sizes differ from `_stock.json`), or a calendar that moved the
  stock's rows: full rebuild (a stock planned to get new days has its sizes checked by the append
  itself, and the store step rebuilds it in full when they differ);
- the input file's bytes unchanged: only columns whose registry fingerprint differs (or is absent);
- changed input whose stored span is unchanged (base fields equal, float32, against the crc32 each
  stored file's record holds): the new days are appended, plus any stale columns; changed values on
  the stored dates are restated history: full rebuild;
- changed input that lacks stored dates (a partial download, rows cut off at either end): nothing is
  written and `HistoryShrunk` names the dates, so the store keeps every day it holds.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from precompute_assets.build.family_update import StockUpdate
from precompute_assets.indicators.registry import Registry
from precompute_assets.store.base_fields import base_fields
from precompute_assets.store.bin_file import encode, read_bin
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import files_match_meta, sits_on_calendar

Mode = Literal["skip", "full", "update"]


class HistoryShrunk(ValueError):
    """The input file lacks dates the store holds for the stock; the message names them."""


@dataclass(frozen=True)
class StockPlan:
    """What one stock needs, and why (the reason shows in metadata and logs)."""

    code: str
    mode: Mode
    reason: str
    update: StockUpdate | None = None
    stored: str = ""
    """`stored_digest` of the `_stock.json` the plan was made against; the writer re-checks it under the
    bucket lock, since another run may have written the stock in between."""

    def to_notes(self) -> dict:
        update = self.update or StockUpdate()
        new_from = None if update.new_from is None else f"{update.new_from:%Y-%m-%d}"
        return {
            "mode": self.mode,
            "reason": self.reason,
            "new_from": new_from,
            "stale": sorted(update.stale),
            "carry": dict(update.carry),
            "stored": self.stored,
        }

    @classmethod
    def from_notes(cls, code: str, notes: dict) -> StockPlan:
        new_from = None if notes["new_from"] is None else pd.Timestamp(notes["new_from"])
        update = StockUpdate(new_from, frozenset(notes["stale"]), notes["carry"]) if notes["mode"] == "update" else None
        return cls(code, notes["mode"], notes["reason"], update, notes.get("stored", ""))


def stored_digest(meta: dict | None) -> str:
    """A digest of a stock's `_stock.json` ("" when the stock is not stored): it changes with every write."""
    return "" if meta is None else hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()


def plan_stock(
    layout: StoreLayout,
    registry: Registry,
    code: str,
    meta: dict | None,
    fingerprint: str,
    calendar: pd.DatetimeIndex,
    load_bars: Callable[[], pd.DataFrame],
    repair: str | None = None,
    file_dates: Callable[[], pd.DatetimeIndex] | None = None,
    published: pd.DatetimeIndex | None = None,
) -> tuple[StockPlan, pd.DataFrame | None]:
    """The stock's plan against `meta` (its `_stock.json` as the caller read it, None when the stock is
    not stored) and, unless it is skipped, its calendar-aligned bars.

    `repair` is why a check marked the stock damaged (a same-size overwrite only a checksum sees).
    `file_dates` gives the dates the file itself holds (after `load_bars`; by default the bars' rows
    with any value), `published` the calendar readers see, on which the stored rows may still sit.
    Raises `HistoryShrunk` when changed input lacks stored dates.
    """
    plan, bars = _plan(layout, registry, code, fingerprint, calendar, load_bars, repair, meta, file_dates, published)
    return replace(plan, stored=stored_digest(meta)), bars


def _plan(
    layout: StoreLayout,
    registry: Registry,
    code: str,
    fingerprint: str,
    calendar: pd.DatetimeIndex,
    load_bars: Callable[[], pd.DataFrame],
    repair: str | None,
    meta: dict | None,
    file_dates: Callable[[], pd.DatetimeIndex] | None,
    published: pd.DatetimeIndex | None,
) -> tuple[StockPlan, pd.DataFrame | None]:
    if meta is None:
        return StockPlan(code, "full", "new stock"), load_bars()
    if repair:
        return StockPlan(code, "full", f"repair: {repair}"), load_bars()
    changed = meta.get("input_fingerprint") != fingerprint
    bars = None
    span_unchanged = False
    if changed:
        bars = load_bars()
        # stored values equal to the file's on every stored day: no stored day with a value is missing
        # from the file, so only a file that ends early can have lost history
        span_unchanged = _stored_span_unchanged(meta, bars)
        if not span_unchanged or bars.index[-1] < pd.Timestamp(meta["last_date"]):
            dates = file_dates() if file_dates is not None else bars.index[bars.notna().any(axis=1).to_numpy()]
            calendars = [calendar] if published is None else [calendar, published]
            _refuse_shrunk_history(layout, code, meta, dates, calendars)
    if not _aligned(meta, calendar):
        return StockPlan(code, "full", "calendar history changed"), bars if bars is not None else load_bars()
    stale = _with_aliases(
        registry, {i.name for i in registry.all() if meta.get("indicators", {}).get(i.field) != i.fingerprint}
    )
    carry = meta.get("state", {})
    # damaged files (sizes differ from the record) are looked for here unless the plan appends new
    # days: an append checks each file's size on its own descriptor (`update_stock`)
    if not changed:
        if not files_match_meta(layout, code, meta):
            return StockPlan(code, "full", "damaged store files"), load_bars()
        if not stale:
            return StockPlan(code, "skip", "unchanged"), None
        return StockPlan(code, "update", "indicator definitions changed", StockUpdate(None, stale, carry)), load_bars()
    assert bars is not None
    if not span_unchanged:
        return StockPlan(code, "full", "restated history"), bars
    last = pd.Timestamp(meta["last_date"])
    new_from = bars.index[bars.index > last][0] if bars.index[-1] > last else None
    if new_from is None and not files_match_meta(layout, code, meta):
        return StockPlan(code, "full", "damaged store files"), bars
    reason = "new days" if new_from is not None else "input file changed outside the stored fields"
    return StockPlan(code, "update", reason, StockUpdate(new_from, stale, carry)), bars


def _with_aliases(registry: Registry, stale: set[str]) -> frozenset[str]:
    """Stale columns with their aliases and sources: an alias is written from its source's values, so
    a stale alias needs its source over the whole history, and a restated source restates its aliases."""
    if not stale:
        return frozenset()
    groups: dict[str, set[str]] = {}
    for indicator in registry.all():
        if indicator.same_as is not None:
            groups.setdefault(indicator.computed_as.name, {indicator.computed_as.name}).add(indicator.name)
    for name in list(stale):
        stale.update(groups.get(registry.get(name).computed_as.name, ()))
    return frozenset(stale)


def _aligned(meta: dict, calendar: pd.DatetimeIndex) -> bool:
    return sits_on_calendar(meta, calendar)


def _refuse_shrunk_history(
    layout: StoreLayout, code: str, meta: dict, dates: pd.DatetimeIndex, calendars: list[pd.DatetimeIndex]
) -> None:
    """Raise `HistoryShrunk` when the file ends before the stored last date, or lacks a stored day
    that holds a value (a day the store holds only as NaN carries nothing to lose)."""
    stored_last = pd.Timestamp(meta["last_date"])
    file_last = dates[-1] if len(dates) else None
    lost = pd.DatetimeIndex([])
    for calendar in calendars:
        if _aligned(meta, calendar):
            span = calendar[meta["start_index"] : meta["start_index"] + meta["rows"]]
            try:
                _, close = read_bin(layout.bin_path(code, "close"))
            except (OSError, ValueError):
                break
            if len(close) == len(span):
                lost = span[~np.isnan(close)].difference(dates)
            break
    if not len(lost) and file_last is not None and file_last >= stored_last:
        return
    parts = []
    if file_last is None or file_last < stored_last:
        ends = "has no dated rows" if file_last is None else f"ends {file_last:%Y-%m-%d}"
        parts.append(f"the file {ends}, the store holds the stock to {stored_last:%Y-%m-%d}")
    if len(lost):
        shown = ", ".join(f"{d:%Y-%m-%d}" for d in lost[:5]) + (", ..." if len(lost) > 5 else "")
        parts.append(f"{len(lost)} stored date(s) missing from the file: {shown}")
        if len(lost) > 5:
            parts[-1] += f" ({lost[0]:%Y-%m-%d}..{lost[-1]:%Y-%m-%d})"
    raise HistoryShrunk("; ".join(parts) + "; the stored data is kept, fix or restore the file to update the stock")


def _stored_span_unchanged(meta: dict, bars: pd.DataFrame) -> bool:
    """True when the new input gives exactly the stored base fields on every stored day.

    Compared against the digest `_stock.json` records of each stored file (its crc32, kept current by
    every commit and append), not by reading the files: a crc32 sees every change of up to 32 bits,
    so any single restated value, and other restatements but for a 2**-32 chance."""
    if f"{bars.index[0]:%Y-%m-%d}" != meta["first_date"] or bars.index[-1] < pd.Timestamp(meta["last_date"]):
        return False
    expected = base_fields(bars.iloc[: meta["rows"]])
    files = meta["files"]
    if {f for f in files if f in expected or f == "amount"} != set(expected):
        return False
    return all(files[name][1] == zlib.crc32(encode(meta["start_index"], values)) for name, values in expected.items())
