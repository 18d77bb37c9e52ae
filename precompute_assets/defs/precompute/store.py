"""The store per bucket: base fields and every family's columns, committed atomically per stock."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from precompute_assets.build.pipeline import write_bucket
from precompute_assets.defs.partitions import bucket_backfill_policy, stock_buckets
from precompute_assets.defs.precompute.families import family_assets
from precompute_assets.defs.precompute.reporting import materialize_buckets, work_run
from precompute_assets.defs.precompute.retries import BUCKET_RETRIES
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.indicators.registry import FAMILIES


@asset(
    deps=family_assets,
    partitions_def=stock_buckets,
    backfill_policy=bucket_backfill_policy,
    retry_policy=BUCKET_RETRIES,
    group_name="store",
    description="The bucket's stocks in the Qlib store (QLIB_DATA_PATH/features), one atomic commit per stock.",
)
def qlib_store(context: AssetExecutionContext, precompute: PrecomputeSettings) -> MaterializeResult:
    return materialize_buckets(
        context, lambda bucket: write_bucket(precompute.settings, bucket, FAMILIES, context.log.info, work_run(context))
    )
