"""Qlib's global state as the consumers need it: the store with the fast provider, and MLflow that works.

Qlib keeps one process-wide configuration. The consumers point it at the store (fast feature provider,
an SQLite MLflow tracking store because MLflow 3 refuses Qlib's default file store), and shield it
from the core's expression families, which re-initialise Qlib on a temporary staging store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from precompute_assets.consumers.qlib_provider import FAST_FEATURE_PROVIDER
from precompute_assets.indicators.expressions.qlib_engine import init_qlib

EXPERIMENT = "precompute_assets"


def sqlite_tracking_uri(folder: Path | None = None) -> str:
    """An SQLite tracking URI in `folder` (by default one shared folder in the temp dir).

    MLflow creates the database on first use only, so handing out the URI costs nothing. The
    `MLFLOW_TRACKING_URI` variable is no guide: `mlflow.set_tracking_uri` (called by Qlib's recorder)
    overwrites it, so it names whichever store ran last.
    """
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir()) / "precompute_assets_mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


def prepare_experiment(tracking_uri: str, artifacts: Path) -> None:
    """Create the project's experiment with its artifacts in `artifacts`: Qlib's recorder would
    otherwise create it with MLflow's default artifact root, `./mlruns` under the working directory."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=Path(artifacts).resolve().as_uri())


def init_store_qlib(provider_uri: Path, *, fast: bool = True, tracking_uri: str | None = None) -> None:
    """`qlib.init` on a store: the fast feature provider (unless `fast=False`) and a working MLflow store."""
    overrides: dict[str, object] = {
        "exp_manager": {
            "class": "MLflowExpManager",
            "module_path": "qlib.workflow.expm",
            "kwargs": {"uri": tracking_uri or sqlite_tracking_uri(), "default_exp_name": EXPERIMENT},
        }
    }
    if fast:
        overrides["feature_provider"] = FAST_FEATURE_PROVIDER
    init_qlib(Path(provider_uri), **overrides)


@contextmanager
def kept_qlib_config() -> Iterator[None]:
    """Run a block that may call `qlib.init` elsewhere, then give Qlib back its previous configuration.

    `qlib.init` replaces the config dict (so the old one is kept intact by reference), refuses to run
    while an MLflow experiment is active (so the recorder is detached meanwhile), and leaves caches of
    the other store in memory (so they are cleared).
    """
    from qlib.config import C
    from qlib.data.cache import H
    from qlib.data.data import register_all_wrappers
    from qlib.data.ops import register_all_ops
    from qlib.workflow import R

    config = C.__dict__["_config"]
    recorder = R.__dict__.get("_provider")
    R.__dict__["_provider"] = None
    try:
        yield
    finally:
        R.__dict__["_provider"] = recorder
        if config.get("_registered"):
            C.__dict__["_config"] = config
            H.clear()
            register_all_ops(C)
            register_all_wrappers(C)
