"""The shared store files, written in one place after the buckets: instruments and versions."""

from dagster import MaterializeResult, asset

from precompute_assets.assets.reporting import to_result
from precompute_assets.assets.store import qlib_store
from precompute_assets.pipeline import build_manifest
from precompute_assets.resources import PrecomputeSettings


@asset(
    deps=[qlib_store],
    group_name="store",
    description="instruments/all.txt, data_version.json and indicator_versions.json from the committed stocks.",
)
def store_manifest(precompute: PrecomputeSettings) -> MaterializeResult:
    return to_result(build_manifest(precompute.settings))
