"""Blocking, bucket-partitioned asset checks on `qlib_store`, one per validation.

In a run that wrote the bucket, the checks judge what its store step wrote (the stocks, appended rows
and files of its record); in a run of the checks alone (the `store_audit` job, the UI's Execute
check) they judge the whole bucket.

A failed check with ERROR severity fails the run and stops what reads the bucket downstream; a check
that found only warnings (a high NaN share) reports WARN and lets the run go on.
"""

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetRecordsFilter,
    DagsterEventType,
    Output,
    asset_check,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from precompute_assets.build import intermediates
from precompute_assets.build.bucket_state import mark_for_repair
from precompute_assets.build.written import WrittenStock, read_written
from precompute_assets.defs.partitions import stock_buckets
from precompute_assets.defs.precompute.check_metadata import check_metadata
from precompute_assets.defs.precompute.run_progress import TAG_EVERY, RunProgress
from precompute_assets.defs.precompute.store import qlib_store
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.validation.completeness import validate_completeness_buckets
from precompute_assets.validation.consistency import validate_consistency_buckets
from precompute_assets.validation.integrity import validate_integrity_buckets
from precompute_assets.validation.quality import validate_quality_buckets
from precompute_assets.validation.result import ValidationResult

CHECK_OUTPUT = "result"  # the output name @asset_check gives its op
Written = dict[str, dict[str, WrittenStock] | None]
"""Each bucket of the run and what its store step wrote there (None: the whole bucket is judged)."""
Validate = Callable[[AssetCheckExecutionContext, Settings, Written], Iterable[ValidationResult]]


def build_store_check(name: str, validate: Validate, description: str) -> AssetChecksDefinition:
    @asset_check(
        asset=qlib_store,
        name=name,
        partitions_def=stock_buckets,
        blocking=True,
        description=description,
    )
    def _check(
        context: AssetCheckExecutionContext, precompute: PrecomputeSettings
    ) -> Iterator[AssetCheckResult | AssetCheckEvaluation | Output]:
        settings = precompute.settings
        progress = RunProgress.start(context, name, settings)
        results = {}
        run = context.run.root_run_id or context.run.run_id  # the work folder the run's store step wrote in
        written = {
            bucket: read_written(intermediates.bucket_dir(settings.work_path, bucket, run))
            for bucket in context.partition_keys
        }
        reported, pending = time.monotonic(), []
        for bucket, result in zip(written, validate(context, settings, written), strict=True):
            results[bucket] = result
            if not result.passed:
                (context.log.error if result.blocking else context.log.warning)(result.describe())
            pending.append(bucket)
            if time.monotonic() - reported >= TAG_EVERY:  # buckets judged together report together
                progress.bucket_done(*pending)
                reported, pending = time.monotonic(), []
        if pending:
            progress.bucket_done(*pending)
        passed = [bucket for bucket, result in results.items() if result.passed]
        if passed:
            context.log.info(f"{name}: passed on {len(passed)} bucket(s): {', '.join(passed)}")
        if context.has_partition_key:
            yield AssetCheckResult(**_outcome(next(iter(results.values()))))
            return
        # A returned AssetCheckResult carries no partition in a range run (Dagster 1.13 records it on
        # None): each bucket gets its own evaluation instead, and the check's output is emitted bare.
        targets = _latest_materializations(context, list(results))
        for bucket, result in results.items():
            yield AssetCheckEvaluation(
                asset_key=qlib_store.key,
                check_name=name,
                partition=bucket,
                blocking=True,
                target_materialization_data=targets.get(bucket),
                **_outcome(result),
            )
        yield Output(None, output_name=CHECK_OUTPUT)

    return _check


def _latest_materializations(
    context: AssetCheckExecutionContext, buckets: list[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Each bucket's latest `qlib_store` materialization, which the UI ties its evaluation to (two
    queries for all the buckets of the run, not one per bucket)."""
    instance = context.instance
    latest = instance.get_latest_storage_id_by_partition(
        qlib_store.key, DagsterEventType.ASSET_MATERIALIZATION, set(buckets)
    )
    if not latest:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=qlib_store.key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    by_id = {record.storage_id: record for record in records}
    return {
        bucket: AssetCheckEvaluationTargetMaterializationData(
            run_id=by_id[storage_id].event_log_entry.run_id,
            storage_id=storage_id,
            timestamp=by_id[storage_id].timestamp,
        )
        for bucket, storage_id in latest.items()
        if storage_id in by_id
    }


def _outcome(result: ValidationResult) -> dict[str, object]:
    """passed, severity, metadata and description of one validation, as a check evaluation records them."""
    return {
        "passed": result.passed,
        "severity": AssetCheckSeverity.WARN if result.failures and not result.blocking else AssetCheckSeverity.ERROR,
        "metadata": check_metadata(result),
        "description": result.describe(limit=5),
    }


def integrity_marking_repairs(settings: Settings, written: Written) -> Iterator[ValidationResult]:
    """Integrity, and the damaged stocks recorded so the bucket's next run (sensor, `make run`) rebuilds them."""
    layout = StoreLayout(settings.qlib_data_path)
    for bucket, result in zip(written, validate_integrity_buckets(settings, written), strict=True):
        if result.failing_stocks:
            mark_for_repair(layout, bucket, result.failing_stocks, "integrity check failed")
        yield result


def run_seed(context: AssetCheckExecutionContext, bucket: str) -> int:
    """A different sample each run, reproducible from the run id (the seed is in the metadata)."""
    return int.from_bytes(hashlib.sha1(f"{context.run.run_id}:{bucket}".encode()).digest()[:4], "big")


STORE_CHECKS = [
    build_store_check(
        "completeness",
        lambda context, settings, written: validate_completeness_buckets(settings, written),
        "Every readable input stock, each of its input dates and every registered column is in the store.",
    ),
    build_store_check(
        "quality",
        lambda context, settings, written: validate_quality_buckets(settings, written),
        "RSI/KDJ/STOCH in [0, 100], Williams %R in [-100, 0], volume and ATR >= 0, Bollinger bands ordered, "
        "no infinities (blocking); NaN share after warm-up (a warning).",
    ),
    build_store_check(
        "consistency",
        lambda context, settings, written: validate_consistency_buckets(
            settings, written, {bucket: run_seed(context, bucket) for bucket in written}
        ),
        "Base fields equal the input parquet as float32; a seeded random sample of indicator columns "
        "recomputed from the input equals the stored values.",
    ),
    build_store_check(
        "integrity",
        lambda context, settings, written: integrity_marking_repairs(settings, written),
        "Every stored file has the size and crc32 its commit recorded; first and last rows sit on the "
        "recorded dates of the calendar.",
    ),
]
