"""A stock in a backup as whole files plus the bytes appended since: backups in proportion to the change.

Each stock folder of a backup holds its `_stock.json`, a record (`_backup.json`) and, per field,
either the whole file (`<field>.day.bin`, exactly as in the store) or a base file (`<field>.day.base`)
followed by segments of small per-stock pack files (`tail-<backup>.pack`) with the values appended
since. Files a backup shares with the previous one are hard links to it: a backup never changes a
file once written, so pruning any backup leaves every other one whole, and an unchanged stock costs a
few links. A field is stored whole where it is new or was rewritten (a fresh build copies every
field whole, so its backup is a plain Qlib directory).

Trust without re-reading the store: a field that is the same file in the same stock version as at
the previous backup (inode, size, modification time) is linked; one that grew in place is the
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
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from precompute_assets.store.layout import BIN_SUFFIX, META_FILE
from precompute_assets.store.stock_commit import Appended

RECORD_FILE = "_backup.json"
BASE_SUFFIX = ".day.base"
PACK_PREFIX = "tail-"
PACK_SUFFIX = ".pack"
NEW_PACK = ""  # the pack this backup writes, before it has a name on disk
DEAD_SHARE = 0.5  # a pack whose live bytes fall below this share of its size is rewritten


class StockChanged(Exception):
    """The stock's version was replaced while it was read; read it again."""


@dataclass
class FieldEntry:
    """One field in a backup: a base file and segments `[pack, offset, length]`, plus the store file's
    identity when it was backed up (what lets the next backup trust it without reading it)."""

    size: int
    crc: int
    base: str
    base_size: int
    segments: list[list] = field(default_factory=list)
    ino: int = -1
    mtime_ns: int = -1

    def to_json(self) -> dict:
        return self.__dict__

    @classmethod
    def from_json(cls, data: dict) -> FieldEntry:
        return cls(**data)


@dataclass
class StockRecord:
    """A stock's `_backup.json`: the store version it came from and how each field is put together."""

    version: str
    fields: dict[str, FieldEntry]

    def write(self, folder: Path) -> None:
        data = {"version": self.version, "fields": {k: v.to_json() for k, v in self.fields.items()}}
        (folder / RECORD_FILE).write_text(json.dumps(data, separators=(",", ":")))

    @classmethod
    def read(cls, folder: Path) -> StockRecord | None:
        """The record of a stock folder, None for a plain one (a kept store, or a backup of an older format)."""
        try:
            data = json.loads((folder / RECORD_FILE).read_text())
        except FileNotFoundError:
            return None
        return cls(data["version"], {k: FieldEntry.from_json(v) for k, v in data["fields"].items()})


@dataclass
class StockBackup:
    """What backing up one stock wrote: bytes new on disk (links cost nothing) and how fields were stored."""

    bytes: int = 0
    """The stock's content (its files and `_stock.json`), as a restore writes it."""
    new_bytes: int = 0
    linked: int = 0
    appended: int = 0
    copied: int = 0
    fed: int = 0
    """Appended fields whose new bytes came from the store step's record, not from reading the file."""

    def add(self, other: StockBackup) -> None:
        """Count `other`'s bytes and fields in these (a backup's totals over its stocks)."""
        for key, value in other.__dict__.items():
            setattr(self, key, getattr(self, key) + value)


