"""Stock-batch partitions: `PRECOMPUTE_BATCHES` stable hash buckets (64 by default)."""

from __future__ import annotations

from dagster import StaticPartitionsDefinition

from precompute_assets.build.buckets import bucket_keys
from precompute_assets.settings import Settings

stock_buckets = StaticPartitionsDefinition(bucket_keys(Settings.from_env().batches))
