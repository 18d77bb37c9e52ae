"""Per-bucket intermediates between assets: bars and family columns as Arrow files, notes as JSON.

They live beside the store (`Settings.work_path`), never inside it, so a half-finished bucket can
never be read as data; the cleanup removes them past their retention. Arrow IPC (LZ4 for a large
table), not parquet: an intermediate is written once and read once, so parquet's costlier encoding
buys nothing.
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
COMPRESS_FROM_BYTES = 8 << 20
"""Tables smaller than this are written uncompressed: LZ4 costs more time per column than a daily
update's few rows take to write (and float32 indicator values barely compress)."""


def bucket_dir(work_path: Path, bucket: str, run: str = "") -> Path:
    """A bucket's intermediates; with `run`, that run's own folder inside it, so two runs of one bucket
    never read each other's half-written steps."""
    return Path(work_path) / bucket / run if run else Path(work_path) / bucket


def frames_path(work: Path, name: str) -> Path:
    return work / f"{name}{FRAMES_SUFFIX}"


def write_frames(path: Path, frames: Mapping[str, pd.DataFrame]) -> None:
    """Many stocks' date-indexed frames as one long table (code, date, columns...), stocks contiguous.

    Stocks may have different columns (`amount` is optional in the input): the table holds their
    union, and the schema records which columns each such stock really has. Frames of float columns
    (bars, family columns) go straight from their arrays to Arrow's, column by column without a copy;
    pandas' conversion, kept for any other frame, costs more than the data for a daily update's rows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = _float_table(frames, _union(frames))
    if arrow is None:
        arrow = pa.Table.from_pandas(_long_frame(frames), preserve_index=False)
    union = arrow.column_names[2:]
    own = {code: list(f.columns) for code, f in frames.items() if list(f.columns) != union}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), COLUMNS_KEY: json.dumps(own)})
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    compression = "lz4" if arrow.nbytes >= COMPRESS_FROM_BYTES else "uncompressed"
    feather.write_feather(arrow, tmp, compression=compression)
    os.replace(tmp, path)


def _union(frames: Mapping[str, pd.DataFrame]) -> list[str]:
    """Every stock's columns, in the order they first appear."""
    union: dict[str, None] = {}
    for frame in frames.values():
        union.update(dict.fromkeys(frame.columns))
    return list(union)


def _float_table(frames: Mapping[str, pd.DataFrame], union: list[str]) -> pa.Table | None:
    """The long table built from each frame's float array (NaN where a stock lacks a column), or
    None when a frame is not all floats or not on a datetime index, or has a column named as the
    table's own (pandas' path refuses those)."""
    if "code" in union or "date" in union:
        return None
    blocks, dates = [], []
    for frame in frames.values():
        index = frame.index
        values = _float_values(frame)
        if values is None or not isinstance(index, pd.DatetimeIndex) or index.tz:
            return None
        if list(frame.columns) != union:
            widened = np.full((len(frame), len(union)), np.nan, dtype=values.dtype if frame.shape[1] else np.float64)
            widened[:, [union.index(c) for c in frame.columns]] = values
            values = widened
        blocks.append(values)
        dates.append(frame.index.to_numpy())
    if not frames or len({d.dtype for d in dates}) != 1:
        return None
    lengths = [len(block) for block in blocks]
    table = np.concatenate(blocks).T if len(blocks) > 1 else blocks[0].T  # (columns, rows): one row per column
    table = np.ascontiguousarray(table)
    columns = {
        "code": pa.array(np.repeat(np.array(list(frames), dtype=object), lengths), pa.string()),
        "date": pa.array(np.concatenate(dates)),
    }
    # NaN as null, as pandas' conversion stores it: read back as the one canonical NaN, whatever bits
    # the computation left (a NaN's sign and payload would otherwise reach the store)
    columns.update({name: pa.array(table[j], from_pandas=True) for j, name in enumerate(union)})
    return pa.table(columns)


def _float_values(frame: pd.DataFrame) -> np.ndarray | None:
    """The frame's (rows, columns) array when every column has one numpy float dtype, else None.

    Two `to_numpy()` calls that return the same memory are views of one block, so of one dtype:
    that costs a microsecond where `frame.dtypes` (a Series built per call) costs 80, for every stock
    of every step. Any other frame is judged by its dtypes."""
    values = frame.to_numpy()
    if values.dtype.kind == "f" and np.may_share_memory(values, frame.to_numpy()):
        return values
    dtypes = set(frame.dtypes)
    if len(dtypes) > 1 or any(not isinstance(d, np.dtype) or d.kind != "f" for d in dtypes):
        return None
    return values


def _long_frame(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The long table as a pandas frame (any dtypes): pandas' concatenation of the stocks' frames."""
    if not frames:
        return pd.DataFrame({"code": pd.Series([], dtype=str), "date": pd.Series([], dtype="datetime64[ns]")})
    table = pd.concat(list(frames.values()))
    table.index.name = "date"
    table = table.reset_index()
    table.insert(0, "code", np.repeat(list(frames), [len(f) for f in frames.values()]))
    return table


def read_frames(path: Path) -> dict[str, pd.DataFrame]:
    if not path.exists():
        return {}
    arrow = feather.read_table(path)
    own = json.loads((arrow.schema.metadata or {}).get(COLUMNS_KEY, b"{}"))
    codes = arrow.column("code").to_numpy(zero_copy_only=False)
    if not len(codes):
        return {}
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    names = [n for n in arrow.column_names if n not in ("code", "date")]
    kinds = {arrow.schema.field(n).type for n in names}
    if len(kinds) == 1 and pa.types.is_floating(next(iter(kinds))):
        return _float_frames(arrow, names, own, codes, starts, ends)
    table = arrow.to_pandas().drop(columns="code").set_index("date")
    frames = {}
    for lo, hi in zip(starts, ends, strict=True):
        code = str(codes[lo])
        frame = table.iloc[lo:hi]
        frames[code] = (frame[own[code]] if code in own else frame).copy()
    return frames


def _float_frames(
    arrow: pa.Table, names: list[str], own: dict, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> dict[str, pd.DataFrame]:
    """Each stock's frame from a table of float columns: one (columns, rows) array, a copy per stock."""
    values = np.empty((len(names), arrow.num_rows), dtype=arrow.schema.field(names[0]).type.to_pandas_dtype())
    for j, name in enumerate(names):  # a column without nulls is read without a copy; nulls become NaN
        values[j] = arrow.column(name).to_numpy(zero_copy_only=False)
    dates = pd.DatetimeIndex(arrow.column("date").to_numpy(zero_copy_only=False), name="date")
    where = {name: j for j, name in enumerate(names)}
    indexes: dict[tuple[str, ...] | None, pd.Index] = {None: pd.Index(names)}  # None: the union
    frames = {}
    for lo, hi in zip(starts, ends, strict=True):
        code = str(codes[lo])
        chosen = tuple(own[code]) if code in own else None
        if chosen not in indexes:
            indexes[chosen] = pd.Index(chosen, dtype=object)
        # (columns, rows) contiguous, as pandas' own blocks lie: a column is one run of memory
        rows = values[:, lo:hi] if chosen is None else values[[where[n] for n in chosen], lo:hi]
        block = np.ascontiguousarray(rows)
        frames[code] = pd.DataFrame(block.T, index=dates[lo:hi], columns=indexes[chosen])
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
