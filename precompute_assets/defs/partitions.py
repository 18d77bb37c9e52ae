"""Stock-batch partitions: `PRECOMPUTE_BATCHES` stable hash buckets (64 by default), and how many
neighbouring buckets go in one run, the one grouping rule of `make run`, UI and CLI backfills."""

from __future__ import annotations

import os

from dagster import BackfillPolicy, StaticPartitionsDefinition

from precompute_assets.build.buckets import bucket_keys
from precompute_assets.settings import Settings

stock_buckets = StaticPartitionsDefinition(bucket_keys(Settings.from_env().batches))

# Buckets per run (a partition range): each run costs a process start, Dagster's run and step
# start-up and the checks' imports, a few seconds, whatever it holds. See README "Performance".
BUCKETS_PER_RUN_ENV = "PRECOMPUTE_BUCKETS_PER_RUN"
BUCKETS_PER_RUN = 8


def buckets_per_run_setting() -> int:
    """`PRECOMPUTE_BUCKETS_PER_RUN`, else 8: the range size of a build's runs, whoever launches them."""
    return int(os.environ.get(BUCKETS_PER_RUN_ENV) or BUCKETS_PER_RUN)


# Every partitioned asset carries it, so a UI or CLI backfill runs ranges of neighbouring buckets
# (as `make run` does) instead of Dagster's default of one run per bucket.
bucket_backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=buckets_per_run_setting())
