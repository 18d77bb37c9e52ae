"""`make run`: build or update the store through Dagster runs, with progress and a one-screen summary.

The runs go to the Dagster instance in `DAGSTER_HOME`, so they show in the UI afterwards. The
calendar runs first, then the stale buckets in runs of up to `PRECOMPUTE_BUCKETS_PER_RUN` neighbouring
buckets, or one run per core when only inputs changed (two runs at a time, one per core; each runs the
store's checks and records them per bucket),
then the manifest, then a backup when something changed and every check passed.
A bucket whose input, indicator definitions and calendar history are unchanged is not run at all, so
a second `make run` on the same input finishes quickly and changes nothing.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from dagster import DagsterInstance, JobDefinition, execute_job, reconstructable

from precompute_assets import intermediates
from precompute_assets.buckets import bucket_keys
from precompute_assets.freshness import stale_buckets
from precompute_assets.parquet_input import scan_folder
from precompute_assets.partitions import stock_buckets
from precompute_assets.registry import FAMILIES, load_registry
from precompute_assets.settings import Settings
from precompute_assets.store.bucket_state import INPUT_CHANGED, input_problems
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import calendar_holdouts, read_json

BUCKET_JOB, CALENDAR_JOB, MANIFEST_JOB = "precompute_bucket_job", "calendar_job", "manifest_job"
# Buckets per run (a partition range): each run costs a process start, Dagster's run and step
# start-up and the checks' imports, a few seconds, whatever it holds. See README "Performance".
BUCKETS_PER_RUN_ENV = "PRECOMPUTE_BUCKETS_PER_RUN"
BUCKETS_PER_RUN = 8


def job_def(name: str) -> JobDefinition:
    from precompute_assets.definitions import defs

    return defs.resolve_job_def(name)


def calendar_job() -> JobDefinition:
    return job_def(CALENDAR_JOB)


def bucket_job() -> JobDefinition:
    return job_def(BUCKET_JOB)


def manifest_job() -> JobDefinition:
    return job_def(MANIFEST_JOB)


def backup_job() -> JobDefinition:
    return job_def("store_backup_job")


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_job(target, buckets: tuple[str, ...] = ()) -> bool:
    """One Dagster run on the persistent instance; True when it succeeded (its logs are in the UI).

    Several buckets go in one run as a partition range: the assets loop over them in one process,
    which saves a run's start-up (about 5 s) per bucket.
    """
    warnings.filterwarnings("ignore", category=UserWarning)
    if len(buckets) == 1:
        tags = {"dagster/partition": buckets[0], "precompute/bucket": buckets[0]}
    elif buckets:
        tags = {"dagster/asset_partition_range_start": buckets[0], "dagster/asset_partition_range_end": buckets[-1]}
    else:
        tags = {}
    with (
        DagsterInstance.get() as instance,
        execute_job(reconstructable(target), instance, tags=tags, run_config=QUIET) as result,
    ):
        return result.success


def main(workers: int = 2) -> int:
    settings = Settings.from_env()
    started = time.perf_counter()
    print(f"input {settings.parquet_data_path}  ->  store {settings.qlib_data_path}  ({settings.batches} buckets)")
    if not run_job(calendar_job):
        print("calendar run failed; see the Dagster UI (make dev) for its logs")
        return 1
    todo = {bucket: stale.reason for bucket, stale in stale_buckets(settings).items()}
    print(f"{len(todo)} of {settings.batches} buckets to build" + (": " + _reasons(todo) if todo else ""))
    failed = []
    groups = contiguous_groups(sorted(todo), stock_buckets.get_partition_keys(), buckets_per_run(todo, workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_job, bucket_job, group): group for group in groups}
        for done, future in enumerate(as_completed(futures), start=1):
            group = futures[future]
            ok = future.result()
            failed += [] if ok else list(group)
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (len(futures) - done)
            name = group[0] if len(group) == 1 else f"{group[0]}..{group[-1]}"
            print(
                f"[{done}/{len(futures)}] {name} {'ok' if ok else 'FAILED'}  {elapsed:.0f}s elapsed, ~{eta:.0f}s left"
            )
    if not run_job(manifest_job):
        failed.append("manifest")
    holdouts = calendar_holdouts(StoreLayout(settings.qlib_data_path))
    backup = os.environ.get("PRECOMPUTE_BACKUP_AFTER_RUN", "1") != "0"
    if todo and not failed and not holdouts and backup:
        print("every check passed: backing up the store (PRECOMPUTE_BACKUP_AFTER_RUN=0 to skip)")
        if not run_job(backup_job):
            failed.append("backup")
    _summary(settings, sorted(todo), failed, holdouts, time.perf_counter() - started)
    return 1 if failed or holdouts else 0


def buckets_per_run(todo: dict[str, str], workers: int) -> int:
    """`PRECOMPUTE_BUCKETS_PER_RUN` when set; else 8 for a build, and one run per worker when every
    bucket only has changed input (the daily update: a bucket's new day costs less than a run's start)."""
    if os.environ.get(BUCKETS_PER_RUN_ENV):
        return int(os.environ[BUCKETS_PER_RUN_ENV])
    if todo and set(todo.values()) == {INPUT_CHANGED}:
        return max(BUCKETS_PER_RUN, -(-len(todo) // workers))
    return BUCKETS_PER_RUN


def contiguous_groups(buckets: list[str], order: list[str], size: int) -> list[tuple[str, ...]]:
    """Runs of at most `size` buckets that are neighbours in the partition order (a range run needs that)."""
    position = {key: i for i, key in enumerate(order)}
    groups: list[list[str]] = []
    for bucket in sorted(buckets, key=position.__getitem__):
        last = groups[-1] if groups else None
        if last and len(last) < size and position[bucket] == position[last[-1]] + 1:
            last.append(bucket)
        else:
            groups.append([bucket])
    return [tuple(g) for g in groups]


def _reasons(todo: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for reason in todo.values():
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def _summary(settings: Settings, built: list[str], failed: list[str], holdouts: dict[str, str], seconds: float) -> None:
    """One screen: the store, every input problem still present (each bucket records its own, so a file
    that stays bad is listed on every run, not only the run that built its bucket), the calculations
    that failed in this run, and why the calendar is held back."""
    layout = StoreLayout(settings.qlib_data_path)
    version = read_json(layout.data_version_path)
    recorded = input_problems(layout, bucket_keys(settings.batches))
    skipped = [str(e) for e in scan_folder(settings.parquet_data_path).errors] + recorded["skipped"]
    for bucket in built:
        work = intermediates.bucket_dir(settings.work_path, bucket)
        for family in FAMILIES:
            skipped += intermediates.read_notes(work / f"{family}.json").get("errors", [])
    files_by_column: dict[str, int] = {}
    for columns in recorded["ignored_columns"].values():
        for column in columns:
            files_by_column[column] = files_by_column.get(column, 0) + 1
    ignored = ", ".join(f"{c} ({n} file{'s' if n > 1 else ''})" for c, n in sorted(files_by_column.items()))
    registry = load_registry()
    print("\n=== precompute summary ===")
    print(f"store          {settings.qlib_data_path} (data version {version.get('version')})")
    print(f"stocks         {version.get('stock_count', 0)} stored, buckets built this run: {len(built)}")
    print(f"dates          {' .. '.join(str(d) for d in version.get('date_range', []))}")
    columns = ", ".join(f"{f} {len(registry.all(f))}" for f in FAMILIES)
    print(f"columns        {len(registry.all())} indicators ({columns}) + base fields")
    print(f"skipped        {len(skipped)}" + "".join(f"\n  - {line}" for line in skipped))
    problems = recorded["problems"]
    print(f"rows dropped   {len(problems)} file(s)" + "".join(f"\n  - {line}" for line in problems))
    print(f"ignored input  {ignored or 'none'}")
    if holdouts:
        print(
            f"calendar       NOT published: {len(holdouts)} stock(s) hold it back (readers keep the previous one)"
            + "".join(f"\n  - {code}: {why}" for code, why in sorted(holdouts.items()))
        )
    print(f"failed runs    {', '.join(failed) or 'none'}")
    print(f"seconds        {seconds:.1f}")


if __name__ == "__main__":
    sys.exit(main())
