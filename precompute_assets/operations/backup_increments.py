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

The record is columnar (a list per attribute, one entry per field, and per pack one offset and length
per field), so a stock's few hundred fields are carried over, extended and checked as arrays. A
field's bytes are its base file's first `base_size` bytes, then its run in each pack, oldest first.
Packs are merged like a binary counter (the newest packs are folded into the new one while they hold
no more live bytes than it), so a stock keeps about log2(days) packs and the values are stored about
once.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from precompute_assets.operations.backup_area import RECORD_FILE, BackupArea
from precompute_assets.store.bin_file import open_for_reading
from precompute_assets.store.file_stats import MISSING, stat_files
from precompute_assets.store.layout import BIN_SUFFIX, META_FILE
from precompute_assets.store.stock_commit import Appended

FORMAT = 2
"""Columnar records naming each file's holder; format 1 (no `format` key) kept a dict per field and
linked every file it used into its own folder."""
PACK_PREFIX = "tail-"
PACK_SUFFIX = ".pack"
DEAD_SHARE = 0.5  # a pack whose live bytes fall below this share of its size is rewritten
INT_COLUMNS = ("size", "crc", "ino", "mtime_ns", "base_size")


class StockChanged(Exception):
    """The stock's version was replaced while it was read; read it again."""


@dataclass
class Pack:
    """One pack file of backup `holder` and each field's run in it (`length` 0: none)."""

    holder: str
    name: str
    offset: np.ndarray
    length: np.ndarray


@dataclass
class StockRecord:
    """A stock's `_backup.json`: the store version it came from and how each field is put together,
    one array entry per field (`fields`, sorted); `ino` and `mtime_ns` are the store file's identity
    when it was backed up (what lets the next backup trust it without reading it)."""

    version: str | None
    fields: list[str]
    size: np.ndarray
    crc: np.ndarray
    ino: np.ndarray
    mtime_ns: np.ndarray
    holder: list[str]
    """The backup whose folder holds each field's base file."""
    base: list[str]
    """Each base file's name ("" for `<field>.day.bin`)."""
    base_size: np.ndarray
    packs: list[Pack] = field(default_factory=list)

    def positions(self, names: list[str]) -> np.ndarray:
        """Where each of `names` is among this record's fields (-1: not there)."""
        if names == self.fields:
            return np.arange(len(names))
        index = {name: i for i, name in enumerate(self.fields)}
        return np.array([index.get(name, -1) for name in names], dtype=np.int64)

    def base_file(self, i: int) -> str:
        return self.base[i] or f"{self.fields[i]}{BIN_SUFFIX}"

    def files(self) -> set[tuple[str, str]]:
        """The `(holder, file)` pairs the fields' bytes are read from."""
        files = {(h, self.base_file(i)) for i, h in enumerate(self.holder)}
        return files | {(p.holder, p.name) for p in self.packs if p.length.any()}

    def write(self, folder: Path) -> None:
        data = {
            "format": FORMAT,
            "version": self.version,
            "fields": self.fields,
            **{key: getattr(self, key).tolist() for key in INT_COLUMNS},
            "holder": self.holder,
            "base": self.base,
            "packs": [[p.holder, p.name, p.offset.tolist(), p.length.tolist()] for p in self.packs],
        }
        (folder / RECORD_FILE).write_text(json.dumps(data, separators=(",", ":")))

    @classmethod
    def read(cls, folder: Path) -> StockRecord | None:
        """The record of a backup's stock folder (`<backup>/features/<stock>`), None for a plain one
        (a kept store)."""
        try:
            data = json.loads((folder / RECORD_FILE).read_text())
        except FileNotFoundError:
            return None
        if data.get("format", 1) == 1:
            return _from_format_1(data, folder.parents[1].name)
        ints = {key: _ints(data[key]) for key in INT_COLUMNS}
        packs = [
            Pack(h, n, np.asarray(o, dtype=np.int64), np.asarray(ln, dtype=np.int64)) for h, n, o, ln in data["packs"]
        ]
        return cls(data["version"], data["fields"], **ints, holder=data["holder"], base=data["base"], packs=packs)


