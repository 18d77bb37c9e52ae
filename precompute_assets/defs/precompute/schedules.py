"""The daily check after the market closes: the sensor's question, asked on a clock as a safety net."""

import os

from dagster import DefaultScheduleStatus, ScheduleEvaluationContext, SkipReason, schedule

from precompute_assets.build.freshness import stale_buckets
from precompute_assets.defs.precompute.jobs import update_job
from precompute_assets.defs.precompute.sensors import bucket_run_request
from precompute_assets.defs.resources import PrecomputeSettings

DAILY_CRON = os.environ.get("PRECOMPUTE_SCHEDULE_CRON", "30 17 * * 1-5")  # 17:30, after the 15:00 close


@schedule(
    job=update_job,
    cron_schedule=DAILY_CRON,
    execution_timezone="Asia/Shanghai",
    default_status=DefaultScheduleStatus.RUNNING,
    description="After the close on trading weekdays: run every stale bucket (PRECOMPUTE_SCHEDULE_CRON).",
)
def daily_update_schedule(context: ScheduleEvaluationContext, precompute: PrecomputeSettings):
    stale = stale_buckets(precompute.settings)
    if not stale:
        return SkipReason("the store is current for its input")
    return [bucket_run_request(s) for s in stale.values()]
