"""Where backups go and how long things are kept: environment variables with production defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from precompute_assets.settings import Settings


@dataclass(frozen=True)
class OperationsConfig:
    """`PRECOMPUTE_BACKUP_PATH` (default `QLIB_DATA_PATH/../backups`), `PRECOMPUTE_BACKUP_KEEP` (5),
    `PRECOMPUTE_RETENTION_DAYS` (7: intermediates, stores replaced by a restore),
    `PRECOMPUTE_TMP_GRACE_SECONDS` (3600: younger temporaries may belong to a running write),
    `PRECOMPUTE_LOCK_STALE_SECONDS` (600: a lock not refreshed for this long has lost its holder)."""

    backup_path: Path
    keep_backups: int = 5
    retention_days: float = 7.0
    grace_seconds: float = 3600.0
    stale_lock_seconds: float = 600.0

    @classmethod
    def from_env(cls, settings: Settings) -> OperationsConfig:
        env = os.environ.get
        return cls(
            backup_path=Path(env("PRECOMPUTE_BACKUP_PATH") or settings.qlib_data_path.parent / "backups"),
            keep_backups=int(env("PRECOMPUTE_BACKUP_KEEP", "5")),
            retention_days=float(env("PRECOMPUTE_RETENTION_DAYS", "7")),
            grace_seconds=float(env("PRECOMPUTE_TMP_GRACE_SECONDS", "3600")),
            stale_lock_seconds=float(env("PRECOMPUTE_LOCK_STALE_SECONDS", "600")),
        )
