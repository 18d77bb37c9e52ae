"""`make run`: build or update the store through Dagster runs, with progress and a one-screen summary.

The runs go to the Dagster instance in `DAGSTER_HOME`, so they show in the UI afterwards. The
calendar runs first, then the stale buckets in runs of up to `PRECOMPUTE_BUCKETS_PER_RUN` neighbouring
buckets, or one run per core when only inputs changed (two runs at a time, one per core; each runs the
store's checks and records them per bucket),
then the manifest, then a backup when something changed and every check passed. While the ranges run,
it shows one line per running range (its `precompute/progress` tag: buckets, stocks, time left).
A bucket whose input, indicator definitions and calendar history are unchanged is not run at all, so
a second `make run` on the same input finishes quickly and changes nothing.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import TextIO

from dagster import DagsterInstance, DagsterRunStatus, JobDefinition, RunsFilter, execute_job, reconstructable

from precompute_assets import intermediates
from precompute_assets.assets.run_progress import PROGRESS_TAG
from precompute_assets.freshness import stale_buckets
from precompute_assets.partitions import BUCKETS_PER_RUN_ENV, buckets_per_run_setting, stock_buckets
from precompute_assets.registry import FAMILIES, load_registry
from precompute_assets.settings import Settings
from precompute_assets.store.bucket_state import INPUT_CHANGED
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json

BUCKET_JOB, CALENDAR_JOB, MANIFEST_JOB = "precompute_bucket_job", "calendar_job", "manifest_job"


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


SESSION_TAG, RANGE_TAG = "precompute/make_run", "precompute/range"
POLL = 1.0
"""Seconds between looks at the running ranges' progress tags."""


def run_job(target, buckets: tuple[str, ...] = (), session: str = "") -> bool:
    """One Dagster run on the persistent instance; True when it succeeded (its logs are in the UI).

    Several buckets go in one run as a partition range: the assets loop over them in one process,
    which saves a run's start-up (about 5 s) per bucket. `session` tags the run so that `main` can
    find it and show its progress.
    """
    if len(buckets) == 1:
        tags = {"dagster/partition": buckets[0], "precompute/bucket": buckets[0]}
    elif buckets:
        tags = {"dagster/asset_partition_range_start": buckets[0], "dagster/asset_partition_range_end": buckets[-1]}
    else:
        tags = {}
    if session and buckets:
        tags |= {SESSION_TAG: session, RANGE_TAG: range_name(buckets)}
    with (
        DagsterInstance.get() as instance,
        execute_job(reconstructable(target), instance, tags=tags, run_config=QUIET) as result,
    ):
        return result.success


def range_name(buckets: tuple[str, ...]) -> str:
    return buckets[0] if len(buckets) == 1 else f"{buckets[0]}..{buckets[-1]}"


class ProgressBoard:
    """One line per running range, updated in place on a terminal; elsewhere (a log file, a pipe) a
    range's line is printed again only when it changed and `every` seconds passed since its last."""

    def __init__(self, out: TextIO, every: float = 10.0) -> None:
        self.out, self.every = out, every
        self.live = out.isatty()
        self.lines: dict[str, str] = {}
        self.drawn = 0
        self.printed: dict[str, tuple[str, float]] = {}

    def say(self, line: str) -> None:
        """A permanent line (a range finished), above the live ones."""
        self._erase()
        print(line, file=self.out)
        self._draw()

    def update(self, lines: dict[str, str]) -> None:
        self.lines = dict(sorted(lines.items()))
        if self.live:
            self._erase()
            self._draw()
            return
        now = time.monotonic()
        for name, text in self.lines.items():
            last, when = self.printed.get(name, ("", -self.every))
            if text != last and now - when >= self.every:
                print(f"  {name}  {text}", file=self.out, flush=True)
                self.printed[name] = (text, now)

    def _erase(self) -> None:
        if self.live and self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the first live line, clear below
        self.drawn = 0

    def _draw(self) -> None:
        if self.live:
            for name, text in self.lines.items():
                self.out.write(f"  {name}  {text}\n")
            self.drawn = len(self.lines)
        self.out.flush()


