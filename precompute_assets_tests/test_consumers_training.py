"""Training: the store handler equals Qlib's own Alpha158 handler on the alpha columns, and trains the
same model; new indicators join the features; without a store, training falls back to Alpha158."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from consumers_fixtures import CODES, shared_store
from qlib.contrib.data.handler import Alpha158
from qlib.contrib.model.gbdt import LGBModel
from qlib.data.dataset import DatasetH
from qlib.workflow import R

from precompute_assets.consumers import StoreHandler, init_store_qlib, train_model
from precompute_assets.consumers.qlib_session import (
    EXPERIMENT,
    kept_qlib_config,
    prepare_experiment,
    sqlite_tracking_uri,
)
from precompute_assets.indicators.catalog import load_registry, register_indicator
from precompute_assets.indicators.registry import REGISTRY
from precompute_assets.settings import Settings

SEGMENTS = {
    "train": ("2020-01-01", "2021-06-30"),
    "valid": ("2021-07-01", "2021-12-31"),
    "test": ("2022-01-01", "2022-12-27"),
}
FIT = {"fit_start_time": SEGMENTS["train"][0], "fit_end_time": SEGMENTS["train"][1]}
# Light regularisation: the default (Qlib's benchmark for the whole market) grows no tree on six stocks.
MODEL = {"lambda_l1": 1.0, "lambda_l2": 1.0, "num_leaves": 15, "num_threads": 1, "seed": 7, "num_boost_round": 40}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def handlers(store: Settings):
    """The store handler on the 158 alpha columns, and Qlib's Alpha158 on the same store."""
    alpha = load_registry().all("alpha158")
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path, fast=False)
        ours = StoreHandler("all", SEGMENTS["train"][0], SEGMENTS["test"][1], [i.name for i in alpha], store, **FIT)
        qlib = Alpha158(instruments="all", start_time=SEGMENTS["train"][0], end_time=SEGMENTS["test"][1], **FIT)
    return ours, qlib, alpha


def test_alpha_columns_equal_qlibs_alpha158(handlers) -> None:
    ours, qlib, alpha = handlers
    features = ours.fetch(col_set="feature")
    expected = qlib.fetch(col_set="feature")
    assert list(features.columns) == [i.name for i in alpha]
    features.columns = pd.Index([i.qlib_name for i in alpha], name=expected.columns.name)
    pd.testing.assert_frame_equal(features, expected)
    for key in ("raw", "learn", "infer"):
        pd.testing.assert_frame_equal(
            ours.fetch(col_set="label", data_key=key), qlib.fetch(col_set="label", data_key=key)
        )


def test_same_predictions_as_alpha158(handlers, store: Settings, tmp_path) -> None:
    ours, qlib, _ = handlers
    predictions = []
    uri = sqlite_tracking_uri(tmp_path)
    prepare_experiment(uri, tmp_path / "artifacts")
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path, tracking_uri=uri)  # LGBModel.fit logs to MLflow
        for handler in (ours, qlib):
            dataset = DatasetH(handler, SEGMENTS)
            model = LGBModel(**MODEL)
            with R.start(experiment_name=EXPERIMENT):
                model.fit(dataset)
            predictions.append(model.predict(dataset, "test"))
    assert predictions[0].std() > 0
    pd.testing.assert_series_equal(predictions[0], predictions[1])


def test_every_registered_column_is_a_feature_new_ones_included(store: Settings) -> None:
    register_indicator(
        "TEST_RANGE_MEAN", "fundamental", formula="mean(h - l, 3)", compute=lambda b: (b.high - b.low).rolling(3).mean()
    )
    try:
        with kept_qlib_config():
            init_store_qlib(store.qlib_data_path)
            handler = StoreHandler(CODES[:2], "2022-01-01", "2022-03-31", settings=store)
        features = handler.fetch(col_set="feature")
        assert list(features.columns) == load_registry().names()
        values = features.xs("SH600000", level="instrument")["TEST_RANGE_MEAN"]
        assert values.notna().all() and (values > 0).all()
    finally:
        REGISTRY.remove("TEST_RANGE_MEAN")


def test_train_model_reports_ic(store: Settings) -> None:
    result = train_model(store, instruments=list(CODES), segments=SEGMENTS, model_params=MODEL)
    assert result.handler == "store"
    assert len(result.dataset.handler.get_cols("feature")) == len(load_registry().names())
    assert all(math.isfinite(result.metrics[k]) for k in ("ic", "rank_ic", "icir", "rank_icir"))
    assert result.metrics["test_days"] > 200
    assert (store.work_path / "mlflow" / "mlflow.db").exists()


def test_without_a_store_training_uses_alpha158(store: Settings, tmp_path) -> None:
    missing = Settings(store.parquet_data_path, tmp_path / "no_store", store.batches)
    result = train_model(missing, segments=SEGMENTS, model_params=MODEL)
    assert result.handler == "alpha158"
    assert len(result.dataset.handler.get_cols("feature")) == 158
    assert np.isfinite(result.predictions).all() and result.metrics["test_days"] > 200
