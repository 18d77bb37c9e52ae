"""The store at a glance (the data-management page's summary), with a freshness check that alerts."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from precompute_assets.build.freshness import store_status
from precompute_assets.defs.precompute.manifest import store_manifest
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.validation.summary import summarize


@asset(
    deps=[store_manifest],
    group_name="store",
    description="The whole store at a glance: stocks, dates, columns by family, size, quality score, freshness.",
)
def store_summary(precompute: PrecomputeSettings) -> MaterializeResult:
    summary = summarize(precompute.settings)
    metadata = {k: v for k, v in summary.metadata.items() if v is not None}
    return MaterializeResult(metadata={**metadata, "quality_report": MetadataValue.md(summary.report_markdown)})


@asset_check(asset=store_summary, description="Fails (warning) while any stock is behind its parquet input.")
def store_is_current(precompute: PrecomputeSettings) -> AssetCheckResult:
    status = store_status(precompute.settings)
    behind = status.behind + status.missing
    return AssetCheckResult(
        passed=status.current,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "stocks_behind": len(behind),
            "behind": MetadataValue.md(", ".join(behind[:50]) or "none"),
            "unpublished": len(status.unpublished),
            "built_from_input": str(status.built_from),
            "current_input": status.input_version,
        },
    )
