"""Turn step reports into Dagster materializations, the same way for every asset."""

import resource
from collections.abc import Callable

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from precompute_assets.build.pipeline import StepReport
from precompute_assets.defs.precompute.run_progress import RunProgress


def materialize_buckets(context: AssetExecutionContext, step: Callable[[str], StepReport]) -> MaterializeResult:
    """Run `step` for every bucket the run targets (one, or a range) and report them together,
    with the run's progress after each bucket (`run_progress`).

    Skipped stocks are logged as errors with their reasons and listed in the metadata; the data
    version is content-based (dagster#33988 records partitioned source inputs as empty).
    """
    reports = {}
    progress = RunProgress.start(context, context.asset_key.to_user_string(), context.resources.precompute.settings)
    for bucket in context.partition_keys:
        report = step(bucket)
        reports[bucket] = report
        for error in report.errors:
            context.log.error(f"{bucket}: {error}")
        progress.bucket_done(bucket, detail=f"{bucket}: {report.metadata}")
    merged = merge_reports(reports)
    merged.metadata["buckets"] = len(reports)
    # ru_maxrss is in KiB on Linux: the step's process at its largest, for sizing workers
    merged.metadata["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return to_result(merged)


def work_run(context: AssetExecutionContext) -> str:
    """The run whose work folder the bucket steps share: the root of a re-execution, so a run re-executed
    from its failed step reads the intermediates the steps before it left."""
    return context.run.root_run_id or context.run_id


def to_result(report: StepReport) -> MaterializeResult:
    metadata = {key: value for key, value in report.metadata.items() if value is not None}
    metadata["skipped"] = MetadataValue.md("\n".join(f"- {e}" for e in report.errors) or "none")
    return MaterializeResult(metadata=metadata, data_version=DataVersion(report.data_version))


SPANS = {"first_date": min, "last_date": max}
"""Date metadata of a range: the earliest first date and the latest last date of its buckets."""
WIDTHS = {"columns"}
"""Metadata that is the same kind of count in every bucket: the range reports the widest, not a sum."""


def merge_reports(reports: dict[str, StepReport]) -> StepReport:
    """One report for the buckets of a range run: counts add up, rates and widths take the largest."""
    if len(reports) == 1:
        return next(iter(reports.values()))
    merged = StepReport(data_version="+".join(r.data_version for r in reports.values()))
    for report in reports.values():
        merged.errors.extend(report.errors)
        for key, value in report.metadata.items():
            if value is None:
                continue
            if key in SPANS:
                known = merged.metadata.get(key)
                merged.metadata[key] = value if known is None else SPANS[key](known, value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                merged.metadata.setdefault(key, value)
            elif "share" in key or key.endswith("per_second") or key in WIDTHS:  # the worst bucket, not a sum
                merged.metadata[key] = max(merged.metadata.get(key, value), value)
            else:
                merged.metadata[key] = merged.metadata.get(key, 0) + value
    return merged
