"""Jobs: the whole store (`precompute`, the UI's button), the per-bucket precompute, and the unpartitioned
calendar and manifest steps around it."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from precompute_assets.defs.partitions import stock_buckets
from precompute_assets.defs.precompute.bars import stock_bars
from precompute_assets.defs.precompute.calendar import trading_calendar
from precompute_assets.defs.precompute.families import family_assets
from precompute_assets.defs.precompute.manifest import store_manifest
from precompute_assets.defs.precompute.store import qlib_store
from precompute_assets.defs.precompute.summary import store_summary

# The store and nothing else: the research assets and the backup read it but are not part of it.
STORE_SELECTION = AssetSelection.assets(
    trading_calendar, stock_bars, *family_assets, qlib_store, store_manifest, store_summary
)
precompute_job = define_asset_job(
    "precompute",
    selection=STORE_SELECTION,
    partitions_def=stock_buckets,
    description="The whole store: the calendar, every bucket (bars, the four families, the store and its "
    "checks, in ranges of neighbouring buckets), then the manifest and the summary. Materialize all, "
    "choose All partitions, Launch backfill.",
)
calendar_job = define_asset_job("calendar_job", selection=AssetSelection.assets(trading_calendar))
bucket_job = define_asset_job(
    "precompute_bucket_job",
    selection=AssetSelection.assets(stock_bars, *family_assets, qlib_store),
    partitions_def=stock_buckets,
    description="Bars, the four families and the store for the chosen buckets.",
)
manifest_job = define_asset_job("manifest_job", selection=AssetSelection.assets(store_manifest, store_summary))
update_job = define_asset_job(
    "precompute_update_job",
    selection=STORE_SELECTION,
    partitions_def=stock_buckets,
    description="Everything one changed bucket needs, in order: calendar, bucket, manifest (sensor and schedule).",
)

JOBS = [precompute_job, calendar_job, bucket_job, manifest_job, update_job]