def running_ranges(instance: DagsterInstance, session: str) -> dict[str, str]:
    """Each running range of this `make run` and its progress tag (set by the run's steps)."""
    runs = instance.get_runs(RunsFilter(tags={SESSION_TAG: session}, statuses=[DagsterRunStatus.STARTED]))
    return {run.tags[RANGE_TAG]: run.tags.get(PROGRESS_TAG, "starting") for run in runs if RANGE_TAG in run.tags}


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
    session = uuid.uuid4().hex
    board = ProgressBoard(sys.stdout)
    with (
        ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool,
        DagsterInstance.get() as instance,
    ):
        futures = {pool.submit(run_job, bucket_job, group, session): group for group in groups}
        pending, done = set(futures), 0
        while pending:
            finished, pending = wait(pending, timeout=POLL, return_when=FIRST_COMPLETED)
            for future in finished:
                done += 1
                group = futures[future]
                ok = future.result()
                failed += [] if ok else list(group)
                elapsed = time.perf_counter() - started
                eta = elapsed / done * (len(futures) - done)
                board.say(
                    f"[{done}/{len(futures)}] {range_name(group)} {'ok' if ok else 'FAILED'}  "
                    f"{elapsed:.0f}s elapsed, ~{eta:.0f}s left"
                )
            board.update(running_ranges(instance, session) if pending else {})
    if not run_job(manifest_job):
        failed.append("manifest")
    backup = os.environ.get("PRECOMPUTE_BACKUP_AFTER_RUN", "1") != "0"
    if todo and not failed and backup:
        print("every check passed: backing up the store (PRECOMPUTE_BACKUP_AFTER_RUN=0 to skip)")
        if not run_job(backup_job):
            failed.append("backup")
    _summary(settings, sorted(todo), failed, time.perf_counter() - started)
    return 1 if failed else 0


def buckets_per_run(todo: dict[str, str], workers: int) -> int:
    """The backfill policy's range size (`partitions.buckets_per_run_setting`); unless the setting is
    given, one run per worker when every bucket only has changed input (the daily update: a bucket's
    new day costs less than a run's start)."""
    size = buckets_per_run_setting()
    if not os.environ.get(BUCKETS_PER_RUN_ENV) and todo and set(todo.values()) == {INPUT_CHANGED}:
        return max(size, -(-len(todo) // workers))
    return size


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


def _summary(settings: Settings, built: list[str], failed: list[str], seconds: float) -> None:
    layout = StoreLayout(settings.qlib_data_path)
    version = read_json(layout.data_version_path)
    skipped = []
    for bucket in built:
        work = intermediates.bucket_dir(settings.work_path, bucket)
        skipped += intermediates.read_notes(work / "bars.json").get("errors", [])
        for family in FAMILIES:
            skipped += intermediates.read_notes(work / f"{family}.json").get("errors", [])
    registry = load_registry()
    print("\n=== precompute summary ===")
    print(f"store          {settings.qlib_data_path} (data version {version.get('version')})")
    print(f"stocks         {version.get('stock_count', 0)} stored, buckets built this run: {len(built)}")
    print(f"dates          {' .. '.join(str(d) for d in version.get('date_range', []))}")
    columns = ", ".join(f"{f} {len(registry.all(f))}" for f in FAMILIES)
    print(f"columns        {len(registry.all())} indicators ({columns}) + base fields")
    print(f"skipped        {len(skipped)}" + "".join(f"\n  - {line}" for line in skipped))
    print(f"failed runs    {', '.join(failed) or 'none'}")
    print(f"seconds        {seconds:.1f}")


if __name__ == "__main__":
    sys.exit(main())
