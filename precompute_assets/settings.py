"""Paths and knobs from the environment, read in one place (DESIGN.md "Settings")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where the input is, where the store goes, and how the market is cut into buckets."""

    parquet_data_path: Path
    qlib_data_path: Path
    batches: int = 64

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            parquet_data_path=Path(os.environ.get("PARQUET_DATA_PATH", "data/parquet/stock_data")),
            qlib_data_path=Path(os.environ.get("QLIB_DATA_PATH", "data/qlib_data")),
            batches=int(os.environ.get("PRECOMPUTE_BATCHES", "64")),
        )

    @property
    def work_path(self) -> Path:
        """Intermediates (family outputs per bucket), next to the store and never inside it."""
        return self.qlib_data_path.parent / f".{self.qlib_data_path.name}_work"


RUNS_AT_A_TIME = 2
"""Bucket runs at once, one per core: the run queue's limits in deploy/dagster.yaml and `make run`'s workers."""


def audit_cron() -> str:
    """When the `store_audit` schedule re-checks the whole store (PRECOMPUTE_AUDIT_CRON; Asia/Shanghai
    time): weekly by default, Saturday 06:00, when no update runs."""
    return os.environ.get("PRECOMPUTE_AUDIT_CRON", "0 6 * * 6")
