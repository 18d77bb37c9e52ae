"""Stock-batch partitions: `PRECOMPUTE_BATCHES` stable hash buckets (64 by default), and how many
neighbouring buckets go in one run, the one grouping rule of `make run`, UI and CLI backfills."""

from __future__ import annotations

import os

from dagster import BackfillPolicy, StaticPartitionsDefinition

from precompute_assets.build.buckets import bucket_keys
from precompute_assets.settings import RUNS_AT_A_TIME, Settings

stock_buckets = StaticPartitionsDefinition(bucket_keys(Settings.from_env().batches))

# Buckets per run (a partition range). Each run costs a process start, Dagster's run and step start-up
# and the imports of Qlib and Great Expectations whatever it holds; a run the daemon launches also
# waits for its launch (its queue slot, the code server's new process). So a whole build is one range
# per core. See README "Performance".
BUCKETS_PER_RUN_ENV = "PRECOMPUTE_BUCKETS_PER_RUN"


def buckets_per_run_setting(buckets: int | None = None) -> int:
    """`PRECOMPUTE_BUCKETS_PER_RUN`, else a build of `buckets` (default: every bucket) in `RUNS_AT_A_TIME`
    ranges: the range size of a build's runs, whoever launches them."""
    count = len(stock_buckets.get_partition_keys()) if buckets is None else buckets
    return int(os.environ.get(BUCKETS_PER_RUN_ENV) or -(-count // RUNS_AT_A_TIME))


# Every partitioned asset carries it, so a UI or CLI backfill runs ranges of neighbouring buckets
# (as `make run` does) instead of Dagster's default of one run per bucket.
bucket_backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=buckets_per_run_setting())
