"""Fault injection: a writer killed mid-commit, and locks against a second writer on one host or many.

The writers run in spawned processes that import this module, so it imports the heavy pipeline (Qlib)
only inside the test that needs it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from precompute_assets.build.buckets import bucket_of
from precompute_assets.indicators.registry import FAMILIES
from precompute_assets.operations.cleanup import cleanup
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.settings import Settings
from precompute_assets.store import stock_commit
from precompute_assets.store.bin_file import read_bin
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.lock import LockHeldError, StoreLock, bucket_lock, lock_dir, stale_reason, store_lock
from precompute_assets.store.reader import StoreReader
from precompute_assets.validation.integrity import validate_integrity

CODES = ("SH600000", "SH600519", "SZ000001", "SZ000538", "SZ000792", "SZ302132")
BATCHES = 2
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def store(built: Settings, tmp_path: Path) -> Settings:
    settings = Settings(
        parquet_data_path=built.parquet_data_path, qlib_data_path=tmp_path / "qlib_data", batches=BATCHES
    )
    shutil.copytree(built.qlib_data_path, settings.qlib_data_path, symlinks=True)
    return settings


def commit_new_versions(root: str, codes: list[str], victim: str, kill_point: str, paused) -> None:
    """In a child: commit a new version (every value + 1) of each stock in turn; freeze at `kill_point` of `victim`.

    The parent SIGKILLs the child once it is frozen, so the kill lands exactly there.
    """
    layout = StoreLayout(Path(root))

    def freeze() -> None:
        paused.set()
        time.sleep(120)

    writing = {"code": None, "files": 0}
    real_encode, real_link, real_drop = stock_commit.encode, stock_commit._point_link, stock_commit._drop_old_versions

    def encode(start, values):
        writing["files"] += 1
        if kill_point == "writing files" and writing["code"] == victim and writing["files"] == 100:
            freeze()
        return real_encode(start, values)

    def point_link(layout_, code, version):
        if kill_point == "before the link swap" and code == victim:
            freeze()
        real_link(layout_, code, version)

    def drop_old_versions(code_dir, keep):
        if kill_point == "after the link swap" and code_dir.name == victim.lower():
            freeze()
        real_drop(code_dir, keep)

    stock_commit.encode, stock_commit._point_link, stock_commit._drop_old_versions = (
        encode,
        point_link,
        drop_old_versions,
    )
    for code in codes:
        meta = stock_commit.read_stock_meta(layout, code)
        columns = {field: read_bin(layout.bin_path(code, field))[1] + 1 for field in meta["files"]}
        new_meta = {k: v for k, v in meta.items() if k not in ("files", "start_index", "code")}
        writing.update(code=code, files=0)
        stock_commit.commit_stock(
            layout, code, meta["start_index"], columns, {**new_meta, "input_fingerprint": "a run that was killed"}
        )


@pytest.mark.parametrize(
    ("kill_point", "victim_is_new"),
    [("writing files", False), ("before the link swap", False), ("after the link swap", True)],
)
def test_a_writer_killed_mid_commit_leaves_every_stock_old_or_new_and_the_next_run_completes_it(
    store, kill_point, victim_is_new
):
    from precompute_assets.build import pipeline

    bucket = bucket_of("SH600000", BATCHES)
    codes = [c for c in CODES if bucket_of(c, BATCHES) == bucket]
    reader = StoreReader(StoreLayout(store.qlib_data_path))
    old = {code: reader.read(code, reader.fields(code)) for code in CODES}

    paused = SPAWN.Event()
    child = SPAWN.Process(
        target=commit_new_versions, args=(str(store.qlib_data_path), codes, codes[1], kill_point, paused)
    )
    child.start()
    assert paused.wait(60), "the writer never reached the kill point"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL

    reader = StoreReader(StoreLayout(store.qlib_data_path))
    for index, code in enumerate(CODES):
        now = reader.read(code, reader.fields(code))
        is_new = code in codes and (codes.index(code) < 1 or (code == codes[1] and victim_is_new))
        expected = old[code] + 1 if is_new else old[code]
        pd.testing.assert_frame_equal(now, expected, obj=f"{code} ({index})")  # whole: every field one version
    assert validate_integrity(store, None).passed  # each stock's files are the ones its commit recorded

    pipeline.build_bars(store, bucket)
    for family in FAMILIES:
        pipeline.build_family(store, bucket, family)
    pipeline.write_bucket(store, bucket, FAMILIES)
    cleanup(store, OperationsConfig(store.qlib_data_path.parent / "backups", grace_seconds=0))

    reader = StoreReader(StoreLayout(store.qlib_data_path))
    for code in CODES:
        pd.testing.assert_frame_equal(reader.read(code, reader.fields(code)), old[code], obj=code)
    assert not list(StoreLayout(store.qlib_data_path).versions_dir.glob("*/*.tmp"))
    assert validate_integrity(store, None).passed


def hold_lock(root: str, bucket: str, acquired, release) -> None:
    with bucket_lock(Path(root), bucket, purpose="run 42 writing"):
        acquired.set()
        release.wait(60)


def test_a_second_writer_is_refused_with_the_holders_name(tmp_path):
    acquired, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=hold_lock, args=(str(tmp_path), "b03", acquired, release))
    holder.start()
    try:
        assert acquired.wait(60)
        with pytest.raises(LockHeldError) as refused:
            bucket_lock(tmp_path, "b03").acquire()
        message = str(refused.value)
        assert f"bucket-b03 in {tmp_path} is locked by host {socket.gethostname()} pid {holder.pid}" in message
        assert "(run 42 writing)" in message and "a second writer is refused" in message
        with bucket_lock(tmp_path, "b04"):  # other buckets are free
            pass
    finally:
        release.set()
        holder.join()
    with bucket_lock(tmp_path, "b03") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def test_a_dead_or_silent_holder_loses_its_lock_and_a_live_one_on_another_host_keeps_it(tmp_path):
    gone = SPAWN.Process(target=time.sleep, args=(0,))
    gone.start()
    gone.join()
    path = write_owner(tmp_path, "bucket-b01", socket.gethostname(), gone.pid)
    assert "is gone" in stale_reason(path)
    with bucket_lock(tmp_path, "b01"):
        pass

    path = write_owner(tmp_path, "bucket-b02", "another-host", 4242)
    with pytest.raises(LockHeldError, match="locked by host another-host pid 4242"):
        bucket_lock(tmp_path, "b02").acquire()
    os.utime(path, (time.time() - 700, time.time() - 700))  # no heartbeat for longer than stale_after
    assert "no heartbeat" in stale_reason(path)
    with bucket_lock(tmp_path, "b02"):
        pass

    path.write_text("")  # created, owner not written yet: a writer may be in the middle of it
    with pytest.raises(LockHeldError, match="not written its name yet"):
        bucket_lock(tmp_path, "b02").acquire()


def test_a_held_lock_keeps_beating(tmp_path):
    with StoreLock(tmp_path, "bucket-b05", stale_after=0.5) as lock:
        os.utime(lock.path, (time.time() - 10, time.time() - 10))
        time.sleep(0.4)
        assert stale_reason(lock.path, stale_after=0.5) is None


def test_bucket_writers_and_a_restore_exclude_each_other(tmp_path):
    with bucket_lock(tmp_path, "b00"), pytest.raises(LockHeldError, match=r"bucket-b00 .* by .*writing bucket b00"):
        store_lock(tmp_path, purpose="restoring 20260101T000000Z").acquire()
    restoring = store_lock(tmp_path, purpose="restoring 20260101T000000Z")
    with restoring, pytest.raises(LockHeldError, match=r"store in .* locked by .*\(restoring 20260101T000000Z\)"):
        bucket_lock(tmp_path, "b00").acquire()
    assert list(lock_dir(tmp_path).iterdir()) == []


def write_owner(root: Path, name: str, host: str, pid: int) -> Path:
    path = lock_dir(root) / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": host, "pid": pid, "started": "2026-01-01T00:00:00+00:00", "purpose": "", "token": "t"}
    path.write_text(json.dumps(owner))
    return path


def test_two_runs_of_one_bucket_at_once_append_each_new_day_once(tmp_path):
    """Two runs plan the same daily update of a bucket, each in its own work folder; the first to take
    the bucket's lock appends, the other waits for it, finds its plans outdated and has nothing to do."""
    import threading

    from conftest import FAST_CODES, build_store, run_pipeline
    from make_run_harness import assert_store_equals, write_input

    from precompute_assets.build import pipeline

    codes = FAST_CODES[:4]
    final = tmp_path / "final"
    write_input(codes, final)
    clean = build_store(final, tmp_path / "clean", batches=1)
    dates = sorted(pd.read_parquet(final / f"{codes[1]}.parquet")["date"])
    parquet = tmp_path / "parquet"
    write_input(codes, parquet, end=pd.Timestamp(dates[-21]))
    settings = Settings(parquet, tmp_path / "qlib_data", batches=1)
    run_pipeline(settings)
    shutil.rmtree(parquet)
    shutil.copytree(final, parquet)

    pipeline.build_calendar(settings)
    for run in ("first", "second"):  # both plan before either writes
        pipeline.build_bars(settings, "b00", run=run)
        for family in FAMILIES:
            pipeline.build_family(settings, "b00", family, run=run)
    acquired, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=hold_lock, args=(str(settings.qlib_data_path), "b00", acquired, release))
    holder.start()
    assert acquired.wait(60)
    reports = {}
    second = threading.Thread(
        target=lambda: reports.update(second=pipeline.write_bucket(settings, "b00", FAMILIES, run="second"))
    )
    second.start()
    time.sleep(1.5)  # the second writer is waiting for the lock meanwhile
    release.set()
    holder.join()
    second.join(120)
    first = pipeline.write_bucket(settings, "b00", FAMILIES, run="first")
    pipeline.build_manifest(settings)

    assert reports["second"].metadata["lock_waited_seconds"] >= 1.0
    assert reports["second"].metadata["stocks_updated"] == len(codes)
    assert first.metadata["stocks_written_by_another_run"] == len(codes)
    assert first.metadata["stocks_written"] == 0 and first.metadata["rows_written"] == 0
    assert_store_equals(settings.qlib_data_path, clean.qlib_data_path, parquet)
