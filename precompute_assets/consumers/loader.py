"""Load stocks with indicators: read the store's bin files, compute only what the store lacks.

Fast path: `StoreReader` reads each field's file whole, aligned to the store calendar, two stocks at a time;
`load_grid` gives the same values as one (dates, stocks) array per column, for cross-sectional work.
Fallback: a missing store, stock, column file or date range is computed from the parquet input by
`fallback.compute_fields` (the precompute's own code and rounding), so both paths give identical
frames. Each frame's `attrs` says which columns came from where and why; a log line says it too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from precompute_assets.consumers.fallback import Computed, compute_fields
from precompute_assets.consumers.freshness import Freshness, check_freshness
from precompute_assets.consumers.input_state import InputState, input_calendar, input_state
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.input.codes import canonical_code
from precompute_assets.input.parquet import read_dates
from precompute_assets.settings import Settings
from precompute_assets.store.base_fields import ALL_BASE_FIELDS
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader, cached_reader, read_grid
from precompute_assets.store.stock_commit import read_stock_meta

log = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
READ_THREADS = 2
"""Stocks read at once: a read is mostly file syscalls, which release the GIL; more threads than
cores only contend (bench/consumers.py)."""

Date = str | pd.Timestamp | None


class StockNotFound(LookupError):
    """Neither the store nor the input has the stock."""


@dataclass
class _Plan:
    """Where one stock's columns come from: store fields read, fields computed, and why."""

    code: str
    read: list[str]
    compute: list[str] = field(default_factory=list)
    reason: str = ""


def load_stock_data_with_indicators(
    code: str,
    start: Date = None,
    end: Date = None,
    indicators: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    use_precomputed: bool = True,
) -> pd.DataFrame:
    """One stock's date-indexed float32 frame: `open high low close volume` plus `indicators`.

    `indicators` are registry names in any case (all registered ones when None) or base fields
    (`factor`, `vwap`, `amount`); columns keep the caller's spelling. `use_precomputed=False` skips
    the store and computes every column from the input.
    """
    frames, errors = _load([code], start, end, indicators, settings, use_precomputed)
    if code not in frames:
        raise StockNotFound(f"{code}: {'; '.join(errors.get(code, ['no data']))}")
    return frames[code]


def load_multiple_stocks_with_indicators(
    codes: Iterable[str],
    start: Date = None,
    end: Date = None,
    indicators: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    use_precomputed: bool = True,
) -> dict[str, pd.DataFrame]:
    """Frames of many stocks keyed as given; what must be computed is computed once per family for all.

    Store reads run one after the other: they are numpy/pandas work under the GIL, where threads only
    add switching (bench/consumers.py).

    A stock neither the store nor the input has is left out with an error in the log.
    """
    frames, errors = _load(list(codes), start, end, indicators, settings, use_precomputed)
    for code, messages in errors.items():
        if code not in frames:
            log.error("%s: not loaded: %s", code, "; ".join(messages))
    return frames


@dataclass
class StockGrid:
    """Columns of many stocks over a window of the trading calendar (`calendar`, every trading day in it):
    `columns[name]` is a (dates, stocks) float32 array, NaN where a stock has no value; `sources` is per
    stock the `attrs` its loaded frame carries."""

    calendar: pd.DatetimeIndex
    codes: list[str]
    columns: dict[str, np.ndarray]
    sources: dict[str, dict]


def load_grid(
    codes: Iterable[str],
    start: Date = None,
    end: Date = None,
    indicators: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    use_precomputed: bool = True,
) -> StockGrid:
    """The columns `load_multiple_stocks_with_indicators` gives (same values, same fallback), as arrays
    over the `trading_calendar` days of [start, end], stocks by canonical code in code order.

    A current store is read straight into the arrays (`store.reader.read_grid`); the stocks it lacks,
    or lacks a column of, go through the loader (store where it can, computed otherwise). Without a
    store, with a stale one (its calendar may lag the input's) or with `use_precomputed=False`, every
    stock goes through the loader.
    """
    settings = settings or Settings.from_env()
    columns = resolve_columns(indicators)
    qlib_codes = sorted({canonical_code(code) for code in codes})
    reader = _reader(StoreLayout(settings.qlib_data_path))
    fresh = reader is not None and use_precomputed
    freshness = check_freshness(settings, input_state(settings.parquet_data_path)) if fresh else None
    load = partial(load_multiple_stocks_with_indicators, start=start, end=end, indicators=indicators, settings=settings)
    if reader is None or freshness is None or freshness.stale:
        frames = load(qlib_codes, use_precomputed=use_precomputed)
        calendar = trading_calendar(settings)
        window = calendar[
            calendar.slice_indexer(pd.Timestamp(start) if start else None, pd.Timestamp(end) if end else None)
        ]
        return grid_of_frames(frames, window, list(columns))
    stored = read_grid(reader, qlib_codes, list(columns.values()), start, end)
    incomplete = sorted(set(stored.absent) | {code for code, _ in stored.missing})
    frames = load(incomplete) if incomplete else {}
    kept = [j for j, code in enumerate(stored.codes) if code not in incomplete or code in frames]
    values = stored.values if len(kept) == len(stored.codes) else stored.values[:, :, kept]
    grid = StockGrid(
        stored.calendar,
        [stored.codes[j] for j in kept],
        dict(zip(columns, values, strict=True)),
        {code: _attrs(_Plan(code, list(columns.values())), columns, freshness, []) for code in stored.codes},
    )
    for code, frame in frames.items():
        _put(grid, grid.codes.index(code), frame)
        grid.sources[code] = frame.attrs
    grid.sources = {code: grid.sources[code] for code in grid.codes}
    return grid


