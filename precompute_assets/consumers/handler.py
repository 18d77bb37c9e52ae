"""A Qlib `DataHandlerLP` whose features are the store's columns: every registered indicator by default.

Features come through the loader (direct bin reads, the fallback for anything missing), so an
indicator registered tomorrow joins the feature set without touching this module. The label and the
processors are Alpha158's own, read from Qlib, so a model trained here is comparable with one
trained on `Alpha158`: on the alpha columns the two handlers give the same frames.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import pandas as pd
from qlib.contrib.data.handler import Alpha158, check_transform_proc
from qlib.data import D
from qlib.data.dataset.handler import DataHandlerLP
from qlib.data.dataset.loader import QlibDataLoader

from precompute_assets.consumers.loader import load_multiple_stocks_with_indicators
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.settings import Settings

ALPHA158_LABEL = Alpha158.get_label_config(None)
"""(["Ref($close, -2)/Ref($close, -1) - 1"], ["LABEL0"]): the return from t+1 to t+2."""
ALPHA158_LEARN_PROCESSORS = inspect.signature(Alpha158.__init__).parameters["learn_processors"].default
ALPHA158_INFER_PROCESSORS = inspect.signature(Alpha158.__init__).parameters["infer_processors"].default


class StoreDataLoader(QlibDataLoader):
    """The `feature` group read from the store by registry name; other groups (the label) by Qlib."""

    def __init__(self, columns: Sequence[str], settings: Settings, freq: str = "day") -> None:
        super().__init__(config={"feature": (list(columns), list(columns)), "label": ALPHA158_LABEL}, freq=freq)
        self.settings = settings

    def load_group_df(
        self,
        instruments: object,
        exprs: list,
        names: list,
        start_time: str | pd.Timestamp | None = None,
        end_time: str | pd.Timestamp | None = None,
        gp_name: str | None = None,
    ) -> pd.DataFrame:
        if gp_name != "feature":
            return super().load_group_df(instruments, exprs, names, start_time, end_time, gp_name)
        codes = _codes(instruments, start_time, end_time)
        frames = load_multiple_stocks_with_indicators(codes, start_time, end_time, exprs, settings=self.settings)
        parts = {code: frame[names] for code, frame in frames.items() if not frame.empty}
        if not parts:
            return pd.DataFrame(columns=names, index=pd.MultiIndex.from_tuples([], names=["datetime", "instrument"]))
        df = pd.concat(parts, names=["instrument", "datetime"]).swaplevel().sort_index()
        return df


class StoreHandler(DataHandlerLP):
    """Store columns as features (all registered ones unless `columns`), Alpha158's label and processors."""

    def __init__(
        self,
        instruments: str | list[str] = "all",
        start_time: str | pd.Timestamp | None = None,
        end_time: str | pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
        settings: Settings | None = None,
        infer_processors: list = ALPHA158_INFER_PROCESSORS,
        learn_processors: list = ALPHA158_LEARN_PROCESSORS,
        fit_start_time: str | pd.Timestamp | None = None,
        fit_end_time: str | pd.Timestamp | None = None,
        process_type: str = DataHandlerLP.PTYPE_A,
        **kwargs: object,
    ) -> None:
        columns = list(columns) if columns is not None else load_registry().names()
        super().__init__(
            instruments=instruments,
            start_time=start_time,
            end_time=end_time,
            data_loader=StoreDataLoader(columns, settings or Settings.from_env()),
            infer_processors=check_transform_proc(infer_processors, fit_start_time, fit_end_time),
            learn_processors=check_transform_proc(learn_processors, fit_start_time, fit_end_time),
            process_type=process_type,
            **kwargs,
        )


def _codes(instruments: object, start_time: object, end_time: object) -> list[str]:
    """Qlib's instrument selection (a market name, its config, or a list) as codes, as `D.features` does."""
    if isinstance(instruments, str):
        instruments = D.instruments(instruments)
    if isinstance(instruments, dict):
        return D.list_instruments(instruments, start_time, end_time, as_list=True)
    return list(instruments)
