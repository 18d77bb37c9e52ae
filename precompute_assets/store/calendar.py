"""The trading calendar: `calendars/day.txt`, the union of every input date."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from precompute_assets.store.atomic import write_text_atomic
from precompute_assets.store.layout import StoreLayout


def read_calendar(layout: StoreLayout) -> pd.DatetimeIndex:
    """The published calendar: what Qlib and every reader see."""
    return _read(layout.calendar_path)


def read_working_calendar(layout: StoreLayout) -> pd.DatetimeIndex:
    """The calendar the buckets align to; published by the manifest step once the buckets are written."""
    return _read(layout.working_calendar_path) if layout.working_calendar_path.exists() else read_calendar(layout)


def write_calendar(layout: StoreLayout, dates: pd.DatetimeIndex) -> None:
    write_text_atomic(layout.calendar_path, _text(dates))


def write_working_calendar(layout: StoreLayout, dates: pd.DatetimeIndex) -> None:
    write_text_atomic(layout.working_calendar_path, _text(dates))


def history_inserted(published: pd.DatetimeIndex, working: pd.DatetimeIndex) -> bool:
    """Whether the working calendar moved published days (a date inserted before the published last
    date): a stock rebuilt onto it no longer reads right through the published one."""
    return len(published) > 0 and not working[: len(published)].equals(published)


def publish_calendar(layout: StoreLayout) -> None:
    """Make appended days visible to readers at once, for every stock (the store's commit point)."""
    write_calendar(layout, read_working_calendar(layout))


def _read(path) -> pd.DatetimeIndex:
    if not path.exists():
        return pd.DatetimeIndex([], name="date")
    return pd.DatetimeIndex(pd.to_datetime(path.read_text().split()), name="date")


def _text(dates: pd.DatetimeIndex) -> str:
    return "".join(f"{d}\n" for d in np.datetime_as_string(dates.values, unit="D"))


def calendar_fingerprint(dates: pd.DatetimeIndex) -> str:
    text = "".join(np.datetime_as_string(dates.values, unit="D")).replace("-", "")  # YYYYMMDD per date
    return hashlib.sha1(text.encode()).hexdigest()[:16]
