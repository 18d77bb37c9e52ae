"""Backup, restore, cleanup and the disk-space guard on a real store, through the core and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precompute_assets.cli.operations import main
from precompute_assets.operations.backup import BackupError, create_backup, list_backups, prune_backups
from precompute_assets.operations.cleanup import cleanup
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.restore import RestoreError, kept_stores, restore_backup
from precompute_assets.settings import Settings
from precompute_assets.store.calendar import read_calendar, write_calendar
from precompute_assets.store.disk_space import InsufficientDiskSpace, ensure_free_space, stock_write_bytes
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.lock import bucket_lock, lock_dir
from precompute_assets.store.reader import StoreReader
from precompute_assets.store.stock_commit import commit_stock, stored_codes
from precompute_assets.validation.integrity import validate_integrity

CODES = ("SH600000", "SH600519", "SZ000001", "SZ000538", "SZ000792", "SZ302132")
BATCHES = 2
DAY = 86400


@pytest.fixture
def store(built: Settings, tmp_path: Path) -> Settings:
    """A private copy of the built store and its intermediates (the input is shared and read-only)."""
    settings = Settings(
        parquet_data_path=built.parquet_data_path, qlib_data_path=tmp_path / "qlib_data", batches=BATCHES
    )
    shutil.copytree(built.qlib_data_path, settings.qlib_data_path, symlinks=True)
    shutil.copytree(built.work_path, settings.work_path)
    return settings


@pytest.fixture
def config(store: Settings) -> OperationsConfig:
    return OperationsConfig(backup_path=store.qlib_data_path.parent / "backups", keep_backups=5)


def snapshot(root: Path) -> dict[str, pd.DataFrame]:
    """Every stored field of every stock, as a reader sees them."""
    reader = StoreReader(StoreLayout(root))
    return {code: reader.read(code, reader.fields(code)) for code in stored_codes(reader.layout)}


def assert_same_values(root: Path, expected: dict[str, pd.DataFrame]) -> None:
    found = snapshot(root)
    assert sorted(found) == sorted(expected)
    for code, frame in expected.items():
        pd.testing.assert_frame_equal(found[code], frame)


def test_backup_then_restore_brings_back_every_value_exactly(store, config):
    original = snapshot(store.qlib_data_path)
    info = create_backup(store, config)
    assert info.stocks == len(CODES) and info.bytes > 0 and info.data_version == 1
    assert_same_values(info.path, original)  # a backup is a plain, readable Qlib directory
    assert not any(p.is_symlink() for p in (info.path / "features").iterdir())

    layout = StoreLayout(store.qlib_data_path)  # then the store goes wrong in every way
    layout.bin_path("SH600000", "close").write_bytes(b"\x00" * 12)
    layout.stock_dir("SZ000792").unlink()
    write_calendar(layout, read_calendar(layout)[:-5])

    report = restore_backup(store, config, info.name)
    assert report.stocks == len(CODES) and report.source == info.path
    assert_same_values(store.qlib_data_path, original)
    assert validate_integrity(store, None).passed
    assert report.previous_store in kept_stores(store)
    assert StoreLayout(report.previous_store).bin_path("SH600000", "close").stat().st_size == 12  # kept as it was
    assert (layout.root / "data_version.json").read_text() == (info.path / "data_version.json").read_text()

    link = layout.stock_dir("SH600519")  # the store keeps its shape: commits work on a restored store
    assert link.is_symlink() and link.resolve().parent.parent == layout.versions_dir
    values = np.fromfile(layout.bin_path("SH600519", "close"), dtype="<f4")
    meta = json.loads(layout.stock_meta_path("SH600519").read_text())
    commit_stock(layout, "SH600519", int(values[0]), {"close": values[1:]}, {"rows": meta["rows"]})
    assert np.array_equal(np.fromfile(layout.bin_path("SH600519", "close"), dtype="<f4"), values, equal_nan=True)


def test_a_damaged_store_is_not_backed_up_and_no_partial_backup_is_left(store, config):
    layout = StoreLayout(store.qlib_data_path)
    path = layout.bin_path("SZ000538", "ema")
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(BackupError, match=r"SZ000538 is damaged in the store .*ema.*re-materialize bucket b0"):
        create_backup(store, config)
    assert list(config.backup_path.iterdir()) == []


def test_a_damaged_backup_is_not_restored_and_the_store_stays(store, config):
    original = snapshot(store.qlib_data_path)
    info = create_backup(store, config)
    (info.path / "features" / "sh600000" / "rsi14.day.bin").write_bytes(b"\x00" * 8)
    with pytest.raises(RestoreError, match="is damaged, choose another one: SH600000 rsi14"):
        restore_backup(store, config, info.name)
    with pytest.raises(BackupError, match="no backup 'nope'"):
        restore_backup(store, config, "nope")
    assert_same_values(store.qlib_data_path, original)
    assert kept_stores(store) == [] and not list(store.qlib_data_path.parent.glob(".*restoring*"))


def test_only_the_newest_backups_are_kept(store, config):
    config = OperationsConfig(backup_path=config.backup_path, keep_backups=1)
    names = [create_backup(store, config).name for _ in range(2)]
    assert names[0] != names[1]  # two backups in the same second get distinct names
    assert prune_backups(config) == [config.backup_path / names[0]]
    assert [b.name for b in list_backups(config)] == names[1:]


def test_cleanup_removes_only_what_is_past_its_retention(store, config):
    layout = StoreLayout(store.qlib_data_path)
    config = OperationsConfig(config.backup_path, keep_backups=1, retention_days=7, grace_seconds=3600)
    old, now = time.time() - 30 * DAY, time.time()
    for _ in range(2):
        create_backup(store, config)
    code_dir = layout.versions_dir / "sz000001"
    current = layout.stock_dir("SZ000001").resolve()
    runs_of_b03 = store.work_path / "b03"  # an active bucket: one folder per run, an old one and today's
    for run in ("old-run", "young-run"):
        touch_dir(runs_of_b03 / run)
    expected = {
        "old stock version": [age(shutil.copytree(current, code_dir / "1-old"), old)],
        "unfinished stock version": [age(shutil.copytree(current, code_dir / "2-crash.tmp"), old)],
        "temporary file": [age(touch(layout.root / "calendars" / ".day.txt.abc.tmp"), old)],
        "old backup": [list_backups(config)[0].path],
        "replaced store": [touch_dir(layout.root.parent / f".{layout.root.name}.before-restore-20200101T000000Z")],
        "intermediates": [age_tree(store.work_path / "b00", old), age_tree(runs_of_b03 / "old-run", old)],
        "stale lock": [write_lock(layout.root, "bucket-b07", host="elsewhere", mtime=old)],
    }
    kept = [
        age(shutil.copytree(current, code_dir / "3-young.tmp"), now),  # may be a write in progress
        age(shutil.copytree(current, code_dir / "0-previous"), now - DAY),  # the previous version stays
        touch(layout.root / ".data_version.json.young.tmp"),
        touch_dir(layout.root.parent / f".{layout.root.name}.before-restore-{time.strftime('%Y%m%dT%H%M%SZ')}"),
        runs_of_b03 / "young-run",
        age_tree(store.work_path / "b01", old),  # its bucket is being written right now
    ]
    original = snapshot(store.qlib_data_path)
    with bucket_lock(layout.root, "b01"):
        dry = cleanup(store, config, dry_run=True)
        assert sorted(map(str, (r.path for r in dry.removed))) == sorted(str(p) for ps in expected.values() for p in ps)
        assert all(p.exists() for ps in expected.values() for p in ps)
        report = cleanup(store, config)
    assert report.counts() == {kind: len(paths) for kind, paths in expected.items()}
    assert report.bytes_freed > 0 and "removed 8 item(s)" in report.describe()
    assert not any(p.exists() for ps in expected.values() for p in ps)
    assert all(p.exists() for p in kept)
    assert_same_values(store.qlib_data_path, original)
    assert validate_integrity(store, None).passed
    assert [r.path for r in cleanup(store, config).removed] == [kept[-1]]  # once its bucket is released
    restore_backup(store, config, "latest")  # it referenced the removed backup's files: they were handed over
    assert_same_values(store.qlib_data_path, original)


def test_the_disk_guard_refuses_before_writing_anything(store, config, monkeypatch):
    original = snapshot(store.qlib_data_path)
    info = create_backup(store, config)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(10**9, 10**9 - 2048, 2048))
    with pytest.raises(InsufficientDiskSpace, match=r"not enough disk space to back up .* only 2\.0 KB is free"):
        create_backup(store, config)
    with pytest.raises(InsufficientDiskSpace, match=r"not enough disk space to restore .*Nothing was written"):
        restore_backup(store, config, info.name)
    assert [b.name for b in list_backups(config)] == [info.name] and not list(config.backup_path.glob(".*"))
    assert_same_values(store.qlib_data_path, original) and kept_stores(store) == []
    assert not (store.qlib_data_path / ".locks" / "store.lock").exists()
    ensure_free_space(store.qlib_data_path, 1000, "write a small file")
    with pytest.raises(InsufficientDiskSpace, match="to write bucket b00"):
        ensure_free_space(store.qlib_data_path, 6 * stock_write_bytes(4000, 260), "write bucket b00")


def test_the_command_line(store, monkeypatch, capsys):
    monkeypatch.setenv("QLIB_DATA_PATH", str(store.qlib_data_path))
    monkeypatch.setenv("PARQUET_DATA_PATH", str(store.parquet_data_path))
    monkeypatch.delenv("PRECOMPUTE_BACKUP_PATH", raising=False)
    assert main(["backup", "--keep", "1"]) == 0
    assert "6 stocks" in capsys.readouterr().out
    assert main(["list"]) == 0
    name = list_backups(OperationsConfig.from_env(store))[0].name
    assert f"{name}  6 stocks" in capsys.readouterr().out
    assert main(["restore", "latest"]) == 0
    assert "the previous store is kept at" in capsys.readouterr().out
    assert main(["cleanup", "--dry-run"]) == 0
    assert "would remove 0 item(s)" in capsys.readouterr().out
    assert main(["restore", "missing"]) == 1
    assert f"error: no backup 'missing' in {store.qlib_data_path.parent / 'backups'}" in capsys.readouterr().err


def age(path: Path, mtime: float) -> Path:
    os.utime(path, (mtime, mtime))
    return path


def age_tree(path: Path, mtime: float) -> Path:
    for item in [*path.rglob("*"), path]:
        os.utime(item, (mtime, mtime))
    return path


def touch(path: Path) -> Path:
    path.write_text("leftover")
    return path


def touch_dir(path: Path) -> Path:
    (path / "features").mkdir(parents=True)
    return path


def write_lock(root: Path, name: str, host: str, mtime: float) -> Path:
    path = lock_dir(root) / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": host, "pid": 1, "started": "2020-01-01T00:00:00+00:00", "purpose": "a crashed run", "token": "x"}
    path.write_text(json.dumps(owner))
    return age(path, mtime)
