"""A stock in a backup as whole files plus the bytes appended since: backups in proportion to the change.

Each stock folder of a backup holds its `_stock.json`, a record (`_backup.json`) and only the files
this backup wrote: whole fields (`<field>.day.bin`, exactly as in the store) where a field is new or
was rewritten, and one small pack (`tail-<backup>.pack`) with the values appended since the previous
backup. Everything else is referenced where an earlier backup wrote it, never linked or copied: per
field, the record names the backup holding its base file and those holding its appended segments.
So a grown or unchanged stock costs three small files, not one link per field, and a fresh build's
backup, which writes every field whole, is a plain Qlib directory.

A backup never changes a file once written. Pruning one hands what newer backups still reference to
the oldest backup kept (`backup_area.BackupArea`), so every kept backup stays whole.

Trust without re-reading the store: a field that is the same file in the same stock version as at
the previous backup (inode, size, modification time) is carried over; one that grew in place is the
previous content plus the appended bytes, accepted only if the crc32 chained from the previous
checksum over those bytes equals the one `_stock.json` records. The appended bytes come from the
store step's record of them (`build.appended`) where the file is as that append left it (size and
modification time), else from the file. Anything else (a restored store, a rebuilt stock) is
compared byte for byte with the previous backup or copied whole and checked.

Packs are merged like a binary counter (a pack is folded into the newer ones once they hold as many
live bytes), so a stock keeps about log2(days) packs and the appended values are stored about once.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from precompute_assets.operations.backup_area import RECORD_FILE, BackupArea
from precompute_assets.store.layout import BIN_SUFFIX, META_FILE
from precompute_assets.store.stock_commit import Appended

FORMAT = 2
"""Records name each file's holder; format 1 (no `format` key) linked every file into the folder."""
PACK_PREFIX = "tail-"
PACK_SUFFIX = ".pack"
NEW_PACK = ""  # the pack this backup writes, before it has a name on disk
DEAD_SHARE = 0.5  # a pack whose live bytes fall below this share of its size is rewritten


class StockChanged(Exception):
    """The stock's version was replaced while it was read; read it again."""


@dataclass
class FieldEntry:
    """One field in a backup: a base file in the folder of backup `holder`, then segments
    `[pack, offset, length, holder]`, plus the store file's identity when it was backed up (what lets
    the next backup trust it without reading it)."""

    size: int
    crc: int
    base: str
    base_size: int
    holder: str = ""
    segments: list[list] = field(default_factory=list)
    ino: int = -1
    mtime_ns: int = -1

    def files(self) -> set[tuple[str, str]]:
        """The `(holder, file)` pairs the field's bytes are read from."""
        return {(self.holder, self.base), *((h, p) for p, _o, _n, h in self.segments)}


@dataclass
class StockRecord:
    """A stock's `_backup.json`: the store version it came from and how each field is put together."""

    version: str
    fields: dict[str, FieldEntry]

    def write(self, folder: Path) -> None:
        data = {"format": FORMAT, "version": self.version, "fields": {k: v.__dict__ for k, v in self.fields.items()}}
        (folder / RECORD_FILE).write_text(json.dumps(data, separators=(",", ":")))

    def files(self) -> set[tuple[str, str]]:
        return set().union(*(entry.files() for entry in self.fields.values()))

    @classmethod
    def read(cls, folder: Path) -> StockRecord | None:
        """The record of a backup's stock folder (`<backup>/features/<stock>`), None for a plain one
        (a kept store). A format-1 record's files are all in its own folder."""
        try:
            data = json.loads((folder / RECORD_FILE).read_text())
        except FileNotFoundError:
            return None
        fields = {k: FieldEntry(**v) for k, v in data["fields"].items()}
        if data.get("format", 1) == 1:
            for entry in fields.values():
                entry.holder = folder.parents[1].name
                entry.segments = [[*segment, entry.holder] for segment in entry.segments]
        return cls(data["version"], fields)


@dataclass
class StockBackup:
    """What backing up one stock wrote: bytes new on disk (references cost nothing) and how fields were stored."""

    bytes: int = 0
    """The stock's content (its files and `_stock.json`), as a restore writes it."""
    new_bytes: int = 0
    linked: int = 0
    appended: int = 0
    copied: int = 0
    fed: int = 0
    """Appended fields whose new bytes came from the store step's record, not from reading the file."""
    released: list[tuple[str, str]] = field(default_factory=list)
    """`(holder, file)` pairs the previous backup referenced for this stock and this one does not."""

    def add(self, other: StockBackup) -> None:
        """Count `other`'s bytes and fields in these (a backup's totals over its stocks)."""
        for key in ("bytes", "new_bytes", "linked", "appended", "copied", "fed"):
            setattr(self, key, getattr(self, key) + getattr(other, key))


