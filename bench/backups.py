"""Backup benchmark: a full build and three daily updates, each backed up, against a full copy each time.

    .venv/bin/python bench/backups.py                  # 300 stocks x 10 years
    .venv/bin/python bench/backups.py --stocks 50 --years 3

The market comes from the project's own generator; the build and the updates run the core pipeline
(no Dagster: the figures are the backups'). After each run the store is backed up twice: into the
backup folder as `make run` does (an update's backup stores what it changed), and into a second folder
that never has a previous backup, so each one is a full copy (what every backup was before). Prints
seconds and disk (allocated blocks, a hard-linked file counted once) and writes JSON (`--json`,
default bench/results/backups.json). Both sides are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute_assets.build import pipeline  # noqa: E402
from precompute_assets.input.synthetic import generate_market  # noqa: E402
from precompute_assets.operations.backup import create_backup, list_backups  # noqa: E402
from precompute_assets.operations.config import OperationsConfig  # noqa: E402
from precompute_assets.operations.restore import restore_backup  # noqa: E402
from precompute_assets.operations.store_copy import NOT_COPIED, is_temporary  # noqa: E402
from precompute_assets.settings import Settings  # noqa: E402
from precompute_assets.store.disk_space import disk_bytes  # noqa: E402
from precompute_assets.store.layout import StoreLayout  # noqa: E402

UPDATES = 3


def cut_market(source: Path, target: Path, drop: int) -> None:
    """The market without its last `drop` trading days."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table.slice(0, table.num_rows - drop), target / path.name, compression="zstd")


def run_pipeline(settings: Settings) -> float:
    started = time.perf_counter()
    pipeline.build_in_process(settings)
    return time.perf_counter() - started


def store_disk_bytes(root: Path) -> int:
    """The store's current content on disk: shared files and each stock's current version."""
    shared = [p for p in root.iterdir() if p.name not in NOT_COPIED and not is_temporary(p.name)]
    return disk_bytes([*shared, *(p.resolve() for p in StoreLayout(root).features_dir.iterdir())])


def backed_up(settings: Settings, config: OperationsConfig) -> dict:
    started = time.perf_counter()
    info = create_backup(settings, config)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "new_bytes": info.new_bytes, "name": info.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=300)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "backups.json")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_backups_"))
    work.mkdir(parents=True, exist_ok=True)
    end_year = 2024
    generate_market(work / "market", args.stocks, f"{end_year - args.years + 1}-01-01", f"{end_year}-12-31", seed=2026)
    settings = Settings(work / "parquet", work / "qlib_data", args.batches)
    incremental = OperationsConfig(backup_path=work / "backups", keep_backups=UPDATES + 1)
    full_copies = OperationsConfig(backup_path=work / "full_copies", keep_backups=UPDATES + 1)

    aside = work / "full_copies_aside"
    aside.mkdir(exist_ok=True)
    rounds = []
    for day in range(UPDATES + 1):  # the build, then one new trading day for every stock, three times
        cut_market(work / "market", settings.parquet_data_path, UPDATES - day)
        run_seconds = run_pipeline(settings)
        ours = backed_up(settings, incremental)
        for old in list_backups(full_copies):  # so the next one has no previous backup: a full copy
            os.rename(old.path, aside / old.name)
        full = backed_up(settings, full_copies)
        rounds.append(
            {
                "run": "build" if day == 0 else f"update {day}",
                "run_seconds": round(run_seconds, 1),
                "backup": ours,
                "full_copy": full,
            }
        )
    store = store_disk_bytes(settings.qlib_data_path)
    kept = disk_bytes([b.path for b in list_backups(incremental)])
    copies = disk_bytes([*aside.iterdir(), *(b.path for b in list_backups(full_copies))])
    started = time.perf_counter()
    restore_backup(settings, incremental, list_backups(incremental)[-1].name)
    restore_seconds = time.perf_counter() - started

    updates = rounds[1:]
    results = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "market": {"stocks": args.stocks, "years": args.years, "batches": args.batches},
        "rounds": rounds,
        "update_backup_seconds": round(sum(r["backup"]["seconds"] for r in updates) / len(updates), 2),
        "full_copy_seconds": round(sum(r["full_copy"]["seconds"] for r in updates) / len(updates), 2),
        "store_disk_bytes": store,
        "kept_backups": len(list_backups(incremental)),
        "kept_backups_disk_bytes": kept,
        "kept_backups_to_store": round(kept / store, 3),
        "as_many_full_copies_disk_bytes": copies,
        "full_copies_to_store": round(copies / store, 3),
        "restore_latest_seconds": round(restore_seconds, 2),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nJSON: {args.json}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict) -> None:
    mb = 2**20
    print(f"{results['market']['stocks']} stocks x {results['market']['years']} years")
    print(f"{'run':<10} {'run s':>7} {'backup s':>9} {'backup MB new':>14} {'full copy s':>12} {'full copy MB':>13}")
    for r in results["rounds"]:
        print(
            f"{r['run']:<10} {r['run_seconds']:>7} {r['backup']['seconds']:>9} {r['backup']['new_bytes'] / mb:>14.2f}"
            f" {r['full_copy']['seconds']:>12} {r['full_copy']['new_bytes'] / mb:>13.2f}"
        )
    print(
        f"update backup {results['update_backup_seconds']} s vs full copy {results['full_copy_seconds']} s "
        f"({results['update_backup_seconds'] / results['full_copy_seconds']:.3f})"
    )
    print(
        f"store {results['store_disk_bytes'] / mb:.1f} MB on disk; {results['kept_backups']} kept backups "
        f"{results['kept_backups_disk_bytes'] / mb:.1f} MB ({results['kept_backups_to_store']}x the store), "
        f"as many full copies {results['as_many_full_copies_disk_bytes'] / mb:.1f} MB "
        f"({results['full_copies_to_store']}x)"
    )
    print(f"restore of the newest backup: {results['restore_latest_seconds']} s")


if __name__ == "__main__":
    main()
