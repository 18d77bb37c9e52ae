"""What one bucket should hold: its input stocks, its stored stocks, and the calendar they align to.

Validations read the input themselves (never the run's intermediates), so they also judge a store
that an incremental run only appended to, or one that was damaged after it was written. The input
folder's listing, the stored codes and the calendar are the same for every bucket of one validation
over a run's buckets: a `StoreListing` reads them once for all of them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from precompute_assets.build.bucket_state import input_problems
from precompute_assets.build.buckets import bucket_keys, bucket_of
from precompute_assets.build.written import WrittenStock
from precompute_assets.input.parquet import InputError, StockInput, read_stock_cached, scan_folder
from precompute_assets.settings import Settings
from precompute_assets.store.calendar import read_working_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import align_to_calendar, read_stock_meta, stored_codes


@dataclass
class StoreListing:
    """The input files by code, the stored codes and the working calendar, read once for many buckets."""

    settings: Settings

    @cached_property
    def layout(self) -> StoreLayout:
        return StoreLayout(self.settings.qlib_data_path, pending=True)  # as the next publication shows it

    @cached_property
    def input_files(self) -> dict[str, Path]:
        return scan_folder(self.settings.parquet_data_path).files

    @cached_property
    def stored(self) -> frozenset[str]:
        """Codes with a `features/<code>` entry (delisted ones included)."""
        return frozenset(stored_codes(self.layout))

    @cached_property
    def calendar(self) -> pd.DatetimeIndex:
        """The calendar the buckets write against (it may run ahead of the published one)."""
        return read_working_calendar(self.layout)


@dataclass
class BucketScope:
    """One bucket's stocks in the input and in the store; `bucket=None` means every stock.

    With `written` (what a run's store step wrote), only those stocks are in scope: the checks after
    an update judge what it wrote, the audit (`written=None`) the whole bucket.
    """

    listing: StoreListing
    bucket: str | None
    written: dict[str, WrittenStock] | None = None
    _inputs: dict[str, StockInput | InputError] = field(default_factory=dict, repr=False)
    _metas: dict[str, dict | None] = field(default_factory=dict, repr=False)

    @property
    def settings(self) -> Settings:
        return self.listing.settings

    @property
    def name(self) -> str:
        return self.bucket or "store"

    @property
    def layout(self) -> StoreLayout:
        return self.listing.layout

    @property
    def calendar(self) -> pd.DatetimeIndex:
        """The calendar the buckets write against (it may run ahead of the published one)."""
        return self.listing.calendar

    @cached_property
    def input_files(self) -> dict[str, Path]:
        files = self.listing.input_files
        return {code: files[code] for code in self._in_bucket(files)}

    @cached_property
    def stored(self) -> list[str]:
        """Codes with a `features/<code>` entry in this bucket (delisted ones included)."""
        return self._in_bucket(self.listing.stored)

    def _in_bucket(self, codes: Collection[str]) -> list[str]:
        """The bucket's codes among `codes` (the written ones only, when the run left a record)."""
        if self.written is not None:
            codes = [c for c in self.written if c in codes]
        if self.bucket is not None:
            codes = [c for c in codes if bucket_of(c, self.settings.batches) == self.bucket]
        return sorted(codes)

    def rows_before(self, code: str) -> int:
        """Rows of the stock that the run did not write (0: judge every row)."""
        return 0 if self.written is None or code not in self.written else self.written[code].rows_before

    def meta(self, code: str) -> dict | None:
        """The stock's `_stock.json` (read once per validation), None when missing or unreadable."""
        if code not in self._metas:
            path = self.layout.stock_meta_path(code)
            signature = _signature(path)  # before the read: a record replaced meanwhile is read again
            self._metas[code] = read_stock_meta(self.layout, code)
            _remember_span(path, signature, self._metas[code])
        return self._metas[code]

    def span(self, code: str) -> dict | None:
        """Where the stock's record places its rows (`SPAN_KEYS` of its `_stock.json`), None when the
        record is missing or unreadable. Kept per process while the record is the same file: the
        checks after a run each ask it of every stock the run wrote, and only integrity needs more."""
        path = self.layout.stock_meta_path(code)
        signature = _signature(path)
        known = _spans.get(str(path))
        if signature is not None and known is not None and known[0] == signature:
            _spans.move_to_end(str(path))
            return known[1]
        return _span_of(self.meta(code))

    def appended_starts(self, code: str) -> dict[str, int]:
        """The files (lower-case fields) the run only appended to, each with the first row's calendar
        index the stock's record gives: an append leaves a file's header as it was, which the checks
        after the run that wrote it judged (and the audit judges again), so only the new rows are this
        run's to prove, and they are read without the header."""
        meta = self.span(code)
        if meta is None or not self.rows_before(code):
            return {}
        return dict.fromkeys(self.written[code].appended, int(meta["start_index"]))  # type: ignore[index]

    @cached_property
    def history_shrunk(self) -> dict[str, str]:
        """Readable files the store does not follow because they lack stored dates (the bars step's
        record): judged like unreadable ones, their stock is what was stored before."""
        buckets = bucket_keys(self.settings.batches) if self.bucket is None else [self.bucket]
        return input_problems(StoreLayout(self.settings.qlib_data_path), buckets)["history_shrunk"]

    def read_input(self, code: str) -> StockInput | InputError:
        """The stock's cleaned input by the input contract (read once), or why it cannot be used."""
        if code not in self._inputs:
            path = self.input_files[code]
            try:
                self._inputs[code] = read_stock_cached(path, code)
            except InputError as exc:
                self._inputs[code] = exc
            if code in self.history_shrunk:
                self._inputs[code] = InputError(path, code, "history_shrunk", self.history_shrunk[code])
        return self._inputs[code]

    def readable_inputs(self) -> dict[str, StockInput]:
        loaded = {code: self.read_input(code) for code in self.input_files}
        return {code: stock for code, stock in loaded.items() if isinstance(stock, StockInput)}

    def input_errors(self) -> list[str]:
        return [
            str(self.read_input(code)) for code in self.input_files if isinstance(self.read_input(code), InputError)
        ]

    def aligned_bars(self, code: str) -> pd.DataFrame | None:
        """The input bars on the calendar, as the families see them; None when they do not fit it."""
        stock = self.read_input(code)
        if not isinstance(stock, StockInput):
            return None
        try:
            return align_to_calendar(stock.bars, self.calendar)[1]
        except (KeyError, ValueError):
            return None


SPAN_KEYS = ("start_index", "rows", "first_date", "last_date")
CACHED_SPANS = 20_000
"""Records' spans a process keeps (a few hundred bytes each): the whole market's stocks, with room."""
_spans: OrderedDict[str, tuple[tuple[int, int, int], dict | None]] = OrderedDict()
Signature = tuple[int, int, int]


def _signature(path: Path) -> Signature | None:
    """The record's inode, size and modification time (a commit replaces it: a new inode), None when absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _span_of(meta: dict | None) -> dict | None:
    return None if meta is None else {key: meta[key] for key in SPAN_KEYS if key in meta}


def _remember_span(path: Path, signature: Signature | None, meta: dict | None) -> None:
    if signature is None:
        return
    _spans[str(path)] = (signature, _span_of(meta))
    _spans.move_to_end(str(path))
    if len(_spans) > CACHED_SPANS:
        _spans.popitem(last=False)
