"""Backups in proportion to the change: a build and three daily updates on real data, each backed up;
every kept backup restores to the store exactly as it was, they take little more disk than the store,
pruning never breaks a newer one, and a crash mid-backup leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import CSI300, require_refdata, run_pipeline

from precompute_assets.operations import backup
from precompute_assets.operations.backup import (
    BackupInfo,
    create_backup,
    kept_backups_disk_bytes,
    list_backups,
    prune_backups,
)
from precompute_assets.operations.backup_area import BackupArea
from precompute_assets.operations.backup_increments import StockRecord
from precompute_assets.operations.config import OperationsConfig
from precompute_assets.operations.restore import RestoreError, restore_backup
from precompute_assets.operations.store_copy import NOT_COPIED, is_temporary
from precompute_assets.settings import Settings
from precompute_assets.store.disk_space import disk_bytes
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json

CUT = pd.Timestamp("2021-03-31")
BATCHES = 2
DAYS = 3


def write_cut(codes: list[str], folder: Path, end: pd.Timestamp) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for code in codes:
        frame = pd.read_parquet(CSI300 / f"{code}.parquet")
        frame[frame["date"] <= end].to_parquet(folder / f"{code}.parquet")


def store_copy(root: Path, target: Path) -> Path:
    """The store as a reader sees it, copied aside: stock links resolved, old versions and locks left out."""
    ignore = shutil.ignore_patterns(*NOT_COPIED - {"features"}, ".*.tmp", ".*.lnk")
    shutil.copytree(root, target, symlinks=False, ignore=ignore)
    return target


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (links followed) by relative path; old versions, locks and temporaries left out."""
    files = {}
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if d not in (".stock_versions", ".locks")]
        for name in names:
            if not is_temporary(name):
                path = Path(directory) / name
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


def store_disk_bytes(root: Path) -> int:
    """What the store's current content takes on disk: its shared files and each stock's current version."""
    layout = StoreLayout(root)
    shared = [p for p in root.iterdir() if p.name not in NOT_COPIED and not is_temporary(p.name)]
    return disk_bytes([*shared, *(p.resolve() for p in layout.features_dir.iterdir())])


def stored_files(area: Path) -> set[Path]:
    """The field files and packs the backups hold (their own or inherited from pruned ones)."""
    return {p for p in area.rglob("*") if p.name.endswith((".bin", ".pack")) or p.suffix == ".base"}


def referenced_files(area: Path) -> set[Path]:
    """The files the complete backups' records read, located as a restore locates them."""
    located = BackupArea(area)
    return {
        located.stock_folder(holder, folder.name) / name
        for info in list_backups(OperationsConfig(area))
        for folder in (info.path / "features").iterdir()
        for holder, name in StockRecord.read(folder).files()
    }


def assert_same_files(found: dict[str, bytes], expected: dict[str, bytes], what: str) -> None:
    assert sorted(found) == sorted(expected), what
    different = [name for name in expected if found[name] != expected[name]]
    assert not different, f"{what}: {different[:5]} differ"


def build_and_back_up(
    tmp_path: Path, codes: list[str], after: Callable[[int, BackupInfo], None] = lambda day, info: None
) -> tuple[Settings, OperationsConfig, dict[str, Path], pd.DatetimeIndex]:
    """The build, then one new day for every stock, `DAYS` times, each backed up (and handed to
    `after`); the settings, the backups' config, a copy of the store at each backup by its name, and
    the input's calendar."""
    calendar = pd.DatetimeIndex(sorted(pd.read_parquet(CSI300 / f"{codes[0]}.parquet")["date"]))
    settings = Settings(tmp_path / "parquet", tmp_path / "qlib_data", BATCHES)
    config = OperationsConfig(backup_path=tmp_path / "backups", keep_backups=5)
    copies = {}
    for day in range(DAYS + 1):
        write_cut(codes, settings.parquet_data_path, calendar[calendar.get_loc(CUT) + day])
        run_pipeline(settings)
        info = create_backup(settings, config)
        copies[info.name] = store_copy(settings.qlib_data_path, tmp_path / "copies" / info.name)
        after(day, info)
    return settings, config, copies, calendar


