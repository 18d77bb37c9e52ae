"""The one `Definitions` object: assets, jobs and resources of the precompute platform."""

from __future__ import annotations

from dagster import Definitions

from precompute_assets.assets import PRECOMPUTE_ASSETS, PRECOMPUTE_CHECKS
from precompute_assets.assets.operations import OPERATIONS_ASSETS, OPERATIONS_JOBS, OPERATIONS_SCHEDULES
from precompute_assets.checks import STORE_CHECKS
from precompute_assets.executors import executor_from_env
from precompute_assets.jobs import JOBS
from precompute_assets.resources import PrecomputeSettings
from precompute_assets.schedules import daily_update_schedule
from precompute_assets.sensors import parquet_input_sensor

defs = Definitions(
    assets=[*PRECOMPUTE_ASSETS, *OPERATIONS_ASSETS],
    asset_checks=[*PRECOMPUTE_CHECKS, *STORE_CHECKS],
    jobs=[*JOBS, *OPERATIONS_JOBS],
    sensors=[parquet_input_sensor],
    schedules=[daily_update_schedule, *OPERATIONS_SCHEDULES],
    resources={"precompute": PrecomputeSettings.from_env()},
    # PRECOMPUTE_EXECUTOR picks where steps run: in_process (default; parallelism is across bucket runs,
    # two at a time, see deploy/dagster.yaml), multiprocess, or celery (docs/deploy.md).
    executor=executor_from_env(),
)
