"""The one `Definitions` object: assets, jobs and resources of the precompute platform."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from precompute_assets.assets import PRECOMPUTE_ASSETS
from precompute_assets.jobs import JOBS
from precompute_assets.resources import PrecomputeSettings

defs = Definitions(
    assets=PRECOMPUTE_ASSETS,
    jobs=JOBS,
    resources={"precompute": PrecomputeSettings.from_env()},
    # Parallelism is across bucket runs (two at a time, see deploy/dagster.yaml); a step subprocess per
    # asset would cost more in Python start-up than most bucket steps take.
    executor=in_process_executor,
)
