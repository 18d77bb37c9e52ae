"""Real-data stores for the consumer tests, built once per session with the core pipeline (no Dagster).

A few csi300_daily stocks over 2019-2022 keep the suite fast while covering what matters: a long
suspension with a +306% jump (SZ000792), a 20% board stock often at its limit (SZ300750), large caps.
The refdata is read-only: inputs are copied (and cut to the window) into the test's own folders.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pytest

from precompute_assets.build import pipeline
from precompute_assets.settings import Settings

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"
CSI300 = REFDATA / "csi300_daily"
CODES = ("SH600000", "SH600519", "SZ000001", "SZ000792", "SZ300750", "SH601318")
FIRST, LAST = "2019-01-01", "2022-12-31"
_built: dict[tuple[str, ...], Settings] = {}


def require_refdata() -> Path:
    if not CSI300.is_dir():
        pytest.skip(f"reference data not found at {REFDATA}")
    return CSI300


def write_inputs(folder: Path, codes: Iterable[str] = CODES, last: str = LAST) -> Path:
    """Real input files of `codes`, cut to [FIRST, last], as one parquet file per stock."""
    source = require_refdata()
    folder.mkdir(parents=True, exist_ok=True)
    for code in codes:
        bars = pd.read_parquet(source / f"{code}.parquet")
        bars[(bars["date"] >= FIRST) & (bars["date"] <= last)].to_parquet(folder / f"{code}.parquet", index=False)
    return folder


def build(parquet: Path, store: Path, batches: int = 2) -> Settings:
    """What every bucket run does, in order, over the whole input."""
    settings = Settings(parquet_data_path=parquet, qlib_data_path=store, batches=batches)
    pipeline.build_in_process(settings)
    return settings


def shared_store(factory: pytest.TempPathFactory) -> Settings:
    """The session's store of `CODES` (built on first use); tests must not modify it."""
    key = (str(factory.getbasetemp()),)
    if key not in _built:
        root = factory.mktemp("consumers")
        _built[key] = build(write_inputs(root / "parquet"), root / "qlib_data")
    return _built[key]


def store_copy(settings: Settings, root: Path) -> Settings:
    """A private copy of a store (its per-stock symlinks kept) that a test may damage."""
    target = root / "qlib_data"
    shutil.copytree(settings.qlib_data_path, target, symlinks=True)
    return Settings(parquet_data_path=settings.parquet_data_path, qlib_data_path=target, batches=settings.batches)
