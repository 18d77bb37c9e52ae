"""What `make run` does once its workers are starting (`cli.make_run`): the runs, in order.

The calendar run here, then the stale buckets in range runs on the workers, two at a time, with one
line per running range, then the manifest run and the backup; then the summary.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dagster import DagsterInstance, DagsterRunStatus, JobDefinition, RunsFilter, execute_job, reconstructable

import precompute_assets.defs.instance_storage  # noqa: F401  (installs how the runs commit their events)
from precompute_assets.build import intermediates
from precompute_assets.build.bucket_state import input_problems
from precompute_assets.build.buckets import bucket_keys
from precompute_assets.build.freshness import stale_buckets
from precompute_assets.defs.partitions import buckets_per_run_setting, stock_buckets
from precompute_assets.defs.precompute.check_status import unfinished_store_checks
from precompute_assets.defs.precompute.run_progress import PROGRESS_TAG
from precompute_assets.defs.run_workers import WORKER_TAG, mark_dead_runs, worker_tag
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.registry import FAMILIES
from precompute_assets.input.parquet import scan_folder
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import calendar_holdouts, read_json

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
    """One Dagster run on the persistent instance; True when it succeeded (its logs are in the UI)."""
    return run_job_outcome(target, buckets, session).success


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: did it succeed, its id (its work folder), and what its store step reported."""

    success: bool
    run_id: str
    store: dict[str, float]


def run_bucket_job(buckets: tuple[str, ...], session: str = "") -> RunOutcome:
    return run_job_outcome(bucket_job, buckets, session)


def run_job_outcome(target, buckets: tuple[str, ...] = (), session: str = "") -> RunOutcome:
    """One Dagster run on the persistent instance, tagged with the process executing it.

    Several buckets go in one run as a partition range: the assets loop over them in one process,
    which saves a run's start-up per bucket. The worker tag lets the next `make run` and the daemon
    mark the run failed if this process is killed (`run_workers`); `session` tags the run so that
    `main` can find it and show its progress.
    """
    if len(buckets) == 1:
        tags = {"dagster/partition": buckets[0], "precompute/bucket": buckets[0]}
    elif buckets:
        tags = {"dagster/asset_partition_range_start": buckets[0], "dagster/asset_partition_range_end": buckets[-1]}
    else:
        tags = {}
    tags[WORKER_TAG] = worker_tag()
    if session and buckets:
        tags |= {SESSION_TAG: session, RANGE_TAG: range_name(buckets)}
    with (
        DagsterInstance.get() as instance,
        execute_job(reconstructable(target), instance, tags=tags, run_config=QUIET) as result,
    ):
        store: dict[str, float] = {}
        for event in result.get_asset_materialization_events():
            if event.asset_key is not None and event.asset_key.path == ["qlib_store"]:
                for key in STORE_NOTES:
                    entry = event.materialization.metadata.get(key)
                    # a range run records its merged report on each of its partitions: take it once
                    store[key] = max(store.get(key, 0), entry.value if entry is not None else 0)
        return RunOutcome(result.success, result.run_id, store)


STORE_NOTES = ("stocks_written", "stocks_written_by_another_run", "lock_waited_seconds")


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


