"""A Qlib `DataHandlerLP` whose features are the store's columns: every registered indicator by default.

The loader builds the frame `DataHandlerLP` keeps, in its final (datetime, instrument) layout and
float32, straight from the bin files (`store.reader.read_panel`): one block, filled column by column,
so the load's peak memory is about the frame itself. The label and the processors are Alpha158's own,
read from Qlib, so a model trained here is comparable with one trained on `Alpha158`: on the alpha
columns the two handlers give the same frames. The label is Alpha158's expression evaluated on the
stored close in float32, as Qlib's operators do; any other label goes through Qlib.

It reads the store `qlib.init` was given (`provider_uri`), or the one named by `provider_uri` /
`settings`. A column the store lacks for a stock (an indicator registered since the last build) is
computed from the input by the loader's fallback; a stock without a store folder is left out.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from qlib.config import C
from qlib.contrib.data.handler import Alpha158, check_transform_proc
from qlib.data import D
from qlib.data.dataset.handler import DataHandlerLP
from qlib.data.dataset.loader import QlibDataLoader
from qlib.data.dataset.processor import DropnaProcessor

from precompute_assets.consumers.loader import load_multiple_stocks_with_indicators
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.settings import Settings
from precompute_assets.store.base_fields import ALL_BASE_FIELDS
from precompute_assets.store.bin_file import read_raw
from precompute_assets.store.layout import BIN_SUFFIX, StoreLayout
from precompute_assets.store.reader import Panel, StoreReader, cached_reader, read_panel, window

log = logging.getLogger(__name__)

ALPHA158_LABEL = Alpha158.get_label_config(None)
"""(["Ref($close, -2)/Ref($close, -1) - 1"], ["LABEL0"]): the return from t+1 to t+2."""
ALPHA158_LEARN_PROCESSORS = inspect.signature(Alpha158.__init__).parameters["learn_processors"].default
ALPHA158_INFER_PROCESSORS = inspect.signature(Alpha158.__init__).parameters["infer_processors"].default

Date = str | pd.Timestamp | None


class StoreDataLoader(QlibDataLoader):
    """The `feature` group read from the store by registry name, the label as Alpha158's, one frame."""

    def __init__(
        self,
        columns: Sequence[str],
        settings: Settings | None = None,
        freq: str = "day",
        label: tuple[list[str], list[str]] = ALPHA158_LABEL,
    ) -> None:
        super().__init__(config={"feature": (list(columns), list(columns)), "label": label}, freq=freq)
        self.columns, self.settings, self.label = list(columns), settings, (list(label[0]), list(label[1]))

    def store_settings(self) -> Settings:
        """The store to read: the one given, else the one `qlib.init` was given, else the environment's."""
        if self.settings is not None:
            return self.settings
        env = Settings.from_env()
        if C.registered:
            return Settings(env.parquet_data_path, Path(C.dpm.get_data_uri(self.freq)), env.batches)
        return env

    def load(self, instruments: object = None, start_time: Date = None, end_time: Date = None) -> pd.DataFrame:
        settings = self.store_settings()
        reader = cached_reader(StoreLayout(settings.qlib_data_path))
        if reader is None:
            raise FileNotFoundError(f"no store at {settings.qlib_data_path} (no calendars/day.txt)")
        codes, spans = _instruments("all" if instruments is None else instruments, start_time, end_time)
        fields = [_store_field(name) for name in self.columns]
        native_label = self.label == (list(ALPHA158_LABEL[0]), list(ALPHA158_LABEL[1]))
        panel = read_panel(
            reader, codes, fields, start_time, end_time, spans=spans, extra_columns=1 if native_label else 0
        )
        if panel.absent:
            log.warning("%d stock(s) not in the store %s, left out: %s", len(panel.absent), reader.layout.root,
                        ", ".join(panel.absent[:10]))  # fmt: skip
        if panel.missing:
            _compute_missing(panel, self.columns, settings, start_time, end_time)
        features = [("feature", name) for name in self.columns]
        if native_label:
            _alpha158_label(panel, reader, len(fields))
            return panel.frame(pd.MultiIndex.from_tuples([*features, ("label", self.label[1][0])]))
        frame = panel.frame(pd.MultiIndex.from_tuples(features))
        label = super().load_group_df(instruments, *self.label, start_time, end_time, "label")
        label.columns = pd.MultiIndex.from_tuples([("label", name) for name in label.columns])
        return frame.join(label.reindex(frame.index))


