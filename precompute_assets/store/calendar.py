"""The trading calendar: `calendars/day.txt`, the union of every input date."""

from __future__ import annotations

import hashlib

import pandas as pd

from precompute_assets.store.atomic import write_text_atomic
from precompute_assets.store.layout import StoreLayout


def read_calendar(layout: StoreLayout) -> pd.DatetimeIndex:
    if not layout.calendar_path.exists():
        return pd.DatetimeIndex([], name="date")
    text = layout.calendar_path.read_text().split()
    return pd.DatetimeIndex(pd.to_datetime(text), name="date")


def write_calendar(layout: StoreLayout, dates: pd.DatetimeIndex) -> None:
    write_text_atomic(layout.calendar_path, "".join(f"{d:%Y-%m-%d}\n" for d in dates))


def calendar_fingerprint(dates: pd.DatetimeIndex) -> str:
    return hashlib.sha1("".join(f"{d:%Y%m%d}" for d in dates).encode()).hexdigest()[:16]
