"""The one `Definitions` object: assets, jobs and resources of the precompute platform."""

from __future__ import annotations

from dagster import Definitions

import precompute_assets.defs.instance_storage  # noqa: F401  (installs how the runs commit their events)
from precompute_assets.defs.executors import executor_from_env
from precompute_assets.defs.operations import OPERATIONS_ASSETS, OPERATIONS_JOBS, OPERATIONS_SCHEDULES
from precompute_assets.defs.precompute import PRECOMPUTE_ASSETS, PRECOMPUTE_CHECKS
from precompute_assets.defs.precompute.audit import store_audit_job, store_audit_schedule
from precompute_assets.defs.precompute.checks import STORE_CHECKS
from precompute_assets.defs.precompute.jobs import JOBS
from precompute_assets.defs.precompute.schedules import daily_update_schedule
from precompute_assets.defs.precompute.sensors import parquet_input_sensor
from precompute_assets.defs.research import RESEARCH_ASSETS
from precompute_assets.defs.resources import PrecomputeSettings

defs = Definitions(
    assets=[*PRECOMPUTE_ASSETS, *RESEARCH_ASSETS, *OPERATIONS_ASSETS],
    asset_checks=[*PRECOMPUTE_CHECKS, *STORE_CHECKS],
    jobs=[*JOBS, store_audit_job, *OPERATIONS_JOBS],
    sensors=[parquet_input_sensor],
    schedules=[daily_update_schedule, store_audit_schedule, *OPERATIONS_SCHEDULES],
    resources={"precompute": PrecomputeSettings.from_env()},
    # PRECOMPUTE_EXECUTOR picks where steps run: in_process (default; parallelism is across bucket runs,
    # two at a time, see deploy/dagster.yaml), multiprocess, or celery (docs/deploy.md).
    executor=executor_from_env(),
)
