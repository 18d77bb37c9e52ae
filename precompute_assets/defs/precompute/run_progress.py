"""A run's progress a person can read: buckets done, stocks done and time left, after every bucket.

Each bucket step (the assets and the store checks) reports after each bucket of its range; the line goes
to the run's log and to the run tag `precompute/progress`, which the runs list, the backfill page and
`make run` show. The run's share done counts stocks through its planned steps (every step of every
bucket weighs its stocks), and the time left extrapolates the run's elapsed time from that share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dagster import AssetCheckExecutionContext, AssetExecutionContext, DagsterEventType

from precompute_assets.build.buckets import codes_in_bucket
from precompute_assets.input.parquet import scan_folder
from precompute_assets.settings import Settings

PROGRESS_TAG = "precompute/progress"
TAG_EVERY = 2.0
"""Seconds between tag writes within one step (each is a write to the run storage); the last always goes."""


@dataclass
class RunProgress:
    """One step's walk through its run's buckets, placed in the whole run."""

    context: AssetExecutionContext | AssetCheckExecutionContext
    step: str
    stocks: dict[str, int]
    steps_total: int
    steps_done: int
    run_started: float
    buckets_done: list[str] = field(default_factory=list)
    last_tag: float = 0.0

    @classmethod
    def start(
        cls, context: AssetExecutionContext | AssetCheckExecutionContext, step: str, settings: Settings
    ) -> RunProgress:
        codes = list(scan_folder(settings.parquet_data_path).files)
        buckets = list(context.partition_keys)
        stocks = {bucket: len(codes_in_bucket(codes, bucket, settings.batches)) for bucket in buckets}
        instance, run_id = context.instance, context.run.run_id
        plan = instance.get_execution_plan_snapshot(context.run.execution_plan_snapshot_id)
        succeeded = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_SUCCESS).records
        record = instance.get_run_record_by_id(run_id)
        started = record.start_time if record and record.start_time else time.time()
        return cls(context, step, stocks, max(len(plan.step_keys_to_execute), 1), len(succeeded), started)

    def bucket_done(self, *buckets: str, detail: str = "") -> str:
        """Report `buckets` finished in this step (a check judges many at once), after `detail` (what the
        step says of them) in the same message: each log message is an event the run stores, one
        transaction each; returns the progress line."""
        self.buckets_done.extend(buckets)
        line = self.describe()
        self.context.log.info(f"{detail}\n{line}" if detail else line)
        now = time.monotonic()
        if now - self.last_tag >= TAG_EVERY or len(self.buckets_done) == len(self.stocks):
            self.last_tag = now
            self.context.instance.add_run_tags(self.context.run.run_id, {PROGRESS_TAG: line})
        return line

    def describe(self) -> str:
        total = sum(self.stocks.values())
        stocks_done = sum(self.stocks[b] for b in self.buckets_done)
        step_share = stocks_done / total if total else len(self.buckets_done) / max(len(self.stocks), 1)
        share = min((self.steps_done + step_share) / self.steps_total, 1.0)
        elapsed = time.time() - self.run_started
        left = elapsed * (1 - share) / share if share > 0 else 0.0
        return (
            f"{self.step}: {len(self.buckets_done)}/{len(self.stocks)} buckets, {stocks_done}/{total} stocks; "
            f"run {share:.0%} done, {elapsed:.0f}s elapsed, ~{left:.0f}s left"
        )
