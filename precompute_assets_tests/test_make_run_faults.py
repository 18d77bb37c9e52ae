"""Two `make run` at once, and `make run` killed with SIGKILL, on real data (issue 14, faults 3-5).

Every test drives `make run` in subprocesses on its own store and Dagster instance, as a user would,
and compares the store it leaves with a clean build of the same input (every field, the NaN pattern,
values within one float32 ulp). Eight real csi300 stocks from 2024 in four buckets keep each `make
run` to a few tens of seconds.
"""

from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest
from conftest import FAST_CODES, build_store, require_refdata
from make_run_harness import (
    MakeRuns,
    assert_store_equals,
    bucket_lock_held,
    started_steps,
    wait_until,
    write_input,
)

pytestmark = pytest.mark.slow

NEW_DAYS = 20


@pytest.fixture(scope="module")
def final_input(tmp_path_factory):
    """Today's input, and a clean build of it with the core pipeline (the reference every test compares to)."""
    require_refdata()
    root = tmp_path_factory.mktemp("clean_build")
    write_input(FAST_CODES, root / "parquet")
    build_store(root / "parquet", root / "qlib_data", batches=4)
    return root


@pytest.fixture(scope="module")
def yesterday(final_input) -> pd.Timestamp:
    """The input's last date minus NEW_DAYS trading days: a store built up to it gets a daily update."""
    dates = pd.read_parquet(final_input / "parquet" / "SH600000.parquet")["date"]
    return pd.Timestamp(sorted(dates)[-NEW_DAYS - 1])


def full_build(tmp_path, final_input) -> MakeRuns:
    runs = MakeRuns(tmp_path)
    shutil.copytree(final_input / "parquet", runs.parquet)
    return runs


def daily_update(tmp_path, final_input, yesterday) -> MakeRuns:
    """A store built up to yesterday (by the core pipeline, which is quicker than a `make run`), and
    today's input in place: the next run appends."""
    runs = MakeRuns(tmp_path)
    write_input(FAST_CODES, runs.parquet, end=yesterday)
    build_store(runs.parquet, runs.store, batches=4)
    shutil.rmtree(runs.parquet)
    shutil.copytree(final_input / "parquet", runs.parquet)
    return runs


def backups(runs: MakeRuns) -> list[str]:
    return sorted(p.name for p in runs.backups.iterdir() if not p.name.startswith(".")) if runs.backups.is_dir() else []


# --- two writers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("second_starts", ["one second later", "while the first is in its store step"])
def test_two_make_runs_at_once_leave_the_store_of_one_run(tmp_path, final_input, yesterday, second_starts):
    runs = daily_update(tmp_path, final_input, yesterday)
    first = runs.start("first")
    if second_starts == "one second later":
        time.sleep(1.0)
    else:
        wait_until("the first run's store step", lambda: bucket_lock_held(runs.store), 600, 0.01)
    second = runs.start("second")
    codes = runs.wait(first, "first"), runs.wait(second, "second")
    outputs = runs.output("first"), runs.output("second")
    assert codes == (0, 0), "\n\n".join(o[-3000:] for o in outputs)
    assert_store_equals(runs.store, final_input / "qlib_data", runs.parquet)
    # whichever came second says it waited for the other, found the work done, or had nothing to do
    said = ("waited", "already written by it", "nothing left to do", "0 of 4 buckets to build")
    assert any(phrase in output for output in outputs for phrase in said), "\n\n".join(outputs)


# --- killed runs -------------------------------------------------------------------------------------


def kill_point(runs: MakeRuns, where: str, process):
    """A probe that is true once the running bucket run is at `where` (and fails if `make run` ended first)."""
    instance = runs.instance()

    def probe() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"make run ended before its {where}:\n{runs.output('killed')[-3000:]}")
        if where == "store step" and bucket_lock_held(runs.store):  # held exactly while the store step writes
            return True
        steps = set().union(set(), *started_steps(instance).values())
        if where == "store step":
            return "qlib_store" in steps
        if where == "family step":
            return "alpha158" in steps
        return any(step.startswith("qlib_store_") for step in steps)  # a check step

    return probe


@pytest.mark.parametrize("where", ["family step", "store step", "checks"])
@pytest.mark.parametrize("build", ["full build", "daily update"])
def test_a_killed_make_run_is_marked_failed_and_the_next_one_completes_and_backs_up(
    tmp_path, final_input, yesterday, build, where
):
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    runs = (
        full_build(tmp_path, final_input) if build == "full build" else daily_update(tmp_path, final_input, yesterday)
    )
    before = backups(runs)
    killed = runs.start("killed")
    probe = kill_point(runs, where, killed)
    wait_until(f"make run to reach its {where}", probe, 600, 0.01, on_timeout=lambda: runs.output("killed")[-3000:])
    runs.kill(killed)

    instance = runs.instance()
    dead = [r.run_id for r in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))]
    assert dead, "the kill left no run STARTED: it did not land inside a run"

    code, output = runs.run("next")
    assert code == 0, output[-4000:]
    for run_id in dead:
        assert f"run {run_id} marked FAILURE" in output, output[-3000:]
        run = instance.get_run_by_id(run_id)
        assert run.status == DagsterRunStatus.FAILURE, run_id
        failure = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
        assert failure and "process is gone" in failure[-1].event_log_entry.dagster_event.message
    assert not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    assert_store_equals(runs.store, final_input / "qlib_data", runs.parquet)
    assert len(backups(runs)) == len(before) + 1, output[-3000:]
    assert "every check passed: backing up the store" in output

    code, output = runs.run("after")  # and then nothing is left to do, and nothing fails
    assert code == 0, output[-3000:]
    assert "0 of 4 buckets to build" in output, output[-3000:]
