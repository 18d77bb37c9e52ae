"""Train Qlib's LightGBM model on the store: `StoreHandler` -> `DatasetH` -> `LGBModel`, scored by IC.

With no store, the features fall back to Qlib's own `Alpha158` handler on a staging directory of the
input's prices (Alpha158 computes its factors from those, through Qlib's expression engine). MLflow,
which Qlib's recorder and `LGBModel.fit` write to, gets an SQLite store beside the store's work files:
MLflow 3 refuses Qlib's default `./mlruns` file store.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
from qlib.contrib.data.handler import Alpha158
from qlib.contrib.eva.alpha import calc_ic
from qlib.contrib.model.gbdt import LGBModel
from qlib.data.dataset import DatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.workflow import R
from scipy.stats import ConstantInputWarning

from precompute_assets.consumers.handler import StoreHandler
from precompute_assets.consumers.input_state import input_state
from precompute_assets.consumers.loader import load_multiple_stocks_with_indicators, trading_calendar
from precompute_assets.consumers.qlib_session import (
    EXPERIMENT,
    init_store_qlib,
    kept_qlib_config,
    prepare_experiment,
    sqlite_tracking_uri,
)
from precompute_assets.consumers.staging import staged_qlib_dir
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout

Segments = Mapping[str, tuple[str, str]]

# Qlib's benchmark configuration for LightGBM on Alpha158 (examples/benchmarks/LightGBM).
DEFAULT_MODEL = {
    "loss": "mse",
    "colsample_bytree": 0.8879,
    "learning_rate": 0.2,
    "subsample": 0.8789,
    "lambda_l1": 205.6999,
    "lambda_l2": 580.9768,
    "max_depth": 8,
    "num_leaves": 210,
    "num_threads": os.cpu_count() or 1,
}
ALPHA158_FIELDS = ("open", "high", "low", "close", "volume", "vwap")


@dataclass
class TrainResult:
    """The fitted model, its dataset, test-segment predictions and metrics, and which handler fed it."""

    model: LGBModel
    dataset: DatasetH
    predictions: pd.Series
    metrics: dict[str, float]
    handler: str


def default_segments(calendar: pd.DatetimeIndex, years: int = 4) -> dict[str, tuple[str, str]]:
    """The last `years` of the calendar: the first half to train, then a quarter each to validate and test."""
    days = calendar[-years * 252 :]
    cuts = [0, len(days) // 2, len(days) * 3 // 4, len(days)]
    spans = [(f"{days[a]:%Y-%m-%d}", f"{days[b - 1]:%Y-%m-%d}") for a, b in itertools.pairwise(cuts)]
    return dict(zip(("train", "valid", "test"), spans, strict=True))


def train_model(
    settings: Settings | None = None,
    *,
    instruments: str | list[str] = "all",
    segments: Segments | None = None,
    columns: Sequence[str] | None = None,
    model_params: Mapping[str, object] | None = None,
    tracking_uri: str | None = None,
) -> TrainResult:
    """Fit `LGBModel` on train/valid, predict the test segment, and report IC / rank IC there.

    Features: `StoreHandler` on the store, or Qlib's `Alpha158` on the input's prices when there is
    no store. Runs as one MLflow run of the `precompute_assets` experiment, in `tracking_uri` or else
    an SQLite store under the work path. Qlib's global configuration is as before afterwards.
    """
    settings = settings or Settings.from_env()
    tracking = settings.work_path / "mlflow"
    uri = tracking_uri or sqlite_tracking_uri(tracking)
    prepare_experiment(uri, tracking / "artifacts")
    segments = segments or default_segments(trading_calendar(settings))
    start, end = segments["train"][0], segments["test"][1]
    fit = {"fit_start_time": segments["train"][0], "fit_end_time": segments["train"][1]}
    with kept_qlib_config(), _qlib_data(settings, instruments, end, uri) as source:
        if source == "store":
            handler = StoreHandler(instruments, start, end, columns, settings, **fit)
        else:
            handler = Alpha158(instruments=instruments, start_time=start, end_time=end, **fit)
        dataset = DatasetH(handler, dict(segments))
        model = LGBModel(**{**DEFAULT_MODEL, **(model_params or {})})
        with R.start(experiment_name=EXPERIMENT):
            model.fit(dataset)
            predictions = model.predict(dataset, "test")
            metrics = ic_metrics(predictions, dataset)
            R.log_params(handler=source, features=len(handler.get_cols("feature")), segments=str(dict(segments)))
            R.log_metrics(**metrics)
    return TrainResult(model, dataset, predictions, metrics, source)


def ic_metrics(predictions: pd.Series, dataset: DatasetH) -> dict[str, float]:
    """Daily IC and rank IC of the predictions against the raw (unnormalised) test label.

    A day with constant predictions has no correlation: it is NaN and left out of the means.
    """
    label = dataset.prepare("test", col_set="label", data_key=DataHandlerLP.DK_R).iloc[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        ic, rank_ic = calc_ic(predictions, label.reindex(predictions.index))
    return {
        "ic": float(ic.mean()),
        "icir": float(ic.mean() / ic.std()) if ic.std() > 0 else 0.0,
        "rank_ic": float(rank_ic.mean()),
        "rank_icir": float(rank_ic.mean() / rank_ic.std()) if rank_ic.std() > 0 else 0.0,
        "test_days": int(ic.notna().sum()),
    }


@contextmanager
def _qlib_data(settings: Settings, instruments: str | list[str], end: str, tracking_uri: str) -> Iterator[str]:
    """Qlib initialised on the store ("store"), or without one on the input's prices ("alpha158")."""
    if StoreLayout(settings.qlib_data_path).calendar_path.exists():
        init_store_qlib(settings.qlib_data_path, tracking_uri=tracking_uri)
        yield "store"
        return
    state = input_state(settings.parquet_data_path)
    if state is None:
        raise FileNotFoundError(f"no store at {settings.qlib_data_path} and no input at {settings.parquet_data_path}")
    codes = sorted(state.files) if isinstance(instruments, str) else list(instruments)
    frames = load_multiple_stocks_with_indicators(codes, None, end, ["vwap"], settings=settings)
    with staged_qlib_dir(frames, trading_calendar(settings), ALPHA158_FIELDS) as root:
        init_store_qlib(root, tracking_uri=tracking_uri)
        yield "alpha158"
