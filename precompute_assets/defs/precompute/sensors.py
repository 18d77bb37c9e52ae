"""The sensor that keeps the store current: one run per changed bucket, each bucket state requested once."""

import json
from dataclasses import replace

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
from precompute_assets.defs.precompute.check_status import unfinished_store_checks
from precompute_assets.defs.precompute.jobs import update_job
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.defs.run_workers import died, mark_dead_runs


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


RETRIES_AFTER_DEAD_RUNS = 3
"""Dead runs in a row after which a bucket is not requested again (a worker killed every time, e.g. OOM)."""


def with_dead_runs(context: SensorEvaluationContext, stale: dict[str, StaleBucket], cursor: dict) -> list[StaleBucket]:
    """The stale buckets, with the state of each bucket whose last requested run died requested again.

    A run key names a bucket's state and is requested once; a run whose process died did not build
    that state, so the key gets the dead run's id. A bucket whose checks were planned by a dead run
    was stored but never validated: it is stale too.
    """
    instance = context.instance
    stale = dict(stale)
    for bucket, run_id in unfinished_store_checks(instance).items():
        run = instance.get_run_by_id(run_id)
        if bucket not in stale and run is not None and died(instance, run):
            reason = f"checks of run {run_id[:8]} did not finish"
            stale[bucket] = StaleBucket(bucket, reason, "", f"{bucket}:checks-of-{run_id}")
    result = []
    for bucket, entry in stale.items():
        requested = cursor["requested"].get(bucket, "")
        if requested.split(":after-")[0] == entry.run_key:
            entry = replace(entry, run_key=requested)  # this state was requested: once, unless its run died
            runs = instance.get_runs(RunsFilter(tags={"dagster/partition": bucket}), limit=RETRIES_AFTER_DEAD_RUNS)
            if runs and not requested.endswith(f":after-{runs[0].run_id}") and died(instance, runs[0]):
                if len(runs) == RETRIES_AFTER_DEAD_RUNS and all(died(instance, r) for r in runs):
                    context.log.error(f"{bucket}: its last {len(runs)} runs died; not requesting it again")
                else:
                    entry = replace(entry, run_key=f"{requested.split(':after-')[0]}:after-{runs[0].run_id}")
        result.append(entry)
    return result


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
    for run_id, reason in mark_dead_runs(context.instance):  # before `busy`: a dead run holds no bucket
        context.log.warning(f"run {run_id} marked FAILURE: {reason}")
    busy = buckets_with_unfinished_runs(context)
    stale = [s for s in with_dead_runs(context, stale_buckets(settings), cursor) if s.bucket not in busy]
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