def backup_stock(
    version_dir: Path, target: Path, previous: Path | None, pack_name: str, appended: Appended | None = None
) -> StockBackup:
    """Back up the store's stock version `version_dir` into the new folder `target`, sharing what it can
    with the same stock's folder `previous` in the previous backup.

    `appended` is what the store step last appended to the stock (`build.appended`): a grown field
    whose file is still as that append left it takes the appended bytes from there, not from the file.

    Raises `StockChanged` when a file no longer matches the `_stock.json` read first (a commit replaced
    the version or a file meanwhile), `ValueError` naming the field when the store's file is damaged.
    """
    meta_bytes = (version_dir / META_FILE).read_bytes()
    meta = json.loads(meta_bytes)
    old_version, old = _previous_fields(previous)
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
    unlisted = sorted(set(stats) - {f"{name}{BIN_SUFFIX}" for name in meta["files"]})
    if unlisted:
        raise ValueError(f"{unlisted[0][: -len(BIN_SUFFIX)]}: bin file not recorded in {META_FILE}")
    written: set[str] = set()
    for name, (size, crc) in sorted(meta["files"].items()):
        file_name = f"{name}{BIN_SUFFIX}"
        stat = stats.get(file_name)
        if stat is None:
            raise ValueError(f"{name}: {file_name} is missing")
        if stat.st_size != size:  # extended by a crash mid-append, or by a run appending right now
            raise ValueError(f"{name}: recorded {size} bytes, found {stat.st_size}")
        path = f"{source}/{file_name}"
        prev = old.get(name)
        entry = None
        if prev is not None and size >= prev.size:
            same_file = same_version and stat.st_ino == prev.ino
            if size == prev.size and crc == prev.crc and same_file and stat.st_mtime_ns == prev.mtime_ns:
                entry = _carry(prev)
            elif same_file or (previous is not None and _same_prefix(path, str(previous), prev)):
                fed = appended.tail(name, prev.size, size, stat.st_mtime_ns) if same_file and appended else None
                if fed is not None and zlib.crc32(fed, prev.crc) != crc:
                    fed = None  # not the bytes `_stock.json` records: read what the file holds
                entry = _extend(path, prev, size, crc, new_pack, fed)
                result.fed += fed is not None
        if entry is None:
            data = _read_range(path, 0, size)
            if zlib.crc32(data) != crc:
                raise ValueError(f"{name}: {size} bytes, crc32 differs from the recorded one")
            _write(f"{folder}/{file_name}", data)
            written.add(file_name)
            result.new_bytes += size
            result.copied += 1
            entry = FieldEntry(size, crc, file_name, size)
        elif entry.size > prev.size:
            result.appended += 1
        else:
            result.linked += 1
        entry.ino, entry.mtime_ns = stat.st_ino, stat.st_mtime_ns
        fields[name] = entry
    _merge_packs(fields, previous, new_pack)
    pack_file = f"{PACK_PREFIX}{pack_name}{PACK_SUFFIX}"
    if new_pack:
        _write(f"{folder}/{pack_file}", new_pack)
        result.new_bytes += len(new_pack)
    earlier = str(previous)
    for entry in fields.values():
        entry.segments = [[pack_file if p == NEW_PACK else p, o, n] for p, o, n in entry.segments]
        _place_base(entry, earlier, folder, entry.base in written)
    for pack in sorted({p for e in fields.values() for p, _o, _n in e.segments} - {pack_file}):
        _link(f"{earlier}/{pack}", f"{folder}/{pack}")
    (target / META_FILE).write_bytes(meta_bytes)
    StockRecord(str(version_dir), fields).write(target)
    result.new_bytes += len(meta_bytes)
    result.bytes = sum(size for size, _crc in meta["files"].values()) + len(meta_bytes)
    if (version_dir / META_FILE).read_bytes() != meta_bytes:
        raise StockChanged(f"{version_dir.name} was updated while it was backed up")
    return result


def stock_contents(folder: Path) -> tuple[dict, dict[str, bytes]]:
    """A backed-up stock's `_stock.json` and each field file's bytes, put together from base and
    segments (a plain folder's files as they are)."""
    meta = json.loads((folder / META_FILE).read_text())
    record = StockRecord.read(folder)
    if record is None:
        files = {p.name[: -len(BIN_SUFFIX)]: p.read_bytes() for p in folder.iterdir() if p.name.endswith(BIN_SUFFIX)}
        return meta, files
    packs: dict[str, bytes] = {}
    files = {}
    for name, entry in record.fields.items():
        parts = [(folder / entry.base).read_bytes()]
        for pack, offset, length in entry.segments:
            if pack not in packs:
                packs[pack] = (folder / pack).read_bytes()
            parts.append(packs[pack][offset : offset + length])
        files[name] = b"".join(parts)
    return meta, files


