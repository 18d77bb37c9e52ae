"""Celery settings of a precompute worker.

`celery -A dagster_celery.app worker` imports a module named `dagster_celery_config` when one is on
the path and applies its names over dagster-celery's defaults; `worker.sh` puts this folder on
PYTHONPATH. The values come from `precompute_assets.defs.executors.celery_settings()`, the same function
the executor uses, so the broker, the backend and the redelivery rules of a lost worker's step
(`task_acks_late`, `task_reject_on_worker_lost`, the Redis visibility timeout) always agree.
"""

from precompute_assets.defs.executors import celery_settings as _celery_settings

globals().update(_celery_settings())
