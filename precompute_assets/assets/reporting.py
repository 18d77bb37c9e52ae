"""Turn step reports into Dagster materializations, the same way for every asset."""

import resource
from collections.abc import Callable

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from precompute_assets.assets.run_progress import RunProgress
from precompute_assets.pipeline import StepReport


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
        context.log.info(f"{bucket}: {report.metadata}")
        progress.bucket_done(bucket)
    merged = _merge(reports)
    merged.metadata["buckets"] = len(reports)
    # ru_maxrss is in KiB on Linux: the step's process at its largest, for sizing workers
    merged.metadata["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return to_result(merged)


def to_result(report: StepReport) -> MaterializeResult:
    metadata = {key: value for key, value in report.metadata.items() if value is not None}
    metadata["skipped"] = MetadataValue.md("\n".join(f"- {e}" for e in report.errors) or "none")
    return MaterializeResult(metadata=metadata, data_version=DataVersion(report.data_version))


def _merge(reports: dict[str, StepReport]) -> StepReport:
    if len(reports) == 1:
        return next(iter(reports.values()))
    merged = StepReport(data_version="+".join(r.data_version for r in reports.values()))
    for report in reports.values():
        merged.errors.extend(report.errors)
        for key, value in report.metadata.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                merged.metadata.setdefault(key, value)
            elif "share" in key or key.endswith("per_second"):  # rates: the worst bucket, not a sum
                merged.metadata[key] = max(merged.metadata.get(key, value), value)
            else:
                merged.metadata[key] = merged.metadata.get(key, 0) + value
    return merged