def grid_of_frames(frames: dict[str, pd.DataFrame], calendar: pd.DatetimeIndex, columns: list[str]) -> StockGrid:
    """Loaded frames (dates on `calendar`) as a `StockGrid` of `columns`."""
    codes = sorted(frames)
    values = np.full((len(columns), len(calendar), len(codes)), np.nan, dtype=np.float32)
    grid = StockGrid(calendar, codes, dict(zip(columns, values, strict=True)), {})
    for j, code in enumerate(codes):
        _put(grid, j, frames[code])
        grid.sources[code] = frames[code].attrs
    return grid


def _put(grid: StockGrid, j: int, frame: pd.DataFrame) -> None:
    """Stock `j`'s columns, all of them, from its frame."""
    rows = grid.calendar.get_indexer(frame.index)
    if (rows < 0).any():
        raise ValueError(f"{grid.codes[j]}: dates outside the trading calendar")
    block = frame[list(grid.columns)].to_numpy(np.float32)
    for k, values in enumerate(grid.columns.values()):
        values[:, j] = np.nan
        values[rows, j] = block[:, k]


def trading_calendar(settings: Settings | None = None) -> pd.DatetimeIndex:
    """The calendar loaded frames are aligned to: the store's when current, else joined with the input's."""
    settings = settings or Settings.from_env()
    layout = StoreLayout(settings.qlib_data_path)
    reader = _reader(layout)
    state = input_state(settings.parquet_data_path)
    if state is None:
        return reader.calendar if reader is not None else pd.DatetimeIndex([], name="date")
    freshness = check_freshness(settings, state) if reader is not None else Freshness(stale=False)
    return _fallback_calendar(reader, state, freshness)


def resolve_columns(indicators: Sequence[str] | None) -> dict[str, str]:
    """Output column name -> store field (lower case): the price columns first, then the indicators."""
    registry = load_registry()
    names = registry.names() if indicators is None else list(indicators)
    columns = {name: name for name in PRICE_COLUMNS}
    taken = set(columns.values())
    for name in names:
        store_field = name.lower() if name.lower() in ALL_BASE_FIELDS else registry.get(name).field
        if store_field not in taken:
            columns[name] = store_field
            taken.add(store_field)
    return columns


def _load(
    codes: list[str],
    start: Date,
    end: Date,
    indicators: Sequence[str] | None,
    settings: Settings | None,
    use_precomputed: bool,
) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    settings = settings or Settings.from_env()
    columns = resolve_columns(indicators)
    fields = list(columns.values())
    layout = StoreLayout(settings.qlib_data_path)
    reader = _reader(layout)
    state = input_state(settings.parquet_data_path)
    freshness = check_freshness(settings, state) if reader is not None else Freshness(stale=False, reason="no store")
    canonical = {code: canonical_code(code) for code in codes}
    if reader is None or not use_precomputed:
        why = f"no store at {layout.root}" if reader is None else "use_precomputed=False"
        plans = {c: _Plan(c, [], list(fields), why) for c in set(canonical.values())}
        stored: dict[str, pd.DataFrame] = {}
    else:
        wanted = sorted(set(canonical.values()))
        with ThreadPoolExecutor(READ_THREADS) as pool:  # file reads release the GIL: two overlap well
            stored = dict(zip(wanted, pool.map(lambda c: reader.read(c, fields, start, end), wanted), strict=True))
        plans = {c: _plan(c, fields, stored[c], reader, layout, state, freshness, start, end) for c in stored}
    computed = _compute(plans, reader, state, freshness)
    frames: dict[str, pd.DataFrame] = {}
    errors: dict[str, list[str]] = {}
    for code, qlib_code in canonical.items():
        plan = plans[qlib_code]
        errors[code] = computed.errors.get(qlib_code, [])
        if plan.compute and qlib_code not in computed.frames:
            continue
        part = stored.get(qlib_code) if not plan.compute or plan.read else None
        frame = _assemble(plan, part, computed.frames.get(qlib_code), columns, start, end)
        frame.attrs = _attrs(plan, columns, freshness, errors[code])
        frames[code] = frame
    return frames, errors


