"""The parquet input as it is now: its files, their content fingerprints, its version and calendar.

The loader asks for these on every call, so they are cached by the files' `stat` (name, size,
mtime): hashing happens once per changed file, and the costly calendar scan (every file's dates)
once per input version, and only when the store cannot supply the calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from precompute_assets.build.pipeline import input_version
from precompute_assets.input.bars import scan_calendar
from precompute_assets.input.parquet import file_fingerprint, scan_folder

_fingerprints: dict[tuple[str, int, int], str] = {}
_calendars: dict[str, pd.DatetimeIndex] = {}


@dataclass(frozen=True)
class InputState:
    """One snapshot of the input folder; `version` is what `data_version.json` records as input_version."""

    folder: Path
    files: dict[str, Path]
    fingerprints: dict[str, str]
    version: str


def input_state(folder: Path) -> InputState | None:
    """The folder's current state, or None when there is no input folder (a store-only setup)."""
    try:
        files = scan_folder(folder).files
    except FileNotFoundError:
        return None
    fingerprints = {code: _fingerprint(path) for code, path in files.items()}
    return InputState(Path(folder), files, fingerprints, input_version(fingerprints))


def input_calendar(state: InputState) -> pd.DatetimeIndex:
    """Every date of the input, as the precompute's calendar step derives it."""
    calendar = _calendars.get(state.version)
    if calendar is None:
        calendar = _calendars[state.version] = scan_calendar(state.files).dates
    return calendar


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    fingerprint = _fingerprints.get(key)
    if fingerprint is None:
        fingerprint = _fingerprints[key] = file_fingerprint(path)
    return fingerprint
