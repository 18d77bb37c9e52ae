"""Distributed benchmark: the same build with two local Celery workers next to the single-machine build.

    .venv/bin/python bench/distributed.py                          # 200 stocks x 5 years, 8 buckets
    .venv/bin/python bench/distributed.py --stocks 500 --years 10 --batches 16

The market comes from the project's generator. Both builds take `make run`'s path through Dagster runs
on a temporary instance: the calendar run, one run per bucket (two at a time, each in its own process,
as the run queue launches them), the manifest run. The only difference is `PRECOMPUTE_EXECUTOR`:
`in_process` runs every step inside its run's process; `celery` sends each step through a local
`redis-server` to two workers started with `deploy/celery/worker.sh` (one pool process each, as this
machine has two cores). Both stores are checked equal file for file; then it prints a table and
writes JSON (`--json`, default bench/results/distributed.json). No assertions on speed: on one
machine the workers share the same two cores, so the ratio measures Celery's overhead, and the
per-bucket step seconds are what docs/deploy.md's sizing formula takes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKER_SH = ROOT / "deploy" / "celery" / "worker.sh"
RUN_PROCESSES = 2  # bucket runs at a time, as deploy/dagster.yaml's run queue allows


def job_for(name: str):
    """Reconstructor the run processes and the workers import: the project's graph, executor from env."""
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


def execute_run(instance_ref, name: str, partition: str | None, run_config: dict) -> str:
    from dagster import DagsterInstance, build_reconstructable_job, execute_job

    warnings.filterwarnings("ignore")
    job = build_reconstructable_job("bench.distributed", "job_for", (name,))
    tags = {"dagster/partition": partition, "precompute/bucket": partition} if partition else {}
    with (
        DagsterInstance.from_ref(instance_ref) as instance,
        execute_job(job, instance, run_config=run_config, tags=tags) as result,
    ):
        if not result.success:
            raise RuntimeError(f"{name} {partition or ''} failed (run {result.run_id})")
        return result.run_id


