"""`python -m precompute_assets.cli.operations {backup,restore,list,cleanup}` on the store of QLIB_DATA_PATH."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from precompute_assets.operations.backup import create_backup, list_backups, prune_backups
from precompute_assets.operations.cleanup import cleanup
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.restore import kept_stores, restore_backup
from precompute_assets.settings import Settings
from precompute_assets.store.disk_space import human_size
from precompute_assets.store.errors import OperationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute_assets.cli.operations", description=__doc__)
    parser.add_argument("--backup-path", type=Path, help="backup folder (default: PRECOMPUTE_BACKUP_PATH)")
    commands = parser.add_subparsers(dest="command", required=True)
    backup = commands.add_parser("backup", help="copy the store into a new backup, then keep the newest N")
    backup.add_argument("--keep", type=int, help="backups to keep (default: PRECOMPUTE_BACKUP_KEEP, 5)")
    restore = commands.add_parser("restore", help="make a backup the store (the current one is kept aside)")
    restore.add_argument("backup", help="a backup name from `list`, `latest`, or a path")
    commands.add_parser("list", help="backups, and stores kept aside by restores")
    clean = commands.add_parser("cleanup", help="remove temporaries, old versions, backups and intermediates")
    clean.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    config = OperationsConfig.from_env(settings)
    if args.backup_path:
        config = replace(config, backup_path=args.backup_path)
    try:
        if args.command == "backup":
            if args.keep is not None:
                config = replace(config, keep_backups=args.keep)
            info = create_backup(settings, config)
            removed = prune_backups(config)
            print(f"backup {info.name}: {info.stocks} stocks, {human_size(info.bytes)} at {info.path}")
            if info.previous is not None:
                print(f"  {human_size(info.new_bytes or 0)} written, the rest shared with backup {info.previous}")
            print(f"removed {len(removed)} old backup(s), keeping the newest {config.keep_backups}")
        elif args.command == "restore":
            report = restore_backup(settings, config, args.backup)
            print(f"restored {report.stocks} stocks from {report.source} into {settings.qlib_data_path}")
            if report.previous_store:
                print(f"the previous store is kept at {report.previous_store}")
        elif args.command == "list":
            backups = list_backups(config)
            print(f"backups in {config.backup_path}: {len(backups)}")
            for b in backups:
                print(f"  {b.name}  {b.stocks} stocks  {human_size(b.bytes)}  data version {b.data_version}")
            for path in kept_stores(settings):
                print(f"  {path}  (store replaced by a restore)")
        else:
            print(cleanup(settings, config, dry_run=args.dry_run).describe())
    except OperationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
