"""The sensor that keeps the store current: one run per changed bucket, each bucket state requested once."""

import json

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG  # no public name for an observation's version tag

from precompute_assets.build.buckets import bucket_keys
from precompute_assets.build.freshness import StaleBucket, stale_buckets
from precompute_assets.build.pipeline import bucket_input_versions
from precompute_assets.defs.partitions import stock_buckets
from precompute_assets.defs.precompute.jobs import update_job
from precompute_assets.defs.resources import PrecomputeSettings


def bucket_run_request(stale: StaleBucket) -> RunRequest:
    return RunRequest(
        run_key=stale.run_key,
        partition_key=stale.bucket,
        tags={"precompute/bucket": stale.bucket, "precompute/reason": stale.reason},
    )


UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def buckets_with_unfinished_runs(context: SensorEvaluationContext) -> set[str]:
    """Buckets a queued or running run works on (the sensor's own, a backfill's, `make run`'s ranges of
    buckets): asking again would do the work twice, and two runs of one bucket race for its intermediates."""
    keys = stock_buckets.get_partition_keys()
    busy: set[str] = set()
    for run in context.instance.get_runs(RunsFilter(statuses=UNFINISHED)):
        if "dagster/partition" in run.tags:
            busy.add(run.tags["dagster/partition"])
        elif {RANGE_START, RANGE_END} <= set(run.tags):
            busy.update(keys[keys.index(run.tags[RANGE_START]) : keys.index(run.tags[RANGE_END]) + 1])
    return busy


@sensor(
    job=update_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Watches PARQUET_DATA_PATH (content hashes) and the store; requests runs for stale buckets only.",
)
def parquet_input_sensor(context: SensorEvaluationContext, precompute: PrecomputeSettings):
    """Also records each changed bucket's input version as an observation of `stock_parquet_files`,
    so the UI marks exactly those partitions' downstream assets stale."""
    cursor = json.loads(context.cursor) if context.cursor else {"requested": {}, "observed": {}}
    settings = precompute.settings
    versions = bucket_input_versions(settings, bucket_keys(settings.batches))
    observations = [
        AssetObservation(asset_key=AssetKey("stock_parquet_files"), partition=bucket, tags={DATA_VERSION_TAG: version})
        for bucket, version in versions.items()
        if cursor["observed"].get(bucket) != version
    ]
    cursor["observed"] = versions
    busy = buckets_with_unfinished_runs(context)
    stale = [s for s in stale_buckets(settings).values() if s.bucket not in busy]
    new = [s for s in stale if cursor["requested"].get(s.bucket) != s.run_key]
    cursor["requested"].update({s.bucket: s.run_key for s in new})
    if new:
        context.log.info(f"requesting {len(new)} bucket run(s): " + ", ".join(f"{s.bucket} ({s.reason})" for s in new))
    return SensorResult(
        run_requests=[bucket_run_request(s) for s in new],
        asset_events=observations,
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if new else SkipReason("the store is current for its input, or its changes are requested"),
    )
