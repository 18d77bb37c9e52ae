"""Runs whose process is gone: found, marked failed with the reason, and told apart from other failures.

A run killed with its process (kill -9, a lost machine, an OOM kill) stays STARTED in the instance
for ever: it blocks the run queue's limit and its planned checks never finish. Every run `make run`
starts carries `WORKER_TAG` (host, pid and process start time of the process executing it); runs the
daemon launches name their pid in the "Started process for run" engine event. A run whose process
no longer exists on this host is dead. Two places mark dead runs failed:

- `make run`, before it starts (`mark_dead_runs`);
- the daemon's run monitoring (`run_monitoring` in deploy/dagster.yaml), which asks the run launcher
  for each started run's worker health: `WorkerCheckingRunLauncher` is Dagster's default launcher
  with that health check.

A run on another host is never judged from here (its pid means nothing on this one).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

from precompute_assets.store.lock import pid_alive

WORKER_TAG = "precompute/run_worker"
DEAD = "the run's process is gone"
"""Part of every reason this module gives, so a dead run can be told from one that failed by itself."""
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
DIED = {RunFailureReason.UNEXPECTED_TERMINATION, RunFailureReason.RUN_WORKER_RESTART, RunFailureReason.START_TIMEOUT}


@dataclass(frozen=True)
class RunWorker:
    """The process executing a run; `started` is its start time as the kernel counts it ("" if unknown)."""

    host: str
    pid: int
    started: str = ""

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host}"


def worker_tag() -> str:
    """The tag value naming this process as a run's worker."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start(pid)}"


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): with the pid, it
    names one process, even after the pid is reused. "" where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def run_worker(instance: DagsterInstance, run: DagsterRun) -> RunWorker | None:
    """The run's worker process, from its tag or from the launcher's "Started process" event."""
    if WORKER_TAG in run.tags:
        host, pid, started = run.tags[WORKER_TAG].rsplit(":", 2)
        return RunWorker(host, int(pid), started)
    for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=20).records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and "Started process for run" in (event.message or ""):
            # the default launcher's code servers run on the daemon's host (`dagster dev`, one machine)
            return RunWorker(socket.gethostname(), int(pid.value))
    return None


def dead_reason(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """Why the run's worker is known to be gone, or None while it may be alive (or cannot be judged)."""
    worker = run_worker(instance, run)
    if worker is None or worker.host != socket.gethostname():
        return None
    if not pid_alive(worker.pid):
        return f"{DEAD}: its worker, {worker}, no longer exists (killed or crashed)"
    if worker.started and process_start(worker.pid) not in ("", worker.started):
        return f"{DEAD}: its worker, {worker}, ended and the pid now belongs to another process"
    return None


def mark_dead_runs(instance: DagsterInstance) -> list[tuple[str, str]]:
    """Mark every unfinished run whose worker is gone as failed, with the reason; (run id, reason) of each."""
    marked = []
    for run in instance.get_runs(RunsFilter(statuses=UNFINISHED)):
        reason = dead_reason(instance, run)
        if reason is None:
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            continue
        failure = JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
        instance.report_run_failed(current, f"Marked failed: {reason}.", failure)
        marked.append((run.run_id, reason))
    return marked


def died(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether a failed run failed because its process went away (not because a step failed)."""
    if run.status != DagsterRunStatus.FAILURE:
        return False
    records = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.RUN_FAILURE, limit=1, ascending=False
    ).records
    event = records[0].event_log_entry.dagster_event if records else None
    if event is None:
        return False
    data = event.event_specific_data
    reason = getattr(data, "failure_reason", None)
    return reason in DIED or DEAD in (event.message or "") or "terminated unexpectedly" in (event.message or "")


class WorkerCheckingRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher, plus the worker health check run monitoring asks for.

    A run whose worker cannot be judged from here reports RUNNING: run monitoring fails every other
    status, and only a known-dead worker may fail a run.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        instance = self._instance
        reason = dead_reason(instance, run) if instance is not None else None
        if reason is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, reason)