def _reader(layout: StoreLayout) -> StoreReader | None:
    return cached_reader(layout)


def _plan(
    code: str,
    fields: list[str],
    stored: pd.DataFrame,
    reader: StoreReader,
    layout: StoreLayout,
    state: InputState | None,
    freshness: Freshness,
    start: Date,
    end: Date,
) -> _Plan:
    if stored.columns.empty and not reader.has_stock(code):
        return _Plan(code, [], list(fields), "stock not in the store")
    if code in freshness.lagging and state is not None:
        missing = _dates_missing_from_store(reader, layout, state, code, start, end)
        if missing:
            return _Plan(code, [], list(fields), missing)
    have = set(stored.columns)  # a set: pandas' Index lookup costs more than the read, column by column
    absent = [f for f in fields if f not in have]
    if not absent:
        return _Plan(code, list(fields))
    return _Plan(code, [f for f in fields if f in have], absent, f"not in the store: {', '.join(absent)}")


def _dates_missing_from_store(
    reader: StoreReader, layout: StoreLayout, state: InputState, code: str, start: Date, end: Date
) -> str:
    """For a stock whose input moved on since the precompute: input dates in the window the store lacks.

    The store shows a stock's rows up to the published calendar (appended rows wait for the manifest).
    """
    if code not in state.files:
        return ""
    meta = read_stock_meta(layout, code) or {}
    dates = read_dates(state.files[code], code)
    window = dates[(dates >= pd.Timestamp(start or dates[0])) & (dates <= pd.Timestamp(end or dates[-1]))]
    first = pd.Timestamp(meta.get("first_date", pd.Timestamp.max))
    last = min(pd.Timestamp(meta.get("last_date", pd.Timestamp.min)), reader.calendar[-1])
    outside = window[(window < first) | (window > last)]
    if outside.empty:
        return ""
    return f"input dates {outside[0]:%Y-%m-%d}..{outside[-1]:%Y-%m-%d} are not in the store (input is newer)"


def _compute(
    plans: dict[str, _Plan],
    reader: StoreReader | None,
    state: InputState | None,
    freshness: Freshness,
) -> Computed:
    needed = {code: plan.compute for code, plan in plans.items() if plan.compute}
    if not needed:
        return Computed()
    if state is None:
        raise FileNotFoundError(
            f"cannot compute {sorted(needed)} ({plans[next(iter(needed))].reason}): "
            "the input folder does not exist (set PARQUET_DATA_PATH)"
        )
    for code, plan in plans.items():
        if plan.compute:
            log.log(
                logging.INFO if plan.reason == "use_precomputed=False" else logging.WARNING,
                "%s: computing %d column(s) from the input: %s",
                code,
                len(plan.compute),
                plan.reason,
            )
    return compute_fields(state.files, needed, _fallback_calendar(reader, state, freshness))


def _fallback_calendar(reader: StoreReader | None, state: InputState, freshness: Freshness) -> pd.DatetimeIndex:
    """The calendar the precompute would use now: the store's when current, else it joined with the input's."""
    if reader is not None and not freshness.stale:
        return reader.calendar
    stored = reader.calendar if reader is not None else pd.DatetimeIndex([], name="date")
    return stored.union(input_calendar(state)).rename("date")


def _assemble(
    plan: _Plan,
    stored: pd.DataFrame | None,
    computed: pd.DataFrame | None,
    columns: dict[str, str],
    start: Date,
    end: Date,
) -> pd.DataFrame:
    if computed is not None:
        computed = computed.loc[pd.Timestamp(start) if start else None : pd.Timestamp(end) if end else None]
    if stored is None:
        base = computed
    elif computed is None:
        base = stored
    else:
        base = stored.join(computed[plan.compute].reindex(stored.index))
    fields = list(columns.values())
    out = base if list(base.columns) == fields else base[fields]
    out.columns = list(columns)  # this call's own frame: renamed in place (set_axis would copy it)
    return out


def _attrs(plan: _Plan, columns: dict[str, str], freshness: Freshness, errors: list[str]) -> dict[str, object]:
    by_field = {f: name for name, f in columns.items()}
    return {
        "code": plan.code,
        "from_store": [by_field[f] for f in plan.read],
        "computed": [by_field[f] for f in plan.compute],
        "reason": plan.reason,
        "store_stale": freshness.stale,
        "errors": list(errors),
    }