class StoreHandler(DataHandlerLP):
    """Store columns as features (all registered ones unless `columns`), Alpha158's label and processors.

    The store is the one `qlib.init` was given, unless `provider_uri` or `settings` names another.
    """

    def __init__(
        self,
        instruments: str | list[str] = "all",
        start_time: Date = None,
        end_time: Date = None,
        columns: Sequence[str] | None = None,
        settings: Settings | None = None,
        infer_processors: list = ALPHA158_INFER_PROCESSORS,
        learn_processors: list = ALPHA158_LEARN_PROCESSORS,
        fit_start_time: Date = None,
        fit_end_time: Date = None,
        process_type: str = DataHandlerLP.PTYPE_A,
        provider_uri: str | Path | None = None,
        **kwargs: object,
    ) -> None:
        columns = list(columns) if columns is not None else load_registry().names()
        if provider_uri is not None and settings is None:
            env = Settings.from_env()
            settings = Settings(env.parquet_data_path, Path(provider_uri).expanduser(), env.batches)
        super().__init__(
            instruments=instruments,
            start_time=start_time,
            end_time=end_time,
            data_loader=StoreDataLoader(columns, settings),
            infer_processors=check_transform_proc(infer_processors, fit_start_time, fit_end_time),
            learn_processors=check_transform_proc(learn_processors, fit_start_time, fit_end_time),
            process_type=process_type,
            **kwargs,
        )

    def process_data(self, with_fit: bool = False) -> None:
        """`DataHandlerLP.process_data`'s flow, processors and fits, with fewer whole-frame copies.

        Qlib copies a frame before every processor list that has a writing processor, even when an
        earlier processor already returned new data (`DropnaLabel` does), and it processes a copy of
        the raw frame even with `drop_raw=True`, which its docs say works in place. Here a frame is
        copied only before a processor that would write into a frame someone else still reads; with
        `drop_raw=True` the raw frame itself is processed (and then dropped). The frames equal
        Qlib's; at full market that is the difference between fitting in memory or not.
        """
        shared = _run_processors(self._data, self.shared_processors, with_fit, True, own=self.drop_raw)
        # infer may write into the shared frame when no one reads it after: learn starts from infer's
        # output (PTYPE_A, not PTYPE_I) and the shared frame is not a raw frame that is kept
        writable = self.process_type == self.PTYPE_A and (shared is not self._data or self.drop_raw)
        self._infer = _run_processors(shared, self.infer_processors, with_fit, True, own=writable)
        if self.process_type == self.PTYPE_I:
            base = shared
        elif self.process_type == self.PTYPE_A:
            base = self._infer
        else:
            raise NotImplementedError(f"process_type {self.process_type!r} is not supported")
        self._learn = _run_processors(base, self.learn_processors, with_fit, False, own=False)
        if self.drop_raw:
            del self._data

    def _fetch_data(
        self,
        data_storage: object,
        selector: object = slice(None, None),
        level: str | int = "datetime",
        col_set: str | list[str] = DataHandlerLP.CS_ALL,
        squeeze: bool = False,
        proc_func: object = None,
    ) -> pd.DataFrame:
        """A date range of one or more column groups as a view of the frame (Qlib's `fetch_orig`, the
        default: "return the original data instead of copy if possible"); other requests go to Qlib."""
        view = _date_range_view(data_storage, selector, level, col_set) if self.fetch_orig and not squeeze else None
        if view is None or proc_func is not None:
            return super()._fetch_data(data_storage, selector, level, col_set, squeeze, proc_func)
        return view


def _run_processors(df: pd.DataFrame, processors: list, with_fit: bool, for_infer: bool, own: bool) -> pd.DataFrame:
    """Qlib's `DataHandlerLP._run_proc_l`, copying `df` before the first writing processor unless the
    frame is `own` (no one else reads it) or an earlier processor returned new data (a dropna)."""
    for processor in processors:
        if for_infer and not processor.is_for_infer():
            raise TypeError("Only processors usable for inference can be used in `infer_processors` ")
        if not own and not processor.readonly():
            df, own = df.copy(), True
        if with_fit:
            processor.fit(df)
        df = processor(df)
        own = own or isinstance(processor, DropnaProcessor)  # dropna returns new data, never a view
    return df