def backup_stock(
    version_dir: Path,
    target: Path,
    area: BackupArea,
    previous: str | None,
    name: str,
    appended: Appended | None = None,
) -> StockBackup:
    """Back up the store's stock version `version_dir` into the new folder `target` of backup `name`,
    referencing what it can of the same stock in the previous backup (`previous`, in `area`).

    `appended` is what the store step last appended to the stock (`build.appended`): a grown field
    whose file is still as that append left it takes the appended bytes from there, not from the file.

    Raises `StockChanged` when a file no longer matches the `_stock.json` read first (a commit replaced
    the version or a file meanwhile), `ValueError` naming the field when the store's file is damaged.
    """
    stock = target.name
    meta_bytes = (version_dir / META_FILE).read_bytes()
    meta = json.loads(meta_bytes)
    old_version, old = _previous_fields(area, previous, stock)
    same_version = old_version == str(version_dir)
    if appended is not None and appended.directory != str(version_dir):
        appended = None
    result = StockBackup()
    target.mkdir(parents=True)
    source, folder = str(version_dir), str(target)
    fields: dict[str, FieldEntry] = {}
    new_pack = bytearray()
    with os.scandir(version_dir) as listing:
        stats = {e.name: e.stat() for e in listing if e.name.endswith(BIN_SUFFIX)}
    unlisted = sorted(set(stats) - {f"{field_name}{BIN_SUFFIX}" for field_name in meta["files"]})
    if unlisted:
        raise ValueError(f"{unlisted[0][: -len(BIN_SUFFIX)]}: bin file not recorded in {META_FILE}")
    for field_name, (size, crc) in sorted(meta["files"].items()):
        file_name = f"{field_name}{BIN_SUFFIX}"
        stat = stats.get(file_name)
        if stat is None:
            raise ValueError(f"{field_name}: {file_name} is missing")
        if stat.st_size != size:  # extended by a crash mid-append, or by a run appending right now
            raise ValueError(f"{field_name}: recorded {size} bytes, found {stat.st_size}")
        path = f"{source}/{file_name}"
        prev = old.get(field_name)
        entry = None
        if prev is not None and size >= prev.size:
            same_file = same_version and stat.st_ino == prev.ino
            if size == prev.size and crc == prev.crc and same_file and stat.st_mtime_ns == prev.mtime_ns:
                entry = _carry(prev)
            elif same_file or _same_prefix(path, area, stock, prev):
                fed = appended.tail(field_name, prev.size, size, stat.st_mtime_ns) if same_file and appended else None
                if fed is not None and zlib.crc32(fed, prev.crc) != crc:
                    fed = None  # not the bytes `_stock.json` records: read what the file holds
                entry = _extend(path, prev, size, crc, new_pack, fed)
                result.fed += fed is not None
        if entry is None:
            data = _read_range(path, 0, size)
            if zlib.crc32(data) != crc:
                raise ValueError(f"{field_name}: {size} bytes, crc32 differs from the recorded one")
            _write(f"{folder}/{file_name}", data)
            result.new_bytes += size
            result.copied += 1
            entry = FieldEntry(size, crc, file_name, size, name)
        elif entry.size > prev.size:
            result.appended += 1
        else:
            result.linked += 1
        entry.ino, entry.mtime_ns = stat.st_ino, stat.st_mtime_ns
        fields[field_name] = entry
    _merge_packs(fields, area, stock, new_pack)
    pack_file = f"{PACK_PREFIX}{name}{PACK_SUFFIX}"
    if new_pack:
        _write(f"{folder}/{pack_file}", new_pack)
        result.new_bytes += len(new_pack)
    for entry in fields.values():
        entry.segments = [[pack_file, o, n, name] if p == NEW_PACK else [p, o, n, h] for p, o, n, h in entry.segments]
    (target / META_FILE).write_bytes(meta_bytes)
    record = StockRecord(str(version_dir), fields)
    record.write(target)
    result.released = sorted(set().union(*(e.files() for e in old.values())) - record.files()) if old else []
    result.new_bytes += len(meta_bytes)
    result.bytes = sum(size for size, _crc in meta["files"].values()) + len(meta_bytes)
    if (version_dir / META_FILE).read_bytes() != meta_bytes:
        raise StockChanged(f"{version_dir.name} was updated while it was backed up")
    return result


def stock_contents(area: BackupArea, folder: Path) -> tuple[dict, dict[str, bytes]]:
    """A backed-up stock's `_stock.json` and each field file's bytes, put together from its base and
    segments wherever they are held (a plain folder's files as they are)."""
    meta = json.loads((folder / META_FILE).read_text())
    record = StockRecord.read(folder)
    if record is None:
        files = {p.name[: -len(BIN_SUFFIX)]: p.read_bytes() for p in folder.iterdir() if p.name.endswith(BIN_SUFFIX)}
        return meta, files
    packs: dict[tuple[str, str], bytes] = {}
    files = {}
    for field_name, entry in record.fields.items():
        parts = [(area.stock_folder(entry.holder, folder.name) / entry.base).read_bytes()]
        for pack, offset, length, holder in entry.segments:
            if (holder, pack) not in packs:
                packs[holder, pack] = (area.stock_folder(holder, folder.name) / pack).read_bytes()
            parts.append(packs[holder, pack][offset : offset + length])
        files[field_name] = b"".join(parts)
    return meta, files


