"""Each bucket's input, read by the input contract and placed on the calendar."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from precompute_assets.build.pipeline import build_bars
from precompute_assets.defs.partitions import bucket_backfill_policy, stock_buckets
from precompute_assets.defs.precompute.calendar import trading_calendar
from precompute_assets.defs.precompute.input_source import stock_parquet_files
from precompute_assets.defs.precompute.reporting import materialize_buckets, work_run
from precompute_assets.defs.precompute.retries import BUCKET_RETRIES
from precompute_assets.defs.resources import PrecomputeSettings


@asset(
    deps=[stock_parquet_files, trading_calendar],
    partitions_def=stock_buckets,
    backfill_policy=bucket_backfill_policy,
    retry_policy=BUCKET_RETRIES,
    group_name="precompute",
    description="Cleaned daily bars of the bucket's stocks, aligned to the calendar (an intermediate).",
)
def stock_bars(context: AssetExecutionContext, precompute: PrecomputeSettings) -> MaterializeResult:
    return materialize_buckets(
        context, lambda bucket: build_bars(precompute.settings, bucket, context.log.info, work_run(context))
    )
