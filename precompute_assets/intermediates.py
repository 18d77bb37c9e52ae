"""Per-bucket intermediates between assets: bars and family columns as parquet, notes as JSON.

They live beside the store (`Settings.work_path`), never inside it, so a half-finished bucket can
never be read as data; the cleanup removes them past their retention.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import pandas as pd


def bucket_dir(work_path: Path, bucket: str) -> Path:
    return Path(work_path) / bucket


def write_frames(path: Path, frames: Mapping[str, pd.DataFrame]) -> None:
    """Many stocks' date-indexed frames as one long parquet file (code, date, columns...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [frame.assign(code=code).reset_index() for code, frame in frames.items()]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"code": [], "date": []})
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_frames(path: Path) -> dict[str, pd.DataFrame]:
    if not path.exists():
        return {}
    table = pd.read_parquet(path)
    frames = {}
    for code, part in table.groupby("code", sort=True):
        frame = part.drop(columns="code").set_index("date")
        frame.index.name = "date"
        frames[str(code)] = frame
    return frames


def write_notes(path: Path, notes: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(notes, indent=1, default=str))
    os.replace(tmp, path)


def read_notes(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}