def main(pool: ProcessPoolExecutor) -> int:
    """The runs of one `make run`, the range runs on `pool`'s workers; the exit code."""
    settings = Settings.from_env()
    started = time.perf_counter()
    print(f"input {settings.parquet_data_path}  ->  store {settings.qlib_data_path}  ({settings.batches} buckets)")
    with _instance_created_once() as instance:
        for run_id, reason in mark_dead_runs(instance):
            print(f"run {run_id} marked FAILURE: {reason}")
    failed, runs = [], {}
    with DagsterInstance.get() as instance:
        if not run_job(calendar_job):
            print("calendar run failed; see the Dagster UI (make dev) for its logs")
            return 1
        todo = {bucket: stale.reason for bucket, stale in stale_buckets(settings).items()}
        for bucket, run_id in unfinished_store_checks(instance).items():
            todo.setdefault(bucket, f"checks of run {run_id[:8]} did not finish")
        print(f"{len(todo)} of {settings.batches} buckets to build" + (": " + _reasons(todo) if todo else ""))
        groups = bucket_ranges(todo)
        session = uuid.uuid4().hex
        board = ProgressBoard(sys.stdout)
        futures = {pool.submit(run_bucket_job, group, session): group for group in groups}
        pending, done = set(futures), 0
        while pending:
            finished, pending = wait(pending, timeout=POLL, return_when=FIRST_COMPLETED)
            for future in finished:
                done += 1
                group = futures[future]
                outcome = future.result()
                runs.update(dict.fromkeys(group, outcome.run_id))
                failed += [] if outcome.success else list(group)
                elapsed = time.perf_counter() - started
                eta = elapsed / done * (len(futures) - done)
                board.say(
                    f"[{done}/{len(futures)}] {range_name(group)} {'ok' if outcome.success else 'FAILED'}"
                    f"{_store_note(outcome)}  {elapsed:.0f}s elapsed, ~{eta:.0f}s left"
                )
            board.update(running_ranges(instance, session) if pending else {})
    pool.shutdown()  # the workers' memory is free for the manifest and the backup
    if not run_job(manifest_job):
        failed.append("manifest")
    holdouts = calendar_holdouts(StoreLayout(settings.qlib_data_path))
    backup = os.environ.get("PRECOMPUTE_BACKUP_AFTER_RUN", "1") != "0"
    if todo and not failed and not holdouts and backup:
        print("every check passed: backing up the store (PRECOMPUTE_BACKUP_AFTER_RUN=0 to skip)")
        if not run_job(backup_job):
            failed.append("backup")
    _summary(settings, runs, failed, holdouts, time.perf_counter() - started)
    return 1 if failed or holdouts else 0


@contextlib.contextmanager
def _instance_created_once() -> Iterator[DagsterInstance]:
    """The instance, opened first under a file lock in DAGSTER_HOME: two `make run` started at once on a
    new home would both create its SQLite databases, and Dagster's migration check then fails on the
    doubled schema version ("more than one head present")."""
    home = Path(os.environ.get("DAGSTER_HOME", ".dagster_home"))
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".make_run.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            instance = DagsterInstance.get()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    with instance:
        yield instance


def _store_note(outcome: RunOutcome) -> str:
    """What a run's store step says about another run writing the same buckets at the same time."""
    waited, meanwhile = (
        outcome.store.get("lock_waited_seconds", 0),
        outcome.store.get("stocks_written_by_another_run", 0),
    )
    notes = []
    if waited:
        notes.append(f"waited {waited:.0f}s for another run writing these buckets")
    if meanwhile:
        notes.append(f"{meanwhile:.0f} stocks already written by it")
        if not outcome.store.get("stocks_written"):
            notes.append("nothing left to do")
    return f" ({'; '.join(notes)})" if notes else ""


def bucket_ranges(todo: Iterable[str]) -> list[tuple[str, ...]]:
    """The runs for the stale buckets: neighbours together, one range per core (the backfill policy's rule)."""
    stale = sorted(todo)
    return contiguous_groups(stale, stock_buckets.get_partition_keys(), buckets_per_run_setting(len(stale)))


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


def _summary(
    settings: Settings, runs: dict[str, str], failed: list[str], holdouts: dict[str, str], seconds: float
) -> None:
    """One screen: the store, every input problem still present (each bucket records its own, so a file
    that stays bad is listed on every run, not only the run that built its bucket), the calculations
    that failed in this run, and why the calendar is held back. `runs`: each bucket built, with the run
    that built it (its notes are in that run's work folder)."""
    layout = StoreLayout(settings.qlib_data_path)
    version = read_json(layout.data_version_path)
    built = sorted(runs)
    recorded = input_problems(layout, bucket_keys(settings.batches))
    skipped = [str(e) for e in scan_folder(settings.parquet_data_path).errors] + recorded["skipped"]
    for bucket in built:
        work = intermediates.bucket_dir(settings.work_path, bucket, runs[bucket])
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
