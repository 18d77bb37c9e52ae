"""What one run's store step wrote per bucket, so the checks after it look at those rows and files only.

A stock written in full is new from its first row; an updated one is new from `rows_before` on, in
the files it appended to (with each file's size and crc32 before the append, so the appended bytes
alone prove the file equals its record) and in the columns it replaced whole. A run that wrote no
record (a checks-only run, the audit) checks the whole bucket.
"""

from __future__ import annotations

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


def read_written(work: Path) -> dict[str, WrittenStock] | None:
    """The stocks the run wrote in this bucket, or None when the run's store step wrote nothing here."""
    path = work / RECORD
    if not path.exists():
        return None
    return {
        code: WrittenStock(int(entry["rows_before"]), {f: (int(s), int(c)) for f, (s, c) in entry["appended"].items()})
        for code, entry in intermediates.read_notes(path).items()
    }
