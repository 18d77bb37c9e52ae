"""What one run's store step wrote per bucket, so the checks after it look at those rows and files only.

A stock written in full is new from its first row; an updated one is new from `rows_before` on, in
the files it appended to (with each file's size and crc32 before the append, so the appended bytes
alone prove the file equals its record) and in the columns it replaced whole. A run that wrote no
record (a checks-only run, the audit) checks the whole bucket.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from precompute_assets.build import intermediates

RECORD = "store_written.json"


@dataclass(frozen=True)
class WrittenStock:
    """One stock's write: `rows_before` 0 means every row and file is new."""

    rows_before: int = 0
    appended: dict[str, tuple[int, int]] = field(default_factory=dict)
    """field -> (size, crc32) of its file before the append."""

    @property
    def full(self) -> bool:
        return self.rows_before == 0 and not self.appended


def record_written(work: Path, written: dict[str, WrittenStock]) -> None:
    """Add this attempt's writes to the run's record (a retried step keeps what earlier attempts wrote)."""
    recorded = intermediates.read_notes(work / RECORD)
    recorded.update({code: {"rows_before": w.rows_before, "appended": w.appended} for code, w in written.items()})
    intermediates.write_notes(work / RECORD, recorded)


CACHED_RECORDS = 256
"""Records a process keeps parsed: every bucket of the runs it serves (a run has at most 64)."""
_parsed: OrderedDict[str, tuple[tuple[int, int, int], dict[str, WrittenStock]]] = OrderedDict()


def read_written(work: Path) -> dict[str, WrittenStock] | None:
    """The stocks the run wrote in this bucket, or None when the run's store step wrote nothing here.

    Parsed once per process while the file is the same (inode, size, modification time; a record is
    replaced, never edited in place): each of the four checks reads every bucket's record, which
    after an update lists each stock's few hundred appended files. Callers must not modify it."""
    path = work / RECORD
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    key, signature = str(path), (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    known = _parsed.get(key)
    if known is None or known[0] != signature:
        written = {
            code: WrittenStock(
                int(entry["rows_before"]), {f: (int(s), int(c)) for f, (s, c) in entry["appended"].items()}
            )
            for code, entry in intermediates.read_notes(path).items()
        }
        known = _parsed[key] = (signature, written)
        if len(_parsed) > CACHED_RECORDS:
            _parsed.popitem(last=False)
    _parsed.move_to_end(key)
    return known[1]