def _date_range_view(df: object, selector: object, level: str | int, col_set: str | list[str]) -> pd.DataFrame | None:
    """`df`'s rows of a date slice and its columns of `col_set`, as a view, when the frame is sorted by
    datetime first and the groups are contiguous columns; None otherwise."""
    if isinstance(selector, (tuple, list)) and len(selector) == 2:
        selector = slice(*selector)  # as Qlib reads a pair
    if not (
        isinstance(df, pd.DataFrame)
        and isinstance(df.index, pd.MultiIndex)
        and isinstance(df.columns, pd.MultiIndex)
        and df.index.names[0] == "datetime"
        and level in ("datetime", 0)
        and isinstance(selector, slice)
        and selector.step is None
        and col_set != DataHandlerLP.CS_RAW
    ):
        return None
    groups = df.columns.get_level_values(0)
    if col_set == DataHandlerLP.CS_ALL:
        wanted = list(dict.fromkeys(groups))
    else:
        wanted = [col_set] if isinstance(col_set, str) else list(col_set)
    columns = np.flatnonzero(groups.isin(wanted))
    if (
        not len(columns)
        or columns[-1] - columns[0] + 1 != len(columns)
        or list(dict.fromkeys(groups[columns])) != wanted
    ):
        return None
    dates, codes = df.index.levels[0], df.index.codes[0]
    if not (dates.is_monotonic_increasing and (len(codes) < 2 or (codes[1:] >= codes[:-1]).all())):
        return None
    lo = 0 if selector.start is None else _first_row(codes, dates.searchsorted(pd.Timestamp(selector.start), "left"))
    hi = (
        len(codes)
        if selector.stop is None
        else _first_row(codes, dates.searchsorted(pd.Timestamp(selector.stop), "right"))
    )
    view = df.iloc[lo:hi]  # rows first: a row slice of each block is a view, a column slice across blocks is not
    if len(columns) < len(df.columns):
        view = view.iloc[:, columns[0] : columns[-1] + 1]
    if col_set == DataHandlerLP.CS_ALL or isinstance(col_set, str):  # one column level, as Qlib gives them
        view = view.copy(deep=False)  # `droplevel` would copy the data
        view.columns = view.columns.droplevel(0)
    return view


def _first_row(codes: np.ndarray, date_code: int) -> int:
    """The first row whose date code is at least `date_code` (rows sorted by date)."""
    return int(np.searchsorted(codes, date_code, "left"))


def _store_field(name: str) -> str:
    return name.lower() if name.lower() in ALL_BASE_FIELDS else load_registry().get(name).field


def _instruments(instruments: object, start: Date, end: Date) -> tuple[list[str], dict | None]:
    """Qlib's selection (a market name, its config, or a list) as codes, with each market member's
    spans (Qlib keeps only those dates of a market's stocks; a list of codes has no spans)."""
    if isinstance(instruments, str):
        instruments = D.instruments(instruments)
    if isinstance(instruments, dict):
        spans = D.list_instruments(instruments, start, end, as_list=False)
        return list(spans), spans
    return list(instruments), None


def _alpha158_label(panel: Panel, reader: StoreReader, column: int) -> None:
    """`Ref($close, -2) / Ref($close, -1) - 1` per stock, in float32 as Qlib's operators compute it:
    on the stock's close over the panel's dates and two days past them (within the published calendar)."""
    last_published = len(reader.calendar) - 1
    for code in panel.codes:
        positions = panel.positions(code)
        if not len(positions):
            continue
        lo, hi = int(positions[0]), int(positions[-1])
        try:
            data = read_raw(str(reader.layout.stock_dir(code) / f"close{BIN_SUFFIX}"))
        except FileNotFoundError:
            continue
        if data.size < 2:
            continue
        first, close = window(data, lo, min(hi + 2, last_published))
        label = np.full(max(0, min(hi, first + len(close) - 1) - first + 1), np.nan, dtype=np.float32)
        valid = max(0, min(len(label), len(close) - 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            label[:valid] = close[2 : 2 + valid] / close[1 : 1 + valid] - np.float32(1)
        panel.fill(column, code, first, label)


def _compute_missing(panel: Panel, columns: list[str], settings: Settings, start: Date, end: Date) -> None:
    """Fill the columns the store lacks for some stocks from the loader's fallback (the input)."""
    name_of = {_store_field(name): name for name in columns}
    column_of = {name: j for j, name in enumerate(columns)}
    wanted: dict[str, list[str]] = {}
    for code, store_field in panel.missing:
        wanted.setdefault(code, []).append(name_of[store_field])
    lacking = len({n for names in wanted.values() for n in names})
    log.warning("%d stock(s) lack %d column(s) in the store; computing them from the input %s",
                len(wanted), lacking, settings.parquet_data_path)  # fmt: skip
    for names in {tuple(sorted(n)) for n in wanted.values()}:
        group = [code for code, n in wanted.items() if tuple(sorted(n)) == names]
        frames = load_multiple_stocks_with_indicators(group, start, end, list(names), settings=settings)
        for code, frame in frames.items():
            if frame.empty:
                continue
            first = int(panel.calendar.get_loc(frame.index[0]))
            for name in names:
                panel.fill(column_of[name], code, first, frame[name].to_numpy(np.float32))
