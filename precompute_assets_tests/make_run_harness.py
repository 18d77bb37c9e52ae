"""`make run` as a user runs it, in subprocesses on a test's own store and Dagster instance, and what
the fault tests look at afterwards: the store against a clean build, backups, the instance's runs.

Each `make run` gets its own process group, so a test can SIGKILL it with every run worker it
started, as `kill -9 -<pgid>` would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import CSI300

import precompute_assets

# The package the test imports (a worktree, or an older tree under test) is the one `make run` runs.
ROOT = Path(precompute_assets.__file__).resolve().parents[1]
FIRST_DATE = pd.Timestamp("2024-01-01")
"""Two years and a bit of real rows per stock: enough for every indicator's warm-up, and quick."""
BATCHES = "4"


def write_input(codes: Iterable[str], folder: Path, end: pd.Timestamp | None = None) -> None:
    """Real csi300 files from FIRST_DATE, up to `end` (a day before today's input, for an update)."""
    folder.mkdir(parents=True, exist_ok=True)
    for code in codes:
        frame = pd.read_parquet(CSI300 / f"{code}.parquet")
        keep = frame["date"] >= FIRST_DATE
        if end is not None:
            keep &= frame["date"] <= end
        frame[keep].reset_index(drop=True).to_parquet(folder / f"{code}.parquet")


@dataclass
class MakeRuns:
    """One input folder, store and DAGSTER_HOME, driven by `make run` (python -m precompute_assets.cli.make_run)."""

    root: Path

    @property
    def parquet(self) -> Path:
        return self.root / "parquet"

    @property
    def store(self) -> Path:
        return self.root / "qlib_data"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def backups(self) -> Path:
        return self.root / "backups"  # PRECOMPUTE_BACKUP_PATH's default: beside the store

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DAGSTER_HOME": str(self.home),
            "PARQUET_DATA_PATH": str(self.parquet),
            "QLIB_DATA_PATH": str(self.store),
            "PRECOMPUTE_BATCHES": BATCHES,
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str) -> subprocess.Popen:
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "deploy" / "dagster.yaml", self.home / "dagster.yaml")
        with open(self.root / f"{name}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "precompute_assets.cli.make_run"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: kill() takes every run worker with it
            )

    def output(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def wait(self, process: subprocess.Popen, name: str, timeout: float = 900) -> int:
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(process)
            raise AssertionError(
                f"make run {name} did not finish in {timeout:.0f}s\n{self.output(name)[-3000:]}"
            ) from None

    def run(self, name: str, timeout: float = 900) -> tuple[int, str]:
        code = self.wait(self.start(name), name, timeout)
        return code, self.output(name)

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL `make run`'s whole process group (the driver and its run workers), and reap the driver."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)

    def instance(self):
        from dagster import DagsterInstance

        return DagsterInstance.from_config(str(self.home))


def started_steps(instance, job: str = "precompute_bucket_job") -> dict[str, set[str]]:
    """Per unfinished run of `job`: the step keys that started and did not end."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    open_steps: dict[str, set[str]] = {}
    for run in instance.get_runs(RunsFilter(job_name=job, statuses=[DagsterRunStatus.STARTED])):
        records = instance.get_records_for_run(
            run.run_id,
            of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE},
        ).records
        steps: set[str] = set()
        for record in records:
            event = record.event_log_entry.dagster_event
            if event.event_type == DagsterEventType.STEP_START:
                steps.add(event.step_key)
            else:
                steps.discard(event.step_key)
        open_steps[run.run_id] = steps
    return open_steps


def wait_until(what: str, probe: Callable[[], object], timeout: float, interval: float = 0.05, on_timeout=None):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout() if on_timeout else ''}"
            )
        time.sleep(interval)


def bucket_lock_held(store: Path) -> bool:
    """A bucket's writer holds its lock exactly while its store step writes (operations/lock.py)."""
    locks = store / ".locks"
    return locks.is_dir() and any(p.name.startswith("bucket-") and p.suffix == ".lock" for p in locks.iterdir())


def assert_within_one_ulp(a: np.ndarray, b: np.ndarray, what: str) -> None:
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), f"{what}: NaN pattern differs at {np.flatnonzero(nan_a != nan_b)[:5]}"
    ulps = np.abs(a[~nan_a].view(np.int32).astype(np.int64) - b[~nan_b].view(np.int32).astype(np.int64))
    assert ulps.max(initial=0) <= 1, f"{what}: {ulps.max()} ulps apart"


def assert_store_equals(store: Path, clean: Path, parquet: Path) -> None:
    """The store holds what a clean build of the same input holds: calendar, instruments, every stock,
    every field, the same NaN pattern and values within one float32 ulp; its files pass integrity."""
    from precompute_assets.settings import Settings
    from precompute_assets.store.layout import StoreLayout
    from precompute_assets.store.reader import StoreReader
    from precompute_assets.validation.integrity import validate_integrity

    ours, theirs = StoreReader(StoreLayout(store)), StoreReader(StoreLayout(clean))
    assert ours.calendar.equals(theirs.calendar), "calendar differs from a clean build"
    assert (store / "instruments" / "all.txt").read_text() == (clean / "instruments" / "all.txt").read_text()
    codes = sorted(p.name.upper() for p in (clean / "features").iterdir())
    assert sorted(p.name.upper() for p in (store / "features").iterdir() if not p.name.startswith(".")) == codes
    for code in codes:
        fields = theirs.fields(code)
        assert ours.fields(code) == fields, code
        a, b = ours.read(code, fields), theirs.read(code, fields)
        assert a.index.equals(b.index), f"{code}: rows on other dates than a clean build's"
        for field in fields:
            assert_within_one_ulp(a[field].to_numpy(), b[field].to_numpy(), f"{code}.{field}")
    integrity = validate_integrity(Settings(parquet, store, int(BATCHES)), None)
    assert integrity.passed, integrity.describe()
