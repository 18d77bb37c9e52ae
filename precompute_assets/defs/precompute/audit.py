"""The `store_audit` job and its schedule: the store checks over the whole store, not only what a run wrote.

The checks after an update judge the rows and files it wrote; damage to older rows (a flipped bit on
disk, a file edited by hand) is the audit's to find. It runs the same four checks as a checks-only
run, over every bucket in one range run: each bucket gets its own evaluation, and integrity marks the
damaged stocks it finds, so the bucket's next run (sensor, schedule, `make run`) rebuilds them.
"""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from precompute_assets.defs.partitions import stock_buckets
from precompute_assets.defs.precompute.checks import STORE_CHECKS
from precompute_assets.defs.precompute.sensors import RANGE_END, RANGE_START
from precompute_assets.settings import audit_cron

store_audit_job = define_asset_job(
    "store_audit",
    selection=AssetSelection.checks(*STORE_CHECKS),
    partitions_def=stock_buckets,
    description="Re-check the whole store (every byte's checksum, every row's ranges, every base field "
    "against the input); damaged stocks are marked for the next run to rebuild.",
)


def audit_tags() -> dict[str, str]:
    """Run tags of one run over every bucket."""
    keys = stock_buckets.get_partition_keys()
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


@schedule(
    job=store_audit_job,
    cron_schedule=audit_cron(),
    execution_timezone="Asia/Shanghai",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Weekly by default (PRECOMPUTE_AUDIT_CRON): the store checks over the whole store.",
)
def store_audit_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest(run_key=f"store_audit:{context.scheduled_execution_time:%Y-%m-%dT%H:%M}", tags=audit_tags())