def test_each_kept_backup_of_a_build_and_three_updates_restores_the_store_as_it_was(tmp_path, monkeypatch):
    require_refdata()
    codes = sorted(p.stem for p in CSI300.glob("*.parquet"))[2:6]
    settings, config, copies, calendar = build_and_back_up(tmp_path, codes)
    assert prune_backups(config) == []
    backups = list_backups(config)
    assert [b.name for b in backups] == list(copies) and all(b.stocks == len(codes) for b in backups)
    assert backups[0].previous is None and [b.previous for b in backups[1:]] == [b.name for b in backups[:-1]]
    layout = StoreLayout(settings.qlib_data_path)
    files = sum(len(read_json(layout.stock_meta_path(code))["files"]) for code in codes)
    assert read_json(backups[0].path / "backup.json")["fields"]["copied"] == files
    for later in backups[1:]:  # an update's backup stores the appended values, a small share of the full one
        assert read_json(later.path / "backup.json")["fields"] == {"linked": 0, "appended": files, "copied": 0}
        for code in codes:  # in three files per stock: the rest is referenced where earlier backups hold it
            assert sorted(os.listdir(later.path / "features" / code.lower())) == [
                "_backup.json",
                "_stock.json",
                f"tail-{later.name}.pack",
            ]
        assert later.new_bytes < backups[0].new_bytes / 20, later
        # taken from the store step's record of what it appended, not read from the store again
        assert read_json(later.path / "backup.json")["appended_from_record"] == files

    store_bytes = store_disk_bytes(settings.qlib_data_path)
    kept = kept_backups_disk_bytes(config)
    assert kept <= 1.5 * store_bytes, f"{len(backups)} backups take {kept} bytes, the store {store_bytes}"

    # A crash mid-backup (the third stock raises) leaves no partial backup and changes no kept one.
    real = backup.backup_stock

    def crash_on_third(version_dir, *args, **kwargs):  # by its code: the stocks are backed up in parallel
        if version_dir.parent.name == codes[2].lower():
            raise RuntimeError("injected crash")
        return real(version_dir, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(backup, "backup_stock", crash_on_third)
        with pytest.raises(RuntimeError, match="injected crash"):
            create_backup(settings, config)
    assert sorted(p.name for p in config.backup_path.iterdir()) == sorted(copies)

    # One more update, then the value it appended to a file overwritten in place (same size): the
    # backup does not take that file's new bytes from the update's record, reads them, finds the
    # stock damaged and leaves nothing behind.
    write_cut(codes, settings.parquet_data_path, calendar[calendar.get_loc(CUT) + DAYS + 1])
    run_pipeline(settings)
    victim = layout.bin_path(codes[2], "close")
    victim.write_bytes(victim.read_bytes()[:-4] + bytes(4))
    with pytest.raises(backup.BackupError, match=f"{codes[2]} is damaged in the store .*close"):
        create_backup(settings, config)
    assert sorted(p.name for p in config.backup_path.iterdir()) == sorted(copies)

    for info in reversed(backups):
        restore_backup(settings, config, info.name)
        assert_same_files(tree(settings.qlib_data_path), tree(copies[info.name]), f"restored {info.name}")

    # Pruning the full backup (every later one shares its files) leaves the rest whole, and keeps only
    # the files they reference.
    pruned = prune_backups(OperationsConfig(config.backup_path, keep_backups=2))
    assert pruned == [b.path for b in backups[:2]]
    assert stored_files(config.backup_path) == referenced_files(config.backup_path)
    for info in list_backups(config):
        restore_backup(settings, config, info.name)
        assert_same_files(tree(settings.qlib_data_path), tree(copies[info.name]), f"restored {info.name}")

    # A flipped byte in an appended value of the newest backup is found before the store is touched.
    newest = list_backups(config)[-1]
    pack = sorted((newest.path / "features" / codes[1].lower()).glob("tail-*.pack"))[-1]
    data = bytearray(pack.read_bytes())
    data[-1] ^= 0x01
    pack.write_bytes(bytes(data))
    with pytest.raises(RestoreError, match=f"is damaged, choose another one: {codes[1]} "):
        restore_backup(settings, config, newest.name)
    assert_same_files(tree(settings.qlib_data_path), tree(copies[newest.name]), "the store after a refused restore")


def as_format_1(backup: Path) -> None:
    """Rewrite a backup as the previous release wrote it: every file it uses linked into its own stock
    folders (a base followed by appended values as `<field>.day.base`), a dict per field in the record."""
    area = BackupArea(backup.parent)
    for folder in (backup / "features").iterdir():
        record = StockRecord.read(folder)
        fields = {}
        for i, name in enumerate(record.fields):
            segments = [[p.name, int(p.offset[i]), int(p.length[i])] for p in record.packs if p.length[i]]
            base = f"{name}.day.base" if segments else f"{name}.day.bin"
            source = area.stock_folder(record.holder[i], folder.name) / record.base_file(i)
            if not (folder / base).exists():
                os.link(source, folder / base)
            fields[name] = {
                "size": int(record.size[i]),
                "crc": int(record.crc[i]),
                "base": base,
                "base_size": int(record.base_size[i]),
                "segments": segments,
                "ino": int(record.ino[i]),
                "mtime_ns": int(record.mtime_ns[i]),
            }
        for pack in record.packs:
            if not (folder / pack.name).exists():
                os.link(area.stock_folder(pack.holder, folder.name) / pack.name, folder / pack.name)
        (folder / "_backup.json").write_text(json.dumps({"version": record.version, "fields": fields}))
    meta = read_json(backup / "backup.json")
    del meta["holders"]
    (backup / "backup.json").write_text(json.dumps(meta))


def test_backups_of_the_previous_format_restore_and_the_next_backup_builds_on_them(tmp_path):
    require_refdata()
    codes = sorted(p.stem for p in CSI300.glob("*.parquet"))[6:8]
    settings, config, copies, _calendar = build_and_back_up(
        tmp_path, codes, lambda day, info: as_format_1(info.path) if day < DAYS else None
    )
    newest = list_backups(config)[-1]  # built on a format-1 backup: it appended to it, copied nothing
    assert read_json(newest.path / "backup.json")["fields"]["copied"] == 0
    pruned = prune_backups(OperationsConfig(config.backup_path, keep_backups=2))
    assert len(pruned) == 2
    assert stored_files(config.backup_path) == referenced_files(config.backup_path)
    for info in list_backups(config):
        restore_backup(settings, config, info.name)
        assert_same_files(tree(settings.qlib_data_path), tree(copies[info.name]), f"restored {info.name}")
