"""Write one stock of a bucket by its plan: a full atomic commit, or appended days and replaced columns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from precompute_assets.build.update_plan import StockPlan
from precompute_assets.build.written import WrittenStock
from precompute_assets.indicators.registry import Indicator, Registry
from precompute_assets.store.base_fields import BASE_FIELDS, base_fields
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import Appended, commit_stock, read_stock_meta, update_stock


@dataclass
class StockWrite:
    """What one stock's write did, for metadata and the recorded work."""

    code: str
    mode: str
    rows: int
    rows_written: int
    first_date: str
    last_date: str
    columns: int
    missing_columns: list[str] = field(default_factory=list)
    written: WrittenStock = field(default_factory=WrittenStock)
    appended: Appended = field(default_factory=Appended)
    """The bytes appended in place (none for a full commit), which the backup takes instead of reading them."""


def write_stock(
    layout: StoreLayout,
    registry: Registry,
    code: str,
    calendar: pd.DatetimeIndex,
    bars: pd.DataFrame,
    family_frames: Mapping[str, pd.DataFrame],
    input_fingerprint: str,
    plan: StockPlan,
    state: Mapping[str, float],
    quality: Mapping[str, object],
    publish: bool = True,
    input_stat: list[int] | None = None,
    current: dict | None = None,
) -> StockWrite:
    """Check the family columns against the registry and the bars' dates, then write them.

    A family frame holding unregistered names or dates outside the bars is a programming error and
    refuses the stock rather than storing misaligned data. An alias (`same_as`) is written as a copy
    of its source's column, in full and on update alike. `publish=False` (the calendar has inserted
    history) writes a full version as pending; an in-place append is refused then, as its rows would
    read shifted through the published calendar. `input_stat` is the input file's size and
    modification time as it was read (None: too fresh to vouch for it, so the next run hashes it).
    `current` is the stock's `_stock.json` when the caller has just read it (under the bucket lock).
    """
    if not publish and plan.mode != "full":
        raise ValueError(f"{code}: calendar history was inserted after the plan was made; run the bucket again")
    for family, frame in family_frames.items():
        names = set(registry.names(family))
        unknown = [c for c in frame.columns if c not in names]
        if unknown:
            raise ValueError(f"{code}: {family} returned unregistered columns {unknown}")
        if not _dates_within(frame.index, bars.index):
            raise ValueError(f"{code}: {family} rows do not match the bars' dates")
    expected = [i.name for i in registry.all()]
    meta = {
        "last_date": f"{bars.index[-1]:%Y-%m-%d}",
        "input_fingerprint": input_fingerprint,
        "input_stat": input_stat,
        "quality": quality,
    }
    if plan.mode == "full":
        fields = dict(base_fields(bars))
        fingerprints = {}
        for frame in family_frames.values():
            aligned = frame if frame.index.equals(bars.index) else frame.reindex(bars.index)
            fields.update(zip((c.lower() for c in frame.columns), aligned.to_numpy(np.float32).T, strict=True))
            fingerprints.update({name.lower(): registry.get(name).fingerprint for name in frame.columns})
        shares = dict(quality.get("nan_share") or {})  # type: ignore[call-overload]
        for alias in _aliases(registry, fingerprints):
            fields[alias.field] = fields[alias.computed_as.field]
            fingerprints[alias.field] = alias.fingerprint
            if alias.computed_as.name in shares:
                shares[alias.name] = shares[alias.computed_as.name]
        meta["quality"] = {**quality, "nan_share": shares}
        meta.update(
            first_date=f"{bars.index[0]:%Y-%m-%d}",
            rows=len(bars),
            indicators=fingerprints,
            state=dict(state),
            written_from=0,
        )
        commit_stock(layout, code, int(calendar.get_loc(bars.index[0])), fields, meta, publish=publish)
        written, record, appended = len(bars), WrittenStock(), Appended()
    else:
        written, record, appended = _update(layout, registry, code, bars, family_frames, plan, state, meta, current)
    stored = meta.get("indicators", {})
    return StockWrite(
        code,
        plan.mode,
        meta["rows"],
        written,
        meta["first_date"],
        meta["last_date"],
        len(BASE_FIELDS) + ("amount" in bars) + len(stored),
        [n for n in expected if n.lower() not in stored],
        record,
        appended,
    )


