"""The shared store files, written in one place after the buckets: instruments and versions."""

from dagster import MaterializeResult, asset

from precompute_assets.build.pipeline import build_manifest
from precompute_assets.defs.precompute.reporting import to_result
from precompute_assets.defs.precompute.store import qlib_store
from precompute_assets.defs.resources import PrecomputeSettings


@asset(
    deps=[qlib_store],
    group_name="store",
    description="instruments/all.txt, data_version.json and indicator_versions.json from the committed stocks.",
)
def store_manifest(precompute: PrecomputeSettings) -> MaterializeResult:
    return to_result(build_manifest(precompute.settings))
