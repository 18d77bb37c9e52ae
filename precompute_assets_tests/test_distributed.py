"""The same asset graph on Celery workers (issue 9): real processes, real data, value-for-value equality.

The test starts `redis-server` on a free loopback port and two Celery workers (`deploy/celery/worker.sh`,
each its own process group), builds a store from real stocks through Dagster runs whose executor is
chosen by `PRECOMPUTE_EXECUTOR=celery` (calendar, one run per bucket, manifest), and compares every
file of every stock with a single-machine build. Then it SIGKILLs one worker in the middle of a build
and checks that the build completes on the other with the same store. Everything it starts is stopped
by process group, also when a test fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import active_children, get_context
from multiprocessing.pool import Pool
from pathlib import Path

import pytest
from conftest import FAST_CODES, build_store, copy_inputs

from precompute_assets.build.buckets import bucket_keys
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import stored_codes

ROOT = Path(__file__).resolve().parents[1]
WORKER_SH = ROOT / "deploy" / "celery" / "worker.sh"
BATCHES = 4
# The lost-worker build needs steps that last long enough to be killed in: a few more real stocks.
MORE_CODES = ("SH600036", "SH600276", "SH600887", "SZ000333", "SZ000858", "SZ002415", "SH601166", "SH600030")
LONG_STEPS = ("qlib_stats", "alpha158")  # the steps worth killing a worker in: seconds, not tenths
BUILD_TIMEOUT = 180  # a build that waits longer has lost a step: fail instead of hanging
VISIBILITY_TIMEOUT = 20  # seconds before Redis hands a lost worker's step to another worker (test only)


def distributed_job(name: str):
    """Reconstructor the workers import: the project's assets and jobs with the executor of the environment.

    `precompute_assets.definitions` gets the same `executor=executor_from_env()`; the test builds its own
    `Definitions` so that it does not depend on that wiring.
    """
    from dagster import Definitions

    from precompute_assets.defs.executors import executor_from_env
    from precompute_assets.defs.precompute import PRECOMPUTE_ASSETS
    from precompute_assets.defs.precompute.jobs import JOBS
    from precompute_assets.defs.resources import PrecomputeSettings

    defs = Definitions(
        assets=PRECOMPUTE_ASSETS,
        jobs=JOBS,
        resources={"precompute": PrecomputeSettings.from_env()},
        executor=executor_from_env(),
    )
    return defs.resolve_job_def(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """redis-server and Celery workers, each in its own process group; `stop()` ends every one."""

    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_redis(self) -> str:
        port = free_port()
        self._spawn(
            "redis",
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
            cwd=self.folder,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{port}/0"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not answer on port {port}: {self.log('redis')}")

    def start_worker(self, name: str) -> None:
        self._spawn(name, ["bash", str(WORKER_SH), "--hostname", f"{name}@%h", "--concurrency", "1"], cwd=ROOT)

    def wait_ready(self, names: list[str], timeout: float = 90) -> None:
        from celery import Celery

        app = Celery(broker=self.env["PRECOMPUTE_CELERY_BROKER"])
        deadline = time.monotonic() + timeout
        expected = set(names)
        try:
            while time.monotonic() < deadline:
                for name in names:
                    if self.processes[name].poll() is not None:
                        raise RuntimeError(f"worker {name} exited: {self.log(name)}")
                replies = app.control.ping(timeout=1.0)
                if expected <= {node.split("@")[0] for reply in replies for node in reply}:
                    return
            raise RuntimeError(f"workers not ready: {[self.log(n) for n in names]}")
        finally:
            app.close()

    def kill(self, name: str) -> None:
        """SIGKILL a whole worker (its main process and its pool), as when its machine dies."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)  # also any pool process left behind by its parent
            process.wait(timeout=30)

    def _spawn(self, name: str, args: list[str], cwd: Path) -> None:
        with open(self.folder / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                args,
                cwd=cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the test process dies without its teardown (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        message = "redis-server not installed (apt-get install redis-server; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI's machine must have it: a skip there would hide a broken install
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("cluster")
    tests = str(Path(__file__).resolve().parent)
    cluster = Cluster(folder)
    cluster.env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([tests, str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PRECOMPUTE_BATCHES": str(BATCHES),
        "PRECOMPUTE_EXECUTOR": "celery",
        "PRECOMPUTE_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "DAGSTER_HOME": str(folder / "dagster_home"),
    }
    (folder / "dagster_home").mkdir()
    try:
        cluster.env["PRECOMPUTE_CELERY_BROKER"] = cluster.start_redis()
        cluster.start_worker("a")
        cluster.start_worker("b")
        cluster.wait_ready(["a", "b"])
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def instance(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module):
    """A persistent instance on disk the workers open from its ref; the orchestrator uses the cluster's env."""
    from dagster import DagsterInstance

    for key in ("PRECOMPUTE_EXECUTOR", "PRECOMPUTE_CELERY_BROKER", "PRECOMPUTE_CELERY_VISIBILITY_TIMEOUT"):
        monkeypatch_module.setenv(key, cluster.env[key])
    folder = tmp_path_factory.mktemp("dagster_instance")
    with DagsterInstance.local_temp(str(folder), overrides={"telemetry": {"enabled": False}}) as instance:
        yield instance


@pytest.fixture(scope="module")
def launcher(instance) -> Iterator[Pool]:
    """Two run processes (spawned after the environment is set), reused by every build of the module;
    terminated at the end, so a run that waits forever on a lost step cannot outlive the test."""
    pool = get_context("spawn").Pool(processes=2)
    try:
        yield pool
    finally:
        pool.close()  # idle run processes exit at once; one still waiting on a lost step is killed
        deadline = time.monotonic() + 20
        for process in active_children():
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        pool.join()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Real input and its single-machine store (the core pipeline, no Dagster, no workers)."""
    root = tmp_path_factory.mktemp("reference")
    parquet = copy_inputs(FAST_CODES + MORE_CODES, root / "parquet")
    build_store(parquet, root / "qlib_data", batches=BATCHES)
    return parquet, root / "qlib_data"


def execute_run(instance_ref, name: str, partition: str | None, run_config: dict) -> str:
    """One Dagster run, in a process of its own as the run launcher would start it; returns its id."""
    from dagster import DagsterInstance, build_reconstructable_job, execute_job

    warnings.filterwarnings("ignore")  # dagster-celery re-registers its task per step (DuplicateTaskNameWarning)
    job = build_reconstructable_job(distributed_job.__module__, distributed_job.__name__, (name,))
    tags = {"dagster/partition": partition, "precompute/bucket": partition} if partition else {}
    with (
        DagsterInstance.from_ref(instance_ref) as instance,
        execute_job(job, instance, run_config=run_config, tags=tags) as result,
    ):
        return result.run_id


def run_build(instance, launcher: Pool, parquet: Path, store: Path) -> list[str]:
    """calendar -> one run per bucket (two at a time, as the run queue allows) -> manifest; the run ids.

    Each run orchestrates from its own process and sends its steps to the Celery workers.
    """
    run_config = {
        "resources": {"precompute": {"config": {"parquet_data_path": str(parquet), "qlib_data_path": str(store)}}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    run = partial(execute_run, instance.get_ref(), run_config=run_config)
    deadline = time.monotonic() + BUILD_TIMEOUT

    def wait(pending):
        return pending.get(timeout=max(1.0, deadline - time.monotonic()))

    run_ids = [wait(launcher.apply_async(run, ("calendar_job", None)))]
    run_ids += wait(launcher.map_async(partial(run, "precompute_bucket_job"), bucket_keys(BATCHES), chunksize=1))
    run_ids.append(wait(launcher.apply_async(run, ("manifest_job", None))))
    return run_ids


def assert_runs_succeeded(instance, run_ids: list[str]) -> None:
    from dagster import DagsterRunStatus

    runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
    assert [(r.job_name, r.tags.get("dagster/partition"), r.status) for r in runs] == [
        (r.job_name, r.tags.get("dagster/partition"), DagsterRunStatus.SUCCESS) for r in runs
    ]


def step_workers(instance, run_ids: list[str]) -> list[tuple[str, str]]:
    """(step key, worker name) for every time a worker began a step, in order (name: `a` of `a@host`)."""
    from dagster import DagsterEventType

    found = []
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            event = record.event_log_entry.dagster_event
            worker = event.engine_event_data.metadata.get("Celery worker") if event else None
            if worker is not None:
                found.append((event.step_key, worker.value.split("@")[0]))
    return found


def finished_steps(instance, run_id: str) -> set[str]:
    from dagster import DagsterEventType

    kinds = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    return {r.event_log_entry.step_key for r in instance.get_records_for_run(run_id, of_type=kinds).records}


def assert_same_store(actual: Path, expected: Path) -> None:
    """Every field file of every stock byte for byte (so value for value), and the shared files."""
    a, e = StoreLayout(actual), StoreLayout(expected)
    assert stored_codes(a) == stored_codes(e) == sorted(FAST_CODES + MORE_CODES)
    for code in stored_codes(e):
        names = sorted(p.name for p in e.stock_dir(code).glob("*.bin"))
        assert sorted(p.name for p in a.stock_dir(code).glob("*.bin")) == names, code
        assert {"close.day.bin", "rsi14.day.bin", "alpha_158.day.bin"} <= set(names), code
        for name in names:
            assert (a.stock_dir(code) / name).read_bytes() == (e.stock_dir(code) / name).read_bytes(), f"{code} {name}"
    assert a.calendar_path.read_text() == e.calendar_path.read_text()
    assert a.instruments_path.read_text() == e.instruments_path.read_text()


def test_executor_is_chosen_by_one_setting():
    """No services needed: the setting picks the executor, the Celery settings agree on both sides."""
    from dagster import in_process_executor, multiprocess_executor

    from precompute_assets.defs.executors import celery_executor_config, celery_settings, executor_from_env

    assert executor_from_env({}) is in_process_executor
    assert executor_from_env({"PRECOMPUTE_EXECUTOR": "multiprocess"}) is multiprocess_executor
    assert executor_from_env({"PRECOMPUTE_EXECUTOR": "Celery"}).name == "celery"
    with pytest.raises(ValueError, match="PRECOMPUTE_EXECUTOR"):
        executor_from_env({"PRECOMPUTE_EXECUTOR": "dask"})
    env = {"PRECOMPUTE_CELERY_BROKER": "redis://user:secret@broker:6379/1"}
    config = celery_executor_config(env)
    assert config["broker"] == config["backend"] == {"env": "PRECOMPUTE_CELERY_BROKER"}  # no password in the UI
    worker = celery_settings(env)
    assert worker["broker_url"] == "redis://user:secret@broker:6379/1"
    assert {k: v for k, v in worker.items() if k not in ("broker_url", "result_backend")} == config["config_source"]
    assert worker["task_acks_late"] and worker["task_reject_on_worker_lost"]
    assert worker["task_time_limit"] < worker["broker_transport_options"]["visibility_timeout"]
    assert celery_settings({})["broker_url"] == "redis://127.0.0.1:6379/0"


@pytest.mark.e2e
def test_distributed_build_equals_single_machine_build(cluster, instance, launcher, inputs, tmp_path):
    parquet, reference = inputs
    store = tmp_path / "qlib_data"
    started = time.perf_counter()
    run_ids = run_build(instance, launcher, parquet, store)
    print(f"distributed build: {time.perf_counter() - started:.1f}s")
    assert_runs_succeeded(instance, run_ids)
    assert_same_store(store, reference)
    workers = step_workers(instance, run_ids)
    assert {w for _, w in workers} == {"a", "b"}, "both workers ran steps"


@pytest.mark.e2e
def test_worker_killed_mid_build_loses_nothing(cluster, instance, launcher, inputs, tmp_path):
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    parquet, reference = inputs
    store = tmp_path / "qlib_data"
    victim = "a"
    killed: dict[str, object] = {}
    stop = threading.Event()

    def kill_when_busy() -> None:
        """SIGKILL worker a as soon as it begins an indicator step (the longest ones) of a bucket run."""
        watcher = DagsterInstance.from_ref(instance.get_ref())
        while not stop.is_set():
            for run in watcher.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
                if "dagster/partition" not in run.tags:
                    continue
                done = finished_steps(watcher, run.run_id)
                for step, worker in step_workers(watcher, [run.run_id]):
                    if worker == victim and step in LONG_STEPS and step not in done:
                        cluster.kill("a")
                        killed.update(step=step, run_id=run.run_id, bucket=run.tags["dagster/partition"])
                        return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_when_busy, daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        run_ids = run_build(instance, launcher, parquet, store)
    finally:
        stop.set()
        thread.join(timeout=30)
    print(f"build with a lost worker: {time.perf_counter() - started:.1f}s, killed during {killed}")
    assert killed, "worker a never ran a bucket step"
    assert cluster.processes["a"].poll() is not None
    starts = [w for s, w in step_workers(instance, [killed["run_id"]]) if s == killed["step"]]
    assert starts[0] == victim and starts[-1] == "b", starts  # redelivered to the survivor
    assert_runs_succeeded(instance, run_ids)
    assert_same_store(store, reference)