def _update(
    layout: StoreLayout,
    registry: Registry,
    code: str,
    bars: pd.DataFrame,
    family_frames: Mapping[str, pd.DataFrame],
    plan: StockPlan,
    state: Mapping[str, float],
    meta: dict,
    current: dict | None = None,
) -> tuple[int, WrittenStock, Appended]:
    """Append the plan's new days to every column that is not stale, and replace the stale ones.

    Each family frame is aligned once as a block (a reindex per column cost more than the appends)."""
    current = current if current is not None else read_stock_meta(layout, code)
    update = plan.update
    # NaN shares were measured on the full history; the new days do not change them materially
    meta["quality"] = {**meta["quality"], "nan_share": current.get("quality", {}).get("nan_share", {})}
    indicators = dict(current.get("indicators", {}))
    appends: dict[str, np.ndarray] = {}
    new_rows = 0
    if update.new_from is not None:
        new = bars.loc[update.new_from :]
        new_rows = len(new)
        appends.update(base_fields(new))
        for frame in family_frames.values():
            block = frame.reindex(new.index).to_numpy(np.float32).T
            appends.update((n.lower(), v) for n, v in zip(frame.columns, block, strict=True) if n not in update.stale)
        appends.update((a.field, appends[a.computed_as.field]) for a in _aliases(registry, appends, update.stale))
        # a column that failed for this stock earlier has no file: it stays absent (reported missing)
        appends = {f: v for f, v in appends.items() if f in current["files"]}
    replacements = {}
    for frame in family_frames.values():
        stale = [n for n in frame.columns if n in update.stale]
        if stale:  # stale columns come with the stock's whole history (see pipeline.build_bars)
            block = frame[stale].reindex(bars.index).to_numpy(np.float32).T
            replacements.update((n.lower(), v) for n, v in zip(stale, block, strict=True))
            indicators.update((n.lower(), registry.get(n).fingerprint) for n in stale)
    for alias in _aliases(registry, replacements):  # a stale alias's source is stale too (update_plan)
        replacements[alias.field] = replacements[alias.computed_as.field]
        indicators[alias.field] = alias.fingerprint
    meta.update(
        first_date=current["first_date"],
        rows=current["rows"] + new_rows,
        indicators=indicators,
        state={**current.get("state", {}), **state},
        written_from=0 if replacements else current["rows"],  # the rows this write put there
    )
    appended = update_stock(layout, code, appends, replacements, meta, current)
    before = {f: tuple(current["files"][f]) for f in appends if f not in replacements}
    return new_rows, WrittenStock(current["rows"] if not replacements else 0, before), appended


def _dates_within(dates: pd.DatetimeIndex, within: pd.DatetimeIndex) -> bool:
    """Whether every date of `dates` is one of `within` (sorted and unique, as the bars' dates are):
    a binary search per date, where `Index.isin` hashes the stock's whole history for a tail of days."""
    if not within.is_monotonic_increasing or not within.is_unique:
        return bool(dates.isin(within).all())
    if not len(dates) or not len(within):
        return not len(dates)
    keys, known = dates.as_unit(within.unit).asi8, within.asi8  # the family frames' unit may differ
    at = np.searchsorted(known, keys).clip(max=len(known) - 1)
    return bool((known[at] == keys).all())


def _aliases(registry: Registry, written: Mapping[str, object], skip: frozenset[str] = frozenset()) -> list[Indicator]:
    """The aliases (`same_as`) whose source's field is among `written`, except those named in `skip`:
    each alias's file is a copy of its source's column, which the family steps computed once."""
    return [
        i for i in registry.all() if i.same_as is not None and i.computed_as.field in written and i.name not in skip
    ]