def _from_format_1(data: dict, backup: str) -> StockRecord:
    """A format-1 record (a dict per field, segments `[pack, offset, length]`, every file linked into the
    backup's own folder) as columns; its packs are named by time, so sorted names are oldest first."""
    names = sorted(data["fields"])
    entries = [data["fields"][n] for n in names]
    ints = {key: _ints([e[key] for e in entries]) for key in INT_COLUMNS}
    packs = []
    for pack in sorted({s[0] for e in entries for s in e["segments"]}):
        offset, length = np.zeros(len(names), dtype=np.int64), np.zeros(len(names), dtype=np.int64)
        for i, entry in enumerate(entries):
            for name, at, count in entry["segments"]:
                if name == pack:
                    offset[i], length[i] = at, count
        packs.append(Pack(backup, pack, offset, length))
    base = [e["base"] if e["base"] != f"{n}{BIN_SUFFIX}" else "" for n, e in zip(names, entries, strict=True)]
    return StockRecord(data["version"], names, **ints, holder=[backup] * len(names), base=base, packs=packs)


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
    holders: set[str] = field(default_factory=set)
    """The backups whose files this one reads."""

    def add(self, other: StockBackup) -> None:
        """Count `other`'s bytes and fields in these (a backup's totals over its stocks)."""
        for key in ("bytes", "new_bytes", "linked", "appended", "copied", "fed"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        self.holders |= other.holders


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
    stock, source = target.name, str(version_dir)
    meta_bytes = (version_dir / META_FILE).read_bytes()
    recorded = json.loads(meta_bytes)["files"]
    names = sorted(recorded)
    size, crc = np.array([recorded[n] for n in names], dtype=np.int64).reshape(len(names), 2).T
    ino, mtime = _identities(version_dir, names, size)
    old = _previous_record(area, previous, stock)
    at = old.positions(names) if old is not None else np.full(len(names), -1)
    known = at >= 0
    o_size, o_crc = np.full(len(names), -1), np.full(len(names), -1)
    same_file = np.zeros(len(names), dtype=bool)
    carried = same_file.copy()
    if old is not None:
        o_size[known], o_crc[known] = old.size[at[known]], old.crc[at[known]]
        if old.version == source:
            same_file[known] = ino[known] == old.ino[at[known]]
            carried = same_file & (size == o_size) & (crc == o_crc)
            carried[known] &= mtime[known] == old.mtime_ns[at[known]]

    result = StockBackup()
    tails: dict[int, bytes] = {}
    copied: list[int] = []
    fed = _fed_tails(appended, source, names, o_size, o_crc, size, crc, mtime) if old is not None else {}
    for i in np.flatnonzero(~carried):
        path = f"{source}/{names[i]}{BIN_SUFFIX}"
        tail = None
        if known[i] and size[i] >= o_size[i] and (same_file[i] or _same_prefix(path, area, stock, old, at[i])):
            tail = fed.get(i)
            if tail is None:
                tail = _read_range(path, o_size[i], size[i] - o_size[i])
                if len(tail) != size[i] - o_size[i] or zlib.crc32(tail, o_crc[i]) != crc[i]:
                    tail = None
            else:
                result.fed += 1
        if tail is None:
            copied.append(i)
        elif len(tail):
            tails[i] = tail
    target.mkdir(parents=True)
    for i in copied:
        data = _read_range(f"{source}/{names[i]}{BIN_SUFFIX}", 0, size[i])
        if zlib.crc32(data) != crc[i]:
            raise ValueError(f"{names[i]}: {size[i]} bytes, crc32 differs from the recorded one")
        _write(f"{target}/{names[i]}{BIN_SUFFIX}", data)
        result.new_bytes += int(size[i])
    record = _record(source, names, size, crc, ino, mtime, old, at, copied, name)
    pack_bytes = _add_pack(record, old, at, copied, tails, area, stock, name)
    if pack_bytes:
        _write(f"{target}/{record.packs[-1].name}", pack_bytes)
        result.new_bytes += len(pack_bytes)
    (target / META_FILE).write_bytes(meta_bytes)
    record.write(target)
    result.copied, result.appended = len(copied), len(tails)
    result.linked = len(names) - result.copied - result.appended
    files = record.files()
    result.released = sorted(old.files() - files) if old is not None else []
    result.holders = {holder for holder, _file in files}
    result.new_bytes += len(meta_bytes)
    result.bytes = int(size.sum()) + len(meta_bytes)
    if (version_dir / META_FILE).read_bytes() != meta_bytes:
        raise StockChanged(f"{version_dir.name} was updated while it was backed up")
    return result


def _identities(version_dir: Path, names: list[str], size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each recorded field's file inode and modification time; raises `ValueError` for a missing or
    resized file. A `statx` by path (`file_stats`, one compiled pass), not a listing: the store step
    has just opened these files, so their names are in the kernel's cache while the folder's own
    blocks (a listing) are often read from disk again. A file `_stock.json` does not record is not
    part of the stock (the integrity check names it)."""
    found = stat_files([f"{version_dir}/{name}{BIN_SUFFIX}" for name in names])
    bad = np.flatnonzero(found.size != size)
    if bad.size:
        i = int(bad[0])
        if found.size[i] == MISSING:
            raise ValueError(f"{names[i]}: {names[i]}{BIN_SUFFIX} is missing")
        # extended by a crash mid-append, or by a run appending right now
        raise ValueError(f"{names[i]}: recorded {size[i]} bytes, found {found.size[i]}")
    return found.ino, found.mtime_ns


def _fed_tails(
    appended: Appended | None,
    source: str,
    names: list[str],
    o_size: np.ndarray,
    o_crc: np.ndarray,
    size: np.ndarray,
    crc: np.ndarray,
    mtime: np.ndarray,
) -> dict[int, bytes]:
    """The store step's appended bytes of each field whose file is as that append left it and whose
    crc32, chained from the previous backup's, is the one `_stock.json` records."""
    if appended is None or appended.directory != source:
        return {}
    fed = {}
    for i, name in enumerate(names):
        tail = appended.tail(name, int(o_size[i]), int(size[i]), int(mtime[i]))
        if tail is not None and zlib.crc32(tail, int(o_crc[i])) == crc[i]:
            fed[i] = tail
    return fed


def _record(
    source: str,
    names: list[str],
    size: np.ndarray,
    crc: np.ndarray,
    ino: np.ndarray,
    mtime: np.ndarray,
    old: StockRecord | None,
    at: np.ndarray,
    copied: list[int],
    name: str,
) -> StockRecord:
    """The new record's fields: bases carried from the previous record, or this backup's whole copy."""
    whole = np.zeros(len(names), dtype=bool)
    whole[copied] = True
    holder = [name if whole[i] or old is None else old.holder[at[i]] for i in range(len(names))]
    base = ["" if whole[i] or old is None else old.base[at[i]] for i in range(len(names))]
    base_size = np.where(whole, size, old.base_size[at] if old is not None else size)
    return StockRecord(source, names, size, crc, ino, mtime, holder, base, base_size)


def _add_pack(
    record: StockRecord,
    old: StockRecord | None,
    at: np.ndarray,
    copied: list[int],
    tails: dict[int, bytes],
    area: BackupArea,
    stock: str,
    name: str,
) -> bytes:
    """Give `record` the previous packs (re-indexed to its fields, copied fields left out) and a new
    pack of the appended `tails`, folding the newest older packs into it like a binary counter (and
    any mostly dead one with every newer one); returns the new pack's bytes."""
    n = len(record.fields)
    kept = np.ones(n, dtype=bool)
    kept[copied] = False
    packs = []
    for pack in old.packs if old is not None else []:
        length = np.where(kept & (at >= 0), pack.length[at], 0)
        packs.append(Pack(pack.holder, pack.name, np.where(length > 0, pack.offset[at], 0), length))
    new_length = np.zeros(n, dtype=np.int64)
    for i, tail in tails.items():
        new_length[i] = len(tail)
    live = [int(p.length.sum()) for p in packs]
    start, total = len(packs), int(new_length.sum())
    while start > 0 and live[start - 1] <= total:
        start -= 1
        total += live[start]
    for j, pack in enumerate(packs[:start]):
        if live[j] < DEAD_SHARE * (area.stock_folder(pack.holder, stock) / pack.name).stat().st_size:
            start, total = j, total + sum(live[j:start])
            break
    if not total:
        record.packs = [p for p in packs if p.length.any()]
        return b""
    folded = [(p, (area.stock_folder(p.holder, stock) / p.name).read_bytes()) for p in packs[start:]]
    parts, offset, length, end = [], np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), 0
    for i in range(n):
        runs = [data[p.offset[i] : p.offset[i] + p.length[i]] for p, data in folded if p.length[i]]
        if i in tails:
            runs.append(tails[i])
        if runs:
            offset[i], length[i] = end, sum(len(r) for r in runs)
            parts += runs
            end += int(length[i])
    new = Pack(name, f"{PACK_PREFIX}{name}{PACK_SUFFIX}", offset, length)
    record.packs = [p for p in packs[:start] if p.length.any()] + [new]
    return b"".join(parts)


def stock_contents(area: BackupArea, folder: Path) -> tuple[dict, dict[str, bytes]]:
    """A backed-up stock's `_stock.json` and each field file's bytes, put together from its base and
    packs wherever they are held (a plain folder's files as they are)."""
    meta = json.loads((folder / META_FILE).read_text())
    record = StockRecord.read(folder)
    if record is None:
        files = {p.name[: -len(BIN_SUFFIX)]: p.read_bytes() for p in folder.iterdir() if p.name.endswith(BIN_SUFFIX)}
        return meta, files
    return meta, {name: _field_bytes(area, folder.name, record, i) for i, name in enumerate(record.fields)}


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


def _previous_record(area: BackupArea, previous: str | None, stock: str) -> StockRecord | None:
    """The stock's record in the previous backup; a plain folder's files count as whole files of
    unknown origin."""
    folder = area.stock_folder(previous, stock) if previous is not None else None
    if folder is None or not folder.is_dir():
        return None
    record = StockRecord.read(folder)
    if record is not None:
        return record
    try:
        recorded = json.loads((folder / META_FILE).read_text())["files"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    names = sorted(n for n in recorded if (folder / f"{n}{BIN_SUFFIX}").is_file())
    size, crc = np.array([recorded[n] for n in names], dtype=np.int64).reshape(len(names), 2).T
    unknown = np.full(len(names), -1, dtype=np.int64)
    return StockRecord(None, names, size, crc, unknown, unknown, [previous] * len(names), [""] * len(names), size)


def _same_prefix(path: str, area: BackupArea, stock: str, old: StockRecord, i: int) -> bool:
    """Whether the store's file starts with the previous backup's content (a different file: read both)."""
    return _read_range(path, 0, int(old.size[i])) == _field_bytes(area, stock, old, i)


def _field_bytes(area: BackupArea, stock: str, record: StockRecord, i: int) -> bytes:
    parts = [_read_range(f"{area.stock_folder(record.holder[i], stock)}/{record.base_file(i)}", 0, record.base_size[i])]
    parts += [
        _read_range(f"{area.stock_folder(p.holder, stock)}/{p.name}", int(p.offset[i]), int(p.length[i]))
        for p in record.packs
        if p.length[i]
    ]
    return b"".join(parts)


def _ints(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(len(values))


def _read_range(path: str, offset: int, length: int) -> bytes:
    fd = open_for_reading(path)
    try:
        return os.pread(fd, int(length), int(offset))
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
