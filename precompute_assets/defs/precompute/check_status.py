"""The latest result of every store check per bucket, as the Dagster instance records it.

The backup refuses a store whose checks failed; `make run` and the sensor re-run buckets whose checks
a dead run left unfinished.
"""

from __future__ import annotations

from dagster import AssetCheckSeverity, DagsterInstance

# Dagster 1.13 exports no public names for a check record's status or a partition filter of check history
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from precompute_assets.defs.precompute.checks import STORE_CHECKS


def failed_store_checks(instance: DagsterInstance) -> list[str]:
    """`<check> on <bucket>` for every bucket whose latest store check failed with ERROR or is still running.

    A check planned by a run that ended without running it (the run's process died, or a step before it
    failed) is not a failure of the store: the bucket is stale (`unfinished_store_checks`, which `make
    run` and the sensor run again), and the latest evaluation that did finish decides here.
    """
    storage = instance.event_log_storage
    keys = [key for check in STORE_CHECKS for key in check.check_keys]
    failed = []
    for info in storage.get_asset_check_partition_info(keys):
        where = f"{info.check_key.name} on {info.partition_key}"
        status = info.latest_execution_status
        if status == AssetCheckExecutionRecordStatus.PLANNED:
            run = instance.get_run_by_id(info.latest_planned_run_id)
            if run is not None and not run.is_finished:
                failed.append(f"{where} (still running)")
                continue
        history = storage.get_asset_check_execution_history(
            info.check_key, limit=HISTORY, partition_filter=PartitionKeyFilter(key=info.partition_key)
        )
        finished = [r for r in history if r.status != AssetCheckExecutionRecordStatus.PLANNED]
        if finished and finished[0].status == AssetCheckExecutionRecordStatus.FAILED:
            evaluation = finished[0].evaluation
            if evaluation is None or evaluation.severity == AssetCheckSeverity.ERROR:
                failed.append(where)
    return sorted(failed)


HISTORY = 20
"""Check executions looked at per bucket for the latest finished one (killed runs leave planned ones)."""


def unfinished_store_checks(instance: DagsterInstance) -> dict[str, str]:
    """Buckets whose latest store check was planned by a run that ended without running it, with that
    run's id: what the bucket holds was never validated, so it must run again."""
    storage = instance.event_log_storage
    keys = [key for check in STORE_CHECKS for key in check.check_keys]
    unfinished: dict[str, str] = {}
    for info in storage.get_asset_check_partition_info(keys):
        if info.latest_execution_status != AssetCheckExecutionRecordStatus.PLANNED or info.partition_key is None:
            continue
        run = instance.get_run_by_id(info.latest_planned_run_id)
        if run is None or run.is_finished:
            unfinished[info.partition_key] = info.latest_planned_run_id
    return unfinished
