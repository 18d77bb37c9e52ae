"""StoreHandler at the read floor: its frame is the store's values (read by Qlib's own default provider),
it reads the store `qlib.init` was given, it equals Alpha158 up to Qlib's start-dependence, and a model
fed by it predicts exactly what the same model fed by the loader predicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from consumers_fixtures import CODES, shared_store
from qlib.contrib.data.handler import Alpha158
from qlib.contrib.model.gbdt import LGBModel
from qlib.data import D
from qlib.data.dataset import DatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.data.dataset.loader import StaticDataLoader
from qlib.workflow import R

from precompute_assets.consumers import StoreHandler, init_store_qlib, load_multiple_stocks_with_indicators
from precompute_assets.consumers.handler import ALPHA158_INFER_PROCESSORS, ALPHA158_LABEL, ALPHA158_LEARN_PROCESSORS
from precompute_assets.consumers.qlib_session import (
    EXPERIMENT,
    kept_qlib_config,
    prepare_experiment,
    sqlite_tracking_uri,
)
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.settings import Settings

START, END = "2020-01-01", "2022-12-27"
SEGMENTS = {"train": (START, "2021-06-30"), "valid": ("2021-07-01", "2021-12-31"), "test": ("2022-01-01", END)}
FIT = {"fit_start_time": SEGMENTS["train"][0], "fit_end_time": SEGMENTS["train"][1]}
MODEL = {"lambda_l1": 1.0, "lambda_l2": 1.0, "num_leaves": 15, "num_threads": 1, "seed": 7, "num_boost_round": 30}
# Qlib's start-dependence: Alpha158 queried from START runs its rolling sums from another row than the
# store's full-history build, so a value may differ by float32 rounding (a few ulps) or, in a constant
# (suspended) window whose exact value is 0, by noise around 0. Nothing else may differ.
ULPS, NEAR_ZERO, MAX_SHARE = 4, 1e-6, 1e-4


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_store(tmp_path_factory)


def _alpha_names() -> tuple[list[str], list[str]]:
    alpha = load_registry().all("alpha158")
    return [i.name for i in alpha], [i.qlib_name for i in alpha]


def test_reads_the_store_qlib_init_was_given(store: Settings, tmp_path, monkeypatch) -> None:
    """QLIB_DATA_PATH unset and the working directory elsewhere: the frame is the store's values, as
    Qlib's own default provider reads them from the bin files, for every stored column."""
    monkeypatch.delenv("QLIB_DATA_PATH", raising=False)
    monkeypatch.setenv("PARQUET_DATA_PATH", str(tmp_path / "no_input"))
    monkeypatch.chdir(tmp_path)
    registry = load_registry()
    names = registry.names()
    codes = ["SH600000", "SH600519", "SZ000792"]
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path, fast=False)
        handler = StoreHandler(codes, "2019-03-01", "2022-06-30", infer_processors=[], learn_processors=[])
        raw = handler.fetch(col_set=DataHandlerLP.CS_RAW, data_key=DataHandlerLP.DK_R)
        expected = D.features(codes, [f"${registry.get(n).field}" for n in names], "2019-03-01", "2022-06-30")
        label = D.features(codes, ALPHA158_LABEL[0], "2019-03-01", "2022-06-30")
    expected = expected.swaplevel().sort_index()
    features = raw["feature"]
    assert list(features.columns) == names and (features.dtypes == np.float32).all()
    assert sorted(features.index.get_level_values("instrument").unique()) == codes
    np.testing.assert_array_equal(features.index.to_numpy(), expected.index.to_numpy())
    np.testing.assert_array_equal(features.to_numpy(), expected.to_numpy())  # bit for bit, NaN where NaN
    np.testing.assert_array_equal(raw["label"].to_numpy()[:, 0], label.swaplevel().sort_index().to_numpy()[:, 0])


def test_a_market_keeps_only_its_members_spans(store: Settings) -> None:
    """A market name selects as Qlib does: the members' dates inside their instrument spans."""
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path)
        ours = StoreHandler(
            "all", "2018-01-01", "2023-06-30", ["alpha_001", "close"], infer_processors=[], learn_processors=[]
        )
        expected = D.features(D.instruments("all"), ["$alpha_001", "$close"], "2018-01-01", "2023-06-30")
    got = ours.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)
    expected = expected.swaplevel().sort_index()
    np.testing.assert_array_equal(got.index.to_numpy(), expected.index.to_numpy())
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


def test_equals_alpha158_up_to_qlibs_start_dependence(store: Settings) -> None:
    names, qlib_names = _alpha_names()
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path, fast=False)
        ours = StoreHandler("all", START, END, names, infer_processors=[], learn_processors=[])
        qlib = Alpha158(instruments="all", start_time=START, end_time=END, infer_processors=[], learn_processors=[])
    a = ours.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)
    b = qlib.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)[qlib_names]
    np.testing.assert_array_equal(a.index.to_numpy(), b.index.to_numpy())
    x, y = a.to_numpy(), b.to_numpy()
    np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
    both = ~np.isnan(x)
    differ = both & (x != y)
    scale = np.maximum(np.abs(x), np.abs(y))
    allowed = (np.abs(x - y) <= ULPS * np.spacing(scale.astype(np.float32))) | (scale <= NEAR_ZERO)
    assert (allowed | ~differ).all(), f"{(differ & ~allowed).sum()} values differ beyond the bound"
    assert differ.sum() <= MAX_SHARE * both.sum()
    for key in ("raw", "learn", "infer"):
        pd.testing.assert_frame_equal(
            ours.fetch(col_set="label", data_key=key), qlib.fetch(col_set="label", data_key=key)
        )


