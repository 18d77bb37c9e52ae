"""Per-bucket intermediates between assets: bars and family columns as Arrow files, notes as JSON.

They live beside the store (`Settings.work_path`), never inside it, so a half-finished bucket can
never be read as data; the cleanup removes them past their retention. Arrow IPC with LZ4, not
parquet: an intermediate is written once and read once, so parquet's costlier encoding buys nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

FRAMES_SUFFIX = ".arrow"
COLUMNS_KEY = b"precompute.columns"


def bucket_dir(work_path: Path, bucket: str, run: str = "") -> Path:
    """A bucket's intermediates; with `run`, that run's own folder inside it, so two runs of one bucket
    never read each other's half-written steps."""
    return Path(work_path) / bucket / run if run else Path(work_path) / bucket


def frames_path(work: Path, name: str) -> Path:
    return work / f"{name}{FRAMES_SUFFIX}"


def write_frames(path: Path, frames: Mapping[str, pd.DataFrame]) -> None:
    """Many stocks' date-indexed frames as one long table (code, date, columns...), stocks contiguous.

    Stocks may have different columns (`amount` is optional in the input): the table holds their
    union, and the schema records which columns each such stock really has.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames:
        table = pd.concat(list(frames.values()))
        table.index.name = "date"
        table = table.reset_index()
        table.insert(0, "code", np.repeat(list(frames), [len(f) for f in frames.values()]))
    else:
        table = pd.DataFrame({"code": pd.Series([], dtype=str), "date": pd.Series([], dtype="datetime64[ns]")})
    union = list(table.columns[2:])
    own = {code: list(f.columns) for code, f in frames.items() if list(f.columns) != union}
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), COLUMNS_KEY: json.dumps(own)})
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    feather.write_feather(arrow, tmp, compression="lz4")
    os.replace(tmp, path)


def read_frames(path: Path) -> dict[str, pd.DataFrame]:
    if not path.exists():
        return {}
    arrow = feather.read_table(path)
    own = json.loads((arrow.schema.metadata or {}).get(COLUMNS_KEY, b"{}"))
    table = arrow.to_pandas()
    codes = table.pop("code").to_numpy()
    if not len(codes):
        return {}
    table = table.set_index("date")
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    frames = {}
    for lo, hi in zip(starts, ends, strict=True):
        code = str(codes[lo])
        frame = table.iloc[lo:hi]
        frames[code] = (frame[own[code]] if code in own else frame).copy()
    return frames


def write_notes(path: Path, notes: Mapping[str, object]) -> None:
    """Compact JSON: an indented dump runs json's pure-Python encoder, and the store step's record holds
    each appended file of the bucket."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(notes, separators=(",", ":"), default=str))
    os.replace(tmp, path)


def read_notes(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}
