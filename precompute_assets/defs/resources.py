"""Settings as a Dagster resource: the environment by default, temporary folders in tests."""

from pathlib import Path

from dagster import ConfigurableResource

from precompute_assets.defs.partitions import stock_buckets
from precompute_assets.settings import Settings


class PrecomputeSettings(ConfigurableResource):
    """Where the parquet input is and where the Qlib store is written."""

    parquet_data_path: str
    qlib_data_path: str

    @classmethod
    def from_env(cls) -> "PrecomputeSettings":
        settings = Settings.from_env()
        return cls(parquet_data_path=str(settings.parquet_data_path), qlib_data_path=str(settings.qlib_data_path))

    @property
    def settings(self) -> Settings:
        return Settings(
            parquet_data_path=Path(self.parquet_data_path),
            qlib_data_path=Path(self.qlib_data_path),
            batches=len(stock_buckets.get_partition_keys()),
        )