def _loader_handler(names: list[str]) -> DataHandlerLP:
    """The loader-based path: per-stock frames from `load_multiple_stocks_with_indicators`, concatenated,
    with Qlib's own label, behind Alpha158's processors."""
    frames = load_multiple_stocks_with_indicators(list(CODES), START, END, names)
    features = pd.concat({c: f[names] for c, f in frames.items()}, names=["instrument", "datetime"])
    features = features.swaplevel().sort_index()
    label = D.features(list(CODES), ALPHA158_LABEL[0], START, END).swaplevel().sort_index()
    label.columns = ALPHA158_LABEL[1]
    frame = pd.concat({"feature": features, "label": label}, axis=1).sort_index()
    return DataHandlerLP(
        instruments=None,
        start_time=START,
        end_time=END,
        data_loader=StaticDataLoader(frame),
        infer_processors=_fitted(ALPHA158_INFER_PROCESSORS),
        learn_processors=_fitted(ALPHA158_LEARN_PROCESSORS),
    )


def _fitted(processors: list) -> list:
    from qlib.contrib.data.handler import check_transform_proc

    return check_transform_proc(processors, FIT["fit_start_time"], FIT["fit_end_time"])


def test_same_predictions_as_the_loader_path(store: Settings, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QLIB_DATA_PATH", str(store.qlib_data_path))
    monkeypatch.setenv("PARQUET_DATA_PATH", str(store.parquet_data_path))
    names, _ = _alpha_names()
    uri = sqlite_tracking_uri(tmp_path)
    prepare_experiment(uri, tmp_path / "artifacts")
    predictions = []
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path, tracking_uri=uri)
        handlers = [StoreHandler(list(CODES), START, END, names, **FIT), _loader_handler(names)]
        pd.testing.assert_frame_equal(
            handlers[0].fetch(data_key=DataHandlerLP.DK_L), handlers[1].fetch(data_key=DataHandlerLP.DK_L)
        )
        for handler in handlers:
            dataset = DatasetH(handler, SEGMENTS)
            model = LGBModel(**MODEL)
            with R.start(experiment_name=EXPERIMENT):
                model.fit(dataset)
            predictions.append(model.predict(dataset, "test"))
    assert predictions[0].std() > 0
    pd.testing.assert_series_equal(predictions[0], predictions[1])


WRITING_INFER = [{"class": "ZScoreNorm"}, {"class": "Fillna"}]  # Qlib's ProcessInf too, but it takes minutes here


@pytest.mark.parametrize(
    ("infer", "process_type", "drop_raw"),
    [
        (ALPHA158_INFER_PROCESSORS, DataHandlerLP.PTYPE_A, False),
        (WRITING_INFER, DataHandlerLP.PTYPE_A, True),
        (WRITING_INFER, DataHandlerLP.PTYPE_I, True),
    ],
)
def test_processing_and_segments_equal_qlibs(store: Settings, infer: list, process_type: str, drop_raw: bool) -> None:
    """StoreHandler's own `process_data` and `fetch` (fewer copies, views of date ranges) against Qlib's
    `DataHandlerLP` on the same loader, the same processors and the same segments; the raw frame is
    untouched when kept."""
    names, _ = _alpha_names()
    options = {"process_type": process_type, "drop_raw": drop_raw}
    processors = {"infer_processors": infer, "learn_processors": ALPHA158_LEARN_PROCESSORS}
    fitted = {key: _fitted(value) for key, value in processors.items()}
    with kept_qlib_config():
        init_store_qlib(store.qlib_data_path)
        ours = StoreHandler(list(CODES), START, END, names, settings=store, **options, **processors, **FIT)
        qlib = DataHandlerLP(list(CODES), START, END, ours.data_loader, **options, **fitted)
        raw = ours.data_loader.load(list(CODES), START, END)
        kept = StoreHandler(list(CODES), START, END, names, settings=store, **processors, **FIT)
        pd.testing.assert_frame_equal(kept._data, raw)  # processing left the raw frame as loaded
        assert drop_raw == (not hasattr(ours, "_data"))
        for key in (DataHandlerLP.DK_I, DataHandlerLP.DK_L):
            pd.testing.assert_frame_equal(ours.fetch(data_key=key), qlib.fetch(data_key=key))
        datasets = [DatasetH(handler, SEGMENTS) for handler in (ours, qlib)]
        for col_set in (DataHandlerLP.CS_ALL, "feature", ["feature", "label"]):
            for key in (DataHandlerLP.DK_I, DataHandlerLP.DK_L):
                got, want = (d.prepare(list(SEGMENTS), col_set=col_set, data_key=key) for d in datasets)
                for segment, a, b in zip(SEGMENTS, got, want, strict=True):
                    assert len(a) > 0, segment
                    pd.testing.assert_frame_equal(a, b, obj=f"{segment} {col_set} {key}")