def content_problems(meta: dict, files: dict[str, bytes]) -> list[str]:
    """Fields whose bytes do not have the size and crc32 `_stock.json` records."""
    problems = []
    for name, (size, crc) in sorted(meta.get("files", {}).items()):
        data = files.get(name)
        if data is None:
            problems.append(f"{name}: missing")
        elif len(data) != size:
            problems.append(f"{name}: recorded {size} bytes, found {len(data)}")
        elif zlib.crc32(data) != crc:
            problems.append(f"{name}: {size} bytes, crc32 differs from the recorded one")
    return problems


def _previous_fields(previous: Path | None) -> tuple[str | None, dict[str, FieldEntry]]:
    """The store version and fields of the stock in the previous backup; a plain folder's files count as
    whole files of unknown origin."""
    if previous is None or not previous.is_dir():
        return None, {}
    record = StockRecord.read(previous)
    if record is not None:
        return record.version, record.fields
    try:
        meta = json.loads((previous / META_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None, {}
    whole = {
        name: FieldEntry(size, crc, f"{name}{BIN_SUFFIX}", size)
        for name, (size, crc) in meta.get("files", {}).items()
        if (previous / f"{name}{BIN_SUFFIX}").is_file()
    }
    return None, whole


def _carry(prev: FieldEntry) -> FieldEntry:
    return FieldEntry(prev.size, prev.crc, prev.base, prev.base_size, [list(s) for s in prev.segments])


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
    entry.segments.append([NEW_PACK, len(new_pack), len(tail)])
    new_pack.extend(tail)
    return entry


def _same_prefix(path: str, previous: str, prev: FieldEntry) -> bool:
    """Whether the store's file starts with the previous backup's content (a different file: read both)."""
    return _read_range(path, 0, prev.size) == _field_bytes(previous, prev)


def _field_bytes(folder: str, entry: FieldEntry) -> bytes:
    parts = [_read_range(f"{folder}/{entry.base}", 0, entry.base_size)]
    parts += [_read_range(f"{folder}/{pack}", offset, length) for pack, offset, length in entry.segments]
    return b"".join(parts)


def _merge_packs(fields: dict[str, FieldEntry], previous: Path | None, new_pack: bytearray) -> None:
    """Fold older packs into the new one like a binary counter, and rewrite mostly dead ones; each
    field's bytes in the new pack end up in one run."""
    live: dict[str, int] = {}
    for entry in fields.values():
        for pack, _offset, length in entry.segments:
            live[pack] = live.get(pack, 0) + length
    older = sorted(p for p in live if p != NEW_PACK)
    if previous is None or not older:
        return
    fold = {p for p in older if live[p] < DEAD_SHARE * (previous / p).stat().st_size}
    total = live.get(NEW_PACK, 0)
    for pack in reversed(older):
        if live[pack] > total:
            break
        fold.add(pack)
        total += live[pack]
    if not fold:
        return
    sources = {NEW_PACK: bytes(new_pack), **{p: (previous / p).read_bytes() for p in fold}}
    out = bytearray()
    for entry in fields.values():
        segments: list[list] = []
        for pack, offset, length in entry.segments:
            if pack in sources:
                start = len(out)
                out.extend(sources[pack][offset : offset + length])
                pack, offset = NEW_PACK, start
            last = segments[-1] if segments else None
            if last is not None and last[0] == pack == NEW_PACK and last[1] + last[2] == offset:
                last[2] += length
            else:
                segments.append([pack, offset, length])
        entry.segments = segments
    new_pack[:] = out


def _place_base(entry: FieldEntry, previous: str, folder: str, written: bool) -> None:
    """Put the field's base file in `folder` (linked from the previous backup unless this one wrote it)
    under the name that says whether it is the whole file."""
    name = _field_of(entry.base)
    wanted = f"{name}{BIN_SUFFIX}" if not entry.segments else f"{name}{BASE_SUFFIX}"
    if written:
        if entry.base != wanted:
            os.rename(f"{folder}/{entry.base}", f"{folder}/{wanted}")
    else:
        _link(f"{previous}/{entry.base}", f"{folder}/{wanted}")
    entry.base = wanted


def _field_of(file_name: str) -> str:
    for suffix in (BIN_SUFFIX, BASE_SUFFIX):
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    raise ValueError(f"not a field file: {file_name}")


def _link(source: str, target: str) -> None:
    """A hard link to a file of the previous backup (a copy where the file system has none)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


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
