"""Runs whose process is gone: Dagster's run monitoring (with deploy/dagster.yaml) and the sensor mark
them failed with the reason, they stop holding their buckets, and their buckets are requested again."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml
from conftest import copy_inputs
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter, build_sensor_context
from dagster._core.test_utils import instance_for_test
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from precompute_assets.build.buckets import bucket_of
from precompute_assets.definitions import defs
from precompute_assets.defs.precompute.sensors import parquet_input_sensor
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.defs.run_workers import WORKER_TAG, died, mark_dead_runs, process_start, worker_tag

ROOT = Path(__file__).resolve().parents[1]
CODES = ("SH600000", "SZ000001", "SH600519")


def gone_worker() -> str:
    """The worker tag of a process that has exited (and been reaped): its pid names no process now."""
    child = multiprocessing.get_context("spawn").Process(target=int)
    child.start()
    child.join()
    return f"{socket.gethostname()}:{child.pid}:123456"


def started_run(instance: DagsterInstance, worker: str | None, **tags: str) -> DagsterRun:
    run = DagsterRun(
        job_name="precompute_update_job",
        status=DagsterRunStatus.STARTED,
        tags={**tags, **({WORKER_TAG: worker} if worker else {})},
    )
    instance.add_run(run)
    return run


def failure_message(instance: DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    return records[-1].event_log_entry.dagster_event.message if records else ""


def test_the_worker_tag_names_this_process():
    host, pid, started = worker_tag().rsplit(":", 2)
    assert host == socket.gethostname() and int(pid) == multiprocessing.current_process().pid
    assert started == process_start(int(pid)) != ""


def test_dagsters_run_monitoring_fails_a_run_whose_worker_is_gone_and_only_that_one():
    """deploy/dagster.yaml's run launcher and run_monitoring settings, through Dagster's own monitor."""
    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["poll_interval_seconds"] <= 60
    overrides = {key: config[key] for key in ("run_launcher", "run_monitoring")}
    with instance_for_test(overrides=overrides) as instance:
        assert instance.run_monitoring_enabled and instance.run_launcher.supports_check_run_worker_health
        dead = started_run(instance, gone_worker())
        alive = started_run(instance, worker_tag())
        elsewhere = started_run(instance, "another-host:4242:1")
        unknown = started_run(instance, None)  # launched elsewhere, no pid known: never judged
        for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
            monitor_started_run(instance, None, record, logging.getLogger("test"))
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert "the run's process is gone" in failure_message(instance, dead.run_id)
        assert f"pid {dead.tags[WORKER_TAG].split(':')[1]}" in failure_message(instance, dead.run_id)
        for run in (alive, elsewhere, unknown):
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        assert died(instance, instance.get_run_by_id(dead.run_id))


def test_make_runs_reaper_marks_dead_runs_failed_and_tells_them_from_failed_ones():
    instance = DagsterInstance.ephemeral()
    dead, alive = started_run(instance, gone_worker()), started_run(instance, worker_tag())
    failed = started_run(instance, worker_tag())
    instance.report_run_failed(failed, "a step failed")
    assert [run_id for run_id, _ in mark_dead_runs(instance)] == [dead.run_id]
    assert mark_dead_runs(instance) == []  # once
    assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED
    assert died(instance, instance.get_run_by_id(dead.run_id))
    assert not died(instance, instance.get_run_by_id(failed.run_id))


def test_a_killed_worker_left_a_zombie_is_dead():
    """A worker killed with its parent is reparented to pid 1; in a container whose pid 1 does not reap
    (CI's), it stays a zombie, which `kill(pid, 0)` still finds."""
    parent = subprocess.Popen(
        ["bash", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, start_new_session=True, text=True
    )
    worker = int(parent.stdout.readline())
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    stopped = time.monotonic() + 10
    while time.monotonic() < stopped and os.path.exists(f"/proc/{worker}") and _state(worker) not in ("Z", "X"):
        time.sleep(0.05)
    instance = DagsterInstance.ephemeral()
    dead = started_run(instance, f"{socket.gethostname()}:{worker}:{process_start(worker) or '1'}")
    assert [run_id for run_id, _ in mark_dead_runs(instance)] == [dead.run_id]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def tick(instance, resources, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    return parquet_input_sensor.evaluate_tick(context)


def test_a_dead_run_no_longer_holds_its_bucket_and_the_bucket_is_requested_again(tmp_path):
    from conftest import build_store

    parquet = copy_inputs(CODES, tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    copy_inputs(["SZ000538"], parquet)  # a new listing makes its bucket stale
    bucket = bucket_of("SZ000538", 4)
    instance = DagsterInstance.ephemeral()

    # a run of that bucket whose process is gone: marked failed at the tick, and the bucket is requested
    dead = started_run(instance, gone_worker(), **{"dagster/partition": bucket})
    first = tick(instance, resources, None)
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    (request,) = first.run_requests
    assert request.partition_key == bucket

    # the requested run dies too: the same state is requested once more, under a new key
    retry = started_run(instance, gone_worker(), **{"dagster/partition": bucket})
    second = tick(instance, resources, first.cursor)
    (again,) = second.run_requests
    assert again.partition_key == bucket and again.run_key == f"{request.run_key}:after-{retry.run_id}"
    assert tick(instance, resources, second.cursor).run_requests == []

    # a run that failed by itself is not requested again for the same state (it would fail again)
    failed = started_run(instance, worker_tag(), **{"dagster/partition": bucket})
    instance.report_run_failed(failed, "a step failed")
    assert tick(instance, resources, second.cursor).run_requests == []
