"""A range run and a single-bucket run of the same bucket at once.

The run coordinator's `dagster/partition` limit does not see range runs, so what keeps two writers of a
bucket apart is the store's bucket lock: the second writer waits for the first (and says so in its
run's log), both runs succeed, and the store equals a clean build of the same input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import build_store, copy_inputs
from test_operations import assert_same_values, snapshot

from precompute_assets.build.buckets import bucket_keys, bucket_of

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CODES = ("SH600000", "SZ000001", "SH600519", "SZ000792", "SZ000538")
BUCKET = bucket_of("SZ000792", 4)

# A run in this process (in-process executor) whose stock commits wait for the test's signal file, so
# that it holds the bucket lock until the other run is seen waiting for it.
RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import precompute_assets.build.pipeline as pipeline
    from precompute_assets.cli.make_run_driver import bucket_job, calendar_job, manifest_job, run_job

    buckets, release = tuple(filter(None, sys.argv[1].split(","))), sys.argv[2]
    if buckets == ("manifest",):
        sys.exit(0 if run_job(manifest_job) else 1)
    if release:
        real = pipeline.write_stock

        def held(*args, **kwargs):
            deadline = time.monotonic() + 900
            while not Path(release).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            return real(*args, **kwargs)

        pipeline.write_stock = held
    sys.exit(0 if run_job(bucket_job if buckets else calendar_job, buckets) else 1)
    """
)


def start(env: dict[str, str], buckets: tuple[str, ...], release: Path | None, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", RUN, ",".join(buckets), str(release or "")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def waiting_message(home: Path) -> str | None:
    """The range run's log line saying it waits for the bucket lock, once it is there."""
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(RunsFilter(tags={"dagster/asset_partition_range_start": "b00"})):
            for record in instance.get_records_for_run(run.run_id).records:
                message = record.event_log_entry.user_message or ""
                if f"bucket-{BUCKET}: waiting" in message:
                    return message
    return None


def test_a_range_run_waits_for_a_single_bucket_run_of_the_same_bucket(tmp_path):
    assert BUCKET in bucket_keys(4) and sum(bucket_of(c, 4) == BUCKET for c in CODES) >= 1
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    parquet = copy_inputs(CODES, tmp_path / "parquet")
    store = tmp_path / "qlib_data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PARQUET_DATA_PATH": str(parquet),
        "QLIB_DATA_PATH": str(store),
        "PRECOMPUTE_BATCHES": "4",
    }
    calendar = start(env, (), None, tmp_path / "calendar.log")
    assert calendar.wait(timeout=600) == 0, (tmp_path / "calendar.log").read_text()[-3000:]

    release = tmp_path / "release"
    single = start(env, (BUCKET,), release, tmp_path / "single.log")
    lock = store / ".locks" / f"bucket-{BUCKET}.lock"
    deadline = time.monotonic() + 600
    while not lock.exists():
        assert single.poll() is None, (tmp_path / "single.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the single-bucket run never took its bucket's lock"
        time.sleep(0.5)

    ranged = start(env, tuple(bucket_keys(4)), None, tmp_path / "range.log")
    try:
        deadline = time.monotonic() + 600
        while (message := waiting_message(home)) is None:
            assert ranged.poll() is None, (
                "the range run ended without waiting:\n" + (tmp_path / "range.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "the range run never reached the held bucket"
            time.sleep(1)
        assert "waiting up to" in message and "writing bucket" in message  # names the holder
        assert ranged.poll() is None  # still waiting while the lock is held
    finally:
        release.touch()
    assert single.wait(timeout=600) == 0, (tmp_path / "single.log").read_text()[-3000:]
    assert ranged.wait(timeout=600) == 0, (tmp_path / "range.log").read_text()[-3000:]
    assert not lock.exists()
    manifest = start(env, ("manifest",), None, tmp_path / "manifest.log")  # publishes the calendar
    assert manifest.wait(timeout=600) == 0, (tmp_path / "manifest.log").read_text()[-3000:]

    clean = build_store(copy_inputs(CODES, tmp_path / "clean_parquet"), tmp_path / "clean")
    assert_same_values(store, snapshot(clean.qlib_data_path))
