"""The parquet input folder as an observable source: one content version per bucket."""

from dagster import DataVersionsByPartition, observable_source_asset

from precompute_assets.build.pipeline import bucket_input_versions
from precompute_assets.defs.partitions import stock_buckets
from precompute_assets.defs.resources import PrecomputeSettings


@observable_source_asset(
    partitions_def=stock_buckets,
    group_name="precompute",
    description="One parquet file per stock (PARQUET_DATA_PATH); a bucket's version is its files' content hash.",
)
def stock_parquet_files(precompute: PrecomputeSettings) -> DataVersionsByPartition:
    return DataVersionsByPartition(bucket_input_versions(precompute.settings, stock_buckets.get_partition_keys()))
