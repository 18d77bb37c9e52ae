"""Store operations in the Dagster shell: the backup asset, and the restore and cleanup jobs.

The backup runs after the manifest, and only when no store check's latest evaluation failed for any
bucket (warnings do not count), so what is backed up has passed validation; the copy itself is then
verified file by file against the recorded checksums. Restore is a job launched from the Launchpad
with the backup's name; cleanup runs daily.
"""

from dataclasses import replace
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    ScheduleDefinition,
    asset,
    define_asset_job,
    job,
    op,
)

from precompute_assets.defs.precompute.check_status import failed_store_checks
from precompute_assets.defs.precompute.manifest import store_manifest
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.operations.backup import create_backup, prune_backups
from precompute_assets.operations.cleanup import cleanup
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.restore import restore_backup
from precompute_assets.store.errors import OperationError


class BackupConfig(Config):
    """Empty values fall back to PRECOMPUTE_BACKUP_PATH and PRECOMPUTE_BACKUP_KEEP."""

    backup_path: str = ""
    keep: int = 0


class RestoreConfig(Config):
    """A backup name from `python -m precompute_assets.cli.operations list`, `latest`, or a path."""

    backup: str = "latest"


class CleanupConfig(Config):
    dry_run: bool = False


def operations_config(precompute: PrecomputeSettings, backup_path: str = "", keep: int = 0) -> OperationsConfig:
    config = OperationsConfig.from_env(precompute.settings)
    if backup_path:
        config = replace(config, backup_path=Path(backup_path))
    return replace(config, keep_backups=keep) if keep else config


@asset(
    deps=[store_manifest],
    group_name="operations",
    description="A verified backup of the store under PRECOMPUTE_BACKUP_PATH (default QLIB_DATA_PATH/../backups), "
    "storing what changed since the previous one (references to earlier backups plus appended values); the newest "
    "PRECOMPUTE_BACKUP_KEEP are kept. Refused while a store check fails for any bucket.",
)
def store_backup(
    context: AssetExecutionContext, config: BackupConfig, precompute: PrecomputeSettings
) -> MaterializeResult:
    failed = failed_store_checks(context.instance)
    if failed:
        raise Failure(
            description=f"not backing up a store that failed validation: {', '.join(failed[:10])}"
            + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
            + "; re-materialize those buckets of qlib_store first",
            metadata={"failed_checks": MetadataValue.json(failed)},
        )
    settings = operations_config(precompute, config.backup_path, config.keep)
    try:
        info = create_backup(precompute.settings, settings)
    except OperationError as exc:
        raise Failure(description=str(exc)) from exc
    removed = prune_backups(settings)
    context.log.info(f"backup {info.path}: {info.stocks} stocks; removed {len(removed)} old backup(s)")
    return MaterializeResult(
        metadata={
            "backup": info.name,
            "path": MetadataValue.path(str(info.path)),
            "stocks": info.stocks,
            "bytes": info.bytes,
            "new_bytes": info.new_bytes,
            "previous_backup": info.previous,
            "store_data_version": info.data_version,
            "backups_removed": MetadataValue.json([p.name for p in removed]),
            "backups_kept": settings.keep_backups,
        }
    )


@op(description="Make a backup the store; the store it replaces is kept beside it until the cleanup's retention.")
def restore_store(context: OpExecutionContext, config: RestoreConfig, precompute: PrecomputeSettings) -> None:
    try:
        report = restore_backup(precompute.settings, operations_config(precompute), config.backup)
    except OperationError as exc:
        raise Failure(description=str(exc)) from exc
    context.log.info(f"restored {report.stocks} stocks from {report.source}; previous store at {report.previous_store}")


@op(description="Remove temporaries, old stock versions, old backups and intermediates past their retention.")
def cleanup_store(context: OpExecutionContext, config: CleanupConfig, precompute: PrecomputeSettings) -> None:
    report = cleanup(precompute.settings, operations_config(precompute), dry_run=config.dry_run)
    context.log.info(report.describe())


@job(description="Restore the store from a backup (set `backup` in the op config).")
def store_restore_job() -> None:
    restore_store()


@job(description="Clean temporaries, old versions, old backups and old intermediates.")
def store_cleanup_job() -> None:
    cleanup_store()


store_backup_job = define_asset_job("store_backup_job", selection=[store_backup])
store_cleanup_schedule = ScheduleDefinition(job=store_cleanup_job, cron_schedule="30 3 * * *", name="store_cleanup")

OPERATIONS_ASSETS = [store_backup]
OPERATIONS_JOBS = [store_backup_job, store_restore_job, store_cleanup_job]
OPERATIONS_SCHEDULES = [store_cleanup_schedule]
