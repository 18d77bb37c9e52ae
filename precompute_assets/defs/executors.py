"""The executor every job runs with, chosen by one setting: `PRECOMPUTE_EXECUTOR`.

| value | executor | where a run's steps execute |
| --- | --- | --- |
| `in_process` (default) | `in_process_executor` | inside the run's process, one after another |
| `multiprocess` | `multiprocess_executor` | a subprocess per step, on the run's machine |
| `celery` | `dagster_celery.celery_executor` | as Celery tasks, on any worker listening to the broker |

The asset graph is the same in every mode; so is the store, because each step reads and writes only
the shared filesystem (the store and its intermediates beside it) and the Dagster instance. In the
Celery mode the run's process only orchestrates: it sends each step to the broker (Redis by default,
`PRECOMPUTE_CELERY_BROKER`) and collects the step's events from the result backend. Workers run
`deploy/celery/worker.sh`, whose Celery settings come from `celery_settings()` below, so the
executor and its workers cannot disagree.

A lost worker (a machine gone, the pod evicted, the process SIGKILLed mid-step) loses nothing: tasks
are acknowledged when they end, not when a worker takes them (`task_acks_late`), so the broker still
holds the message of the step the worker was running, and hands it to another worker once it has
gone unacknowledged for `PRECOMPUTE_CELERY_VISIBILITY_TIMEOUT` seconds (Redis has no consumer
connections to watch, so it goes by that timeout). When only the pool process dies (the kernel's OOM
killer), the worker itself requeues the task at once (`task_reject_on_worker_lost`). A step that runs
longer than the timeout allows is stopped by its own worker (`task_time_limit`, a little below the
timeout) and fails its run, so a slow step is never handed to a second worker while it still runs.
Every step is idempotent (intermediates are replaced whole, stocks are committed atomically), so
running one again after a lost worker is safe. Dagster's own step retries (enabled in the executor)
cover steps that *fail*; a worker that vanishes never reports a failure, so that case is the
broker's. With dagster-celery's defaults (early acknowledgement) a SIGKILLed worker's step is simply
lost and its run waits forever (docs/deploy.md has the measurements).

Settings (environment variables, all optional):

| variable | default | meaning |
| --- | --- | --- |
| `PRECOMPUTE_EXECUTOR` | `in_process` | `in_process`, `multiprocess` or `celery` |
| `PRECOMPUTE_CELERY_BROKER` | `redis://127.0.0.1:6379/0` | Celery broker URL |
| `PRECOMPUTE_CELERY_BACKEND` | the broker URL | Celery result backend URL |
| `PRECOMPUTE_CELERY_VISIBILITY_TIMEOUT` | `3600` | seconds before a lost worker's step goes to another |

The visibility timeout must exceed the longest step (with room): it is both how long a lost worker's
step waits before another worker takes it, and (less 10 %, at most 5 minutes) the longest any step may
run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTOR_ENV = "PRECOMPUTE_EXECUTOR"
BROKER_ENV = "PRECOMPUTE_CELERY_BROKER"
BACKEND_ENV = "PRECOMPUTE_CELERY_BACKEND"
VISIBILITY_TIMEOUT_ENV = "PRECOMPUTE_CELERY_VISIBILITY_TIMEOUT"

DEFAULT_EXECUTOR = "in_process"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_VISIBILITY_TIMEOUT = 3600
EXECUTORS = ("in_process", "multiprocess", "celery")
CELERY_QUEUE = "dagster"  # the queue dagster-celery routes every step to


def executor_name(environ: Mapping[str, str] | None = None) -> str:
    """The executor `PRECOMPUTE_EXECUTOR` asks for; an unknown name fails loudly at load time."""
    env = os.environ if environ is None else environ
    name = (env.get(EXECUTOR_ENV) or DEFAULT_EXECUTOR).strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={env.get(EXECUTOR_ENV)!r}: expected one of {', '.join(EXECUTORS)}")
    return name


def executor_from_env(environ: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The executor definition for `Definitions(executor=...)`, chosen by `PRECOMPUTE_EXECUTOR`."""
    env = os.environ if environ is None else environ
    name = executor_name(env)
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_executor_config(env), name="celery")


def celery_executor_config(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The `celery_executor` config: broker, backend and the same Celery settings as the workers.

    A broker or backend given in the environment is passed as `{"env": ...}`, so a URL holding a
    password is read where the run executes and never shown in the UI's run config.
    """
    env = os.environ if environ is None else environ
    settings = celery_settings(env)
    broker_url, backend_url = settings.pop("broker_url"), settings.pop("result_backend")
    broker: object = {"env": BROKER_ENV} if env.get(BROKER_ENV) else broker_url
    backend: object = backend_url
    if env.get(BACKEND_ENV):
        backend = {"env": BACKEND_ENV}
    elif env.get(BROKER_ENV):
        backend = {"env": BROKER_ENV}
    return {"broker": broker, "backend": backend, "config_source": settings}


def celery_settings(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Celery settings shared by the executor and every worker (`deploy/celery/dagster_celery_config.py`)."""
    env = os.environ if environ is None else environ
    broker = env.get(BROKER_ENV) or DEFAULT_BROKER
    timeout = int(env.get(VISIBILITY_TIMEOUT_ENV) or DEFAULT_VISIBILITY_TIMEOUT)
    if timeout <= 0:
        raise ValueError(f"{VISIBILITY_TIMEOUT_ENV} must be a positive number of seconds, not {timeout}")
    return {
        "broker_url": broker,
        "result_backend": env.get(BACKEND_ENV) or broker,
        # Acknowledge a step's message when the step ends, so a worker lost mid-step leaves it to another.
        "task_acks_late": True,
        # A pool process killed mid-step (OOM) requeues its step instead of failing the run.
        "task_reject_on_worker_lost": True,
        # One step per pool process at a time: a worker holds no steps it is not running.
        "worker_prefetch_multiplier": 1,
        "task_default_queue": CELERY_QUEUE,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # dagster-celery's publish retries
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
            # Redis redelivers a message unacknowledged for this long (a lost worker's step) ...
            "visibility_timeout": timeout,
            # ... checked this often by every live worker ...
            "unacked_restore_interval": max(1, min(10, timeout // 10)),
            "unacked_restore_throttle": 1,
            # ... under a lock that a worker killed while holding it frees after this long.
            "unacked_mutex_expire": max(1, min(300, timeout // 2)),
        },
        # A step may not outlive its lease: past this hard limit the worker kills it and the run fails
        # (raise the visibility timeout), rather than Redis handing it to a second worker while it runs.
        "task_time_limit": timeout - max(2, min(300, timeout // 10)) if timeout > 4 else timeout,
        "result_expires": 7 * 24 * 3600,
    }