def content_problems(meta: dict, files: dict[str, bytes]) -> list[str]:
    """Fields whose bytes do not have the size and crc32 `_stock.json` records."""
    problems = []
    for field_name, (size, crc) in sorted(meta.get("files", {}).items()):
        data = files.get(field_name)
        if data is None:
            problems.append(f"{field_name}: missing")
        elif len(data) != size:
            problems.append(f"{field_name}: recorded {size} bytes, found {len(data)}")
        elif zlib.crc32(data) != crc:
            problems.append(f"{field_name}: {size} bytes, crc32 differs from the recorded one")
    return problems


def _previous_fields(area: BackupArea, previous: str | None, stock: str) -> tuple[str | None, dict[str, FieldEntry]]:
    """The store version and fields of the stock in the previous backup; a plain folder's files count as
    whole files of unknown origin."""
    folder = area.stock_folder(previous, stock) if previous is not None else None
    if folder is None or not folder.is_dir():
        return None, {}
    record = StockRecord.read(folder)
    if record is not None:
        return record.version, record.fields
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None, {}
    whole = {
        field_name: FieldEntry(size, crc, f"{field_name}{BIN_SUFFIX}", size, previous)
        for field_name, (size, crc) in meta.get("files", {}).items()
        if (folder / f"{field_name}{BIN_SUFFIX}").is_file()
    }
    return None, whole


def _carry(prev: FieldEntry) -> FieldEntry:
    return FieldEntry(prev.size, prev.crc, prev.base, prev.base_size, prev.holder, [list(s) for s in prev.segments])


def _extend(
    path: str, prev: FieldEntry, size: int, crc: int, new_pack: bytearray, fed: bytes | None = None
) -> FieldEntry | None:
    """The previous content plus the bytes appended since (`fed` by the store step, else read from the
    file), if the recorded crc says that is what the file is."""
    if size == prev.size:
        return _carry(prev) if crc == prev.crc else None
    tail = fed if fed is not None else _read_range(path, prev.size, size - prev.size)
    if len(tail) != size - prev.size or zlib.crc32(tail, prev.crc) != crc:
        return None
    entry = _carry(prev)
    entry.size, entry.crc = size, crc
    entry.segments.append([NEW_PACK, len(new_pack), len(tail), NEW_PACK])
    new_pack.extend(tail)
    return entry


def _same_prefix(path: str, area: BackupArea, stock: str, prev: FieldEntry) -> bool:
    """Whether the store's file starts with the previous backup's content (a different file: read both)."""
    return _read_range(path, 0, prev.size) == _field_bytes(area, stock, prev)


def _field_bytes(area: BackupArea, stock: str, entry: FieldEntry) -> bytes:
    parts = [_read_range(f"{area.stock_folder(entry.holder, stock)}/{entry.base}", 0, entry.base_size)]
    parts += [
        _read_range(f"{area.stock_folder(holder, stock)}/{pack}", offset, length)
        for pack, offset, length, holder in entry.segments
    ]
    return b"".join(parts)


def _merge_packs(fields: dict[str, FieldEntry], area: BackupArea, stock: str, new_pack: bytearray) -> None:
    """Fold older packs into the new one like a binary counter, and rewrite mostly dead ones; each
    field's bytes in the new pack end up in one run."""
    live: dict[tuple[str, str], int] = {}
    for entry in fields.values():
        for pack, _offset, length, holder in entry.segments:
            live[holder, pack] = live.get((holder, pack), 0) + length
    older = sorted(p for p in live if p[1] != NEW_PACK)
    if not older:
        return
    paths = {p: area.stock_folder(p[0], stock) / p[1] for p in older}
    fold = {p for p in older if live[p] < DEAD_SHARE * paths[p].stat().st_size}
    total = live.get((NEW_PACK, NEW_PACK), 0)
    for pack in sorted(older, key=lambda p: p[1], reverse=True):  # newest first: names carry the backup's time
        if live[pack] > total:
            break
        fold.add(pack)
        total += live[pack]
    if not fold:
        return
    sources = {(NEW_PACK, NEW_PACK): bytes(new_pack), **{p: paths[p].read_bytes() for p in fold}}
    out = bytearray()
    for entry in fields.values():
        segments: list[list] = []
        for pack, offset, length, holder in entry.segments:
            if (holder, pack) in sources:
                start = len(out)
                out.extend(sources[holder, pack][offset : offset + length])
                pack, offset, holder = NEW_PACK, start, NEW_PACK
            last = segments[-1] if segments else None
            if last is not None and last[0] == pack == NEW_PACK and last[1] + last[2] == offset:
                last[2] += length
            else:
                segments.append([pack, offset, length, holder])
        entry.segments = segments
    new_pack[:] = out


def _read_range(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _write(path: str, data: bytes | bytearray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