def build(instance, buckets: list[str], parquet: Path, store: Path) -> tuple[float, list[str]]:
    """calendar -> bucket runs (two processes) -> manifest, with the executor of the environment.

    The paths travel in the run config, so the workers need no per-build environment.
    """
    run_config = {
        "resources": {"precompute": {"config": {"parquet_data_path": str(parquet), "qlib_data_path": str(store)}}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=RUN_PROCESSES, mp_context=get_context("spawn")) as pool:
        run = partial(execute_run, instance.get_ref(), run_config=run_config)
        run_ids = [pool.submit(run, "calendar_job", None).result()]
        run_ids += list(pool.map(partial(run, "precompute_bucket_job"), buckets))
        run_ids.append(pool.submit(run, "manifest_job", None).result())
    return time.perf_counter() - started, run_ids


def instance_at(folder: Path):
    """A persistent instance in `folder` that the run processes and the workers open from its ref."""
    from dagster import DagsterInstance

    folder.mkdir(parents=True, exist_ok=True)
    return DagsterInstance.local_temp(str(folder), overrides={"telemetry": {"enabled": False}})


def bucket_figures(instance, run_ids: list[str]) -> dict:
    """Per bucket run: wall seconds, and step seconds (what one worker core spends on the bucket)."""
    walls, steps, families = [], [], []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        if "dagster/partition" not in run.tags:
            continue
        record = instance.get_run_record_by_id(run_id)
        walls.append(record.end_time - record.start_time)
        stats = instance.get_run_step_stats(run_id)
        steps.append(sum(s.end_time - s.start_time for s in stats if s.start_time and s.end_time))
        families.append(max((s.end_time - s.start_time for s in stats if s.step_key not in NOT_FAMILY), default=0))
    return {
        "bucket_runs": len(walls),
        "bucket_run_seconds_mean": round(statistics.mean(walls), 2),
        "bucket_run_seconds_max": round(max(walls), 2),
        "bucket_step_seconds_mean": round(statistics.mean(steps), 2),
        "bucket_step_seconds_total": round(sum(steps), 1),
        "longest_family_step_seconds_mean": round(statistics.mean(families), 2),
    }


NOT_FAMILY = {"stock_bars", "qlib_store"}


def steps_by_worker(instance, run_ids: list[str]) -> dict[str, int]:
    from dagster import DagsterEventType

    counts: dict[str, int] = {}
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            event = record.event_log_entry.dagster_event
            worker = event.engine_event_data.metadata.get("Celery worker") if event else None
            if worker is not None:
                counts[worker.value] = counts.get(worker.value, 0) + 1
    return counts


class LocalCluster:
    """redis-server on a free loopback port and Celery workers, each in its own process group."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env, self.processes = folder, env, {}

    def start(self, workers: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.env["PRECOMPUTE_CELERY_BROKER"] = f"redis://127.0.0.1:{port}/0"
        redis = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        self._spawn("redis", redis)
        self._wait(lambda: _redis_ping(port), "redis-server")
        names = [f"w{i}" for i in range(workers)]
        for name in names:
            self._spawn(name, ["bash", str(WORKER_SH), "--hostname", f"{name}@%h", "--concurrency", "1"])
        self._wait(lambda: self._ready(names), "celery workers")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
            for process in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=15)

    def _ready(self, names: list[str]) -> bool:
        from celery import Celery

        app = Celery(broker=self.env["PRECOMPUTE_CELERY_BROKER"])
        try:
            nodes = {node.split("@")[0] for reply in app.control.ping(timeout=1.0) for node in reply}
        finally:
            app.close()
        return set(names) <= nodes

    def _wait(self, ready, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes.values()):
                break
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not start; logs in {self.folder}")

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.folder / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def same_store(a: Path, b: Path) -> bool:
    from precompute_assets.store.layout import StoreLayout
    from precompute_assets.store.stock_commit import stored_codes

    left, right = StoreLayout(a), StoreLayout(b)
    if stored_codes(left) != stored_codes(right):
        return False
    for code in stored_codes(right):
        names = sorted(p.name for p in right.stock_dir(code).glob("*.bin"))
        if sorted(p.name for p in left.stock_dir(code).glob("*.bin")) != names:
            return False
        for name in names:
            if (left.stock_dir(code) / name).read_bytes() != (right.stock_dir(code) / name).read_bytes():
                return False
    return left.calendar_path.read_text() == right.calendar_path.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=200)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "distributed.json")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found: apt-get install redis-server")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    work.mkdir(parents=True, exist_ok=True)
    # Every process (this one, the run processes, the workers) must agree on the buckets and paths.
    # Every process (this one, the run processes, the workers) must agree on the buckets.
    os.environ.update(
        {
            "PRECOMPUTE_BATCHES": str(args.batches),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHON": sys.executable,
        }
    )
    import pyarrow.parquet as pq

    from precompute_assets.build.buckets import bucket_keys
    from precompute_assets.input.synthetic import generate_market, trading_days

    end_year, parquet = 2024, work / "parquet"
    start, end = f"{end_year - args.years + 1}-01-01", f"{end_year}-12-31"
    generate_market(parquet, args.stocks, start, end, seed=2026)
    days = len(trading_days(start, end))
    stock_days = sum(pq.read_metadata(path).num_rows for path in parquet.glob("*.parquet"))
    buckets = bucket_keys(args.batches)
    results: dict[str, dict] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "market": {
            "stocks": args.stocks,
            "trading_days": days,
            "stock_days": stock_days,
            "buckets": args.batches,
            "stocks_per_bucket": round(args.stocks / args.batches, 1),
        },
    }

    os.environ["PRECOMPUTE_EXECUTOR"] = "in_process"
    with instance_at(work / "single" / "dagster") as instance:
        seconds, run_ids = build(instance, buckets, parquet, work / "single" / "qlib_data")
        results["single_machine"] = {"executor": "in_process", "seconds": round(seconds, 1)}
        results["single_machine"].update(bucket_figures(instance, run_ids))

    (work / "cluster").mkdir(exist_ok=True)
    cluster = LocalCluster(work / "cluster", dict(os.environ))
    try:
        cluster.start(args.workers)
        os.environ["PRECOMPUTE_EXECUTOR"] = "celery"
        os.environ["PRECOMPUTE_CELERY_BROKER"] = cluster.env["PRECOMPUTE_CELERY_BROKER"]
        with instance_at(work / "celery" / "dagster") as instance:
            seconds, run_ids = build(instance, buckets, parquet, work / "celery" / "qlib_data")
            results["distributed"] = {"executor": "celery", "workers": args.workers, "seconds": round(seconds, 1)}
            results["distributed"].update(bucket_figures(instance, run_ids))
            results["distributed"]["steps_by_worker"] = steps_by_worker(instance, run_ids)
    finally:
        cluster.stop()

    single, distributed = results["single_machine"], results["distributed"]
    results["comparison"] = {
        "distributed_over_single_seconds": round(distributed["seconds"] / single["seconds"], 3),
        "same_store": same_store(work / "celery" / "qlib_data", work / "single" / "qlib_data"),
        # docs/deploy.md's c: worker-process seconds per stock-day, as the workers measured their steps
        "step_seconds_per_stock_day": round(distributed["bucket_step_seconds_total"] / stock_days, 6),
        "single_machine_step_seconds_per_stock_day": round(single["bucket_step_seconds_total"] / stock_days, 6),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nJSON: {args.json}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict) -> None:
    single, distributed = results["single_machine"], results["distributed"]
    rows = [
        ("build seconds", single["seconds"], distributed["seconds"]),
        ("bucket run seconds (mean)", single["bucket_run_seconds_mean"], distributed["bucket_run_seconds_mean"]),
        ("bucket step seconds (mean)", single["bucket_step_seconds_mean"], distributed["bucket_step_seconds_mean"]),
        ("longest family step (mean)", single["longest_family_step_seconds_mean"],
         distributed["longest_family_step_seconds_mean"]),
    ]  # fmt: skip
    market = results["market"]
    print(f"\n{market['stocks']} stocks x {market['trading_days']} days, {market['buckets']} buckets")
    print(f"{'':<30} {'single machine':>15} {'2 celery workers':>17}")
    for label, left, right in rows:
        print(f"{label:<30} {left:>15} {right:>17}")
    print(f"ratio distributed / single: {results['comparison']['distributed_over_single_seconds']}")
    print(f"same store: {results['comparison']['same_store']}; steps by worker: {distributed['steps_by_worker']}")


if __name__ == "__main__":
    main()
