#!/usr/bin/env bash
# One precompute Celery worker: runs Dagster steps that a run with PRECOMPUTE_EXECUTOR=celery sends to
# the broker. Start as many as you like, on any machine that sees the same store filesystem, the same
# Dagster instance storage and the same environment (PRECOMPUTE_CELERY_BROKER, PRECOMPUTE_BATCHES, ...).
#
#   deploy/celery/worker.sh                          # one pool process per core, name precompute-<pid>@host
#   deploy/celery/worker.sh -n a@%h --concurrency 1  # any further `celery worker` options
#
# PYTHON picks the interpreter of the project's environment (default: python3 on PATH).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="${here}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-python3}" -m celery -A dagster_celery.app worker \
  --queues dagster \
  --prefetch-multiplier 1 \
  --loglevel "${CELERY_LOGLEVEL:-INFO}" \
  --hostname "precompute-$$@%h" \
  "$@"
