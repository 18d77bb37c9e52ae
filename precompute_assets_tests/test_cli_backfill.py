"""The README's `dagster` commands: an in-process partition, and a backfill the daemon executes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_inputs

from precompute_assets.buckets import bucket_of
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))
CODES = ("SH600000", "SZ000001", "SH600519", "SZ000792")
BUCKET_ASSETS = "stock_bars,qlib_stats,alpha158,technical,fundamental,qlib_store"


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    parquet = copy_inputs(CODES, tmp_path / "parquet")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PARQUET_DATA_PATH": str(parquet),
        "QLIB_DATA_PATH": str(tmp_path / "qlib_data"),
        "PRECOMPUTE_BATCHES": "4",
    }


def dagster(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([DAGSTER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_materialize_one_bucket_in_process(env):
    bucket = bucket_of("SZ000792", 4)
    dagster(env, "asset", "materialize", "-m", "precompute_assets.definitions", "--select", "trading_calendar")
    dagster(
        env,
        "asset",
        "materialize",
        "-m",
        "precompute_assets.definitions",
        "--select",
        BUCKET_ASSETS,
        "--partition",
        bucket,
    )
    reader = StoreReader(StoreLayout(Path(env["QLIB_DATA_PATH"])))
    assert "alpha_158" in reader.fields("SZ000792")


@pytest.mark.e2e
def test_backfill_of_a_bucket_range_runs_through_the_daemon(env):
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    dagster(
        env,
        "job",
        "backfill",
        "-m",
        "precompute_assets.definitions",
        "-j",
        "precompute_update_job",
        "--from",
        "b00",
        "--to",
        "b03",
        "--noprompt",
    )
    daemon = subprocess.Popen(
        [DAEMON, "run", "-m", "precompute_assets.definitions"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        os.environ["DAGSTER_HOME"], previous = env["DAGSTER_HOME"], os.environ.get("DAGSTER_HOME")
        instance = DagsterInstance.get()
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline:
            # the sensor (running by default) may add its own runs for the same stale buckets
            runs = [
                r
                for r in instance.get_runs(RunsFilter(job_name="precompute_update_job"))
                if "dagster/backfill" in r.tags
            ]
            if len(runs) == 4 and all(r.is_finished for r in runs):
                break
            time.sleep(2)
        assert len(runs) == 4 and {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["b00", "b01", "b02", "b03"]
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous
    reader = StoreReader(StoreLayout(Path(env["QLIB_DATA_PATH"])))
    assert all(reader.has_stock(code) for code in CODES)
