"""Shared fixtures: the real reference data, and stores built from it with the core pipeline."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

# Few partitions keep Dagster-level tests quick; must be set before precompute_assets.defs.partitions loads.
os.environ["PRECOMPUTE_BATCHES"] = "4"

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"
CSI300 = REFDATA / "csi300_daily"
# A documented subset for the fast suite: index, large caps, a late listing with a NaN row
# (SZ302132), long suspensions and a +306% jump (SZ000792), flat NaN-volume rows.
FAST_CODES = ("SH000300", "SH600000", "SH600519", "SZ000001", "SZ000538", "SZ000792", "SZ302132", "SH601318")


def require_refdata() -> Path:
    if not CSI300.is_dir():
        pytest.skip(f"reference data not found at {REFDATA}")
    return CSI300


def copy_inputs(codes: Iterable[str], folder: Path) -> Path:
    """Copy real input files into a test's own input folder (the refdata is read-only)."""
    source = require_refdata()
    folder.mkdir(parents=True, exist_ok=True)
    for code in codes:
        shutil.copy(source / f"{code}.parquet", folder / f"{code}.parquet")
    return folder


def run_pipeline(settings, buckets: Iterable[str] | None = None) -> dict[str, dict]:
    """Every step of the graph with the core pipeline (no Dagster), in order; the store step's reports."""
    from precompute_assets.build import pipeline

    return pipeline.build_in_process(settings, buckets)


def build_store(parquet: Path, store: Path, batches: int = 4):
    """Build (or update) a store from a parquet folder; returns its settings."""
    from precompute_assets.settings import Settings

    settings = Settings(parquet_data_path=parquet, qlib_data_path=store, batches=batches)
    run_pipeline(settings)
    return settings


@pytest.fixture(scope="session")
def fast_store(tmp_path_factory: pytest.TempPathFactory):
    """The fast subset of real stocks, built once per session; tests must not modify it."""
    root = tmp_path_factory.mktemp("fast_store")
    parquet = copy_inputs(FAST_CODES, root / "parquet")
    return build_store(parquet, root / "qlib_data")


SIX_CODES = ("SH600000", "SH600519", "SZ000001", "SZ000538", "SZ000792", "SZ302132")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory):
    """Six real stocks in two buckets, built once per session and shared read-only by the validation and
    operations tests (each copies it before damaging anything)."""
    root = tmp_path_factory.mktemp("six_stock_store")
    return build_store(copy_inputs(SIX_CODES, root / "parquet"), root / "qlib_data", batches=2)


def leading_nans(values: np.ndarray) -> int:
    """Rows of NaN before the first value: an indicator's measured warm-up."""
    valid = np.flatnonzero(~np.isnan(values))
    return int(valid[0]) if valid.size else len(values)
