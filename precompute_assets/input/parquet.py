"""The input contract: one parquet file per stock, read and cleaned by documented rules.

Rules (each counted in `StockInput.quality`, none of them stops a run):
- file name not a stock code, two files for one code, unreadable file, no `date`, a missing required
  column, or no rows: the stock is skipped with an `InputError` naming the file, stock and rule;
- unparseable dates: the row is dropped (`bad_dates`);
- duplicate dates: the last row for a date wins (`duplicate_dates`);
- unsorted dates: rows are sorted (`unsorted`);
- NaN (or a non-number) in a required column: the day is missing, all fields NaN (`nan_rows`);
- impossible values (a price <= 0, negative volume, high < low): the day is missing (`impossible_rows`);
- `factor` absent: 1.0; NaN or non-positive factor: carried from the nearest valid day (`factor_filled`);
- a negative `amount` is NaN; other columns are ignored and listed (`ignored_columns`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from precompute_assets.input.codes import canonical_code

REQUIRED = ("open", "high", "low", "close", "volume")
OPTIONAL = ("amount", "factor")
PRICES = ("open", "high", "low", "close")


class InputError(Exception):
    """A file the reader cannot use; the message names the file, the stock and the rule."""

    def __init__(self, path: Path, code: str | None, rule: str, detail: str) -> None:
        self.path, self.code, self.rule, self.detail = Path(path), code, rule, detail
        super().__init__(f"{Path(path).name} ({code or 'no stock code'}): [{rule}] {detail}")


@dataclass
class StockInput:
    """One stock's cleaned daily bars (date index, float64) and what cleaning had to do."""

    code: str
    path: Path
    bars: pd.DataFrame
    quality: Counter = field(default_factory=Counter)
    ignored_columns: list[str] = field(default_factory=list)


@dataclass
class InputFolder:
    """The stocks found in the input folder and the files that could not be mapped to one."""

    files: dict[str, Path]
    errors: list[InputError]


def scan_folder(folder: Path) -> InputFolder:
    """Map every `*.parquet` file to its canonical code; bad names and ambiguous codes are errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist (set PARQUET_DATA_PATH)")
    by_code: dict[str, list[Path]] = {}
    errors: list[InputError] = []
    for path in sorted(folder.glob("*.parquet"), key=str):  # str keys: Path comparisons cost 40 ms per 5,000
        try:
            by_code.setdefault(canonical_code(path.stem), []).append(path)
        except ValueError as exc:
            errors.append(InputError(path, None, "file_name", str(exc)))
    files: dict[str, Path] = {}
    for code, paths in by_code.items():
        if len(paths) == 1:
            files[code] = paths[0]
        else:
            names = ", ".join(p.name for p in paths)
            errors.extend(InputError(p, code, "duplicate_code", f"files {names} all map to {code}") for p in paths)
    return InputFolder(files=files, errors=errors)


RACY_NS = 2_000_000_000
"""A file modified this close before it was hashed may change again within one timestamp tick
(file times are coarse), so its stat cannot vouch for its content: it is hashed again next time."""
_hashed: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def file_fingerprint(path: Path) -> str:
    """Content hash of one input file: a touched but unchanged file keeps its fingerprint.

    A file whose size, modification and change times and inode are those it had when this process
    last hashed it costs a `stat`: the sensor and every step ask for the fingerprints of every file.
    """
    key = str(path)
    stat = os.stat(key)
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    known = _hashed.get(key)
    if known is not None and known[0] == signature:
        return known[1]
    digest = hashlib.sha1()
    with open(key, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    fingerprint = digest.hexdigest()
    if time.time_ns() - stat.st_mtime_ns > RACY_NS:
        _hashed[key] = (signature, fingerprint)
    return fingerprint


def read_dates(path: Path, code: str) -> pd.DatetimeIndex:
    """The trading dates one file contributes to the calendar (only the date column is read)."""
    try:
        parquet = pq.ParquetFile(path)
        names = set(parquet.schema_arrow.names)
    except Exception as exc:
        raise InputError(path, code, "unreadable", f"not a readable parquet file: {exc}") from exc
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(path, code, "missing_column", f"required column(s) {missing} are absent")
    if "date" not in names:
        return _distinct_days(_load(path, code).index.to_series())
    column = parquet.read(columns=["date"]).column("date")
    if pa.types.is_timestamp(column.type) and column.type.tz is None:  # the usual file: no parsing
        values = column.to_numpy()
        return pd.DatetimeIndex(np.unique(pd.DatetimeIndex(values[~np.isnat(values)]).normalize()))
    return _distinct_days(column.to_pandas())


def _distinct_days(dates: pd.Series) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(dates, errors="coerce", cache=False).dropna()  # its cache costs more than it saves
    return pd.DatetimeIndex(parsed.dt.normalize().unique()).sort_values()


CACHED_STOCKS = 3000
"""Cleaned inputs a bucket run keeps: it reads each file for its bars and again for two checks, one
step after another over all of its buckets, so the cache must hold a whole run or every check misses
(a daily update at 5,000 stocks runs 2,500 per process; a 10-year stock takes about 155 KB).
Keyed by the file's content hash (cheap next to parsing and cleaning), so a rewritten file is read
again however quickly it was rewritten. Consumers read uncached, as any fresh process would."""
_cache: OrderedDict[tuple[str, str], StockInput] = OrderedDict()


def read_stock_cached(path: Path, code: str, fingerprint: str | None = None) -> StockInput:
    """`read_stock` through the bucket run's cache (a copy the caller owns); `fingerprint` is the
    file's `file_fingerprint` when the caller has just computed it."""
    try:
        key = (code, fingerprint or file_fingerprint(path))
    except OSError:
        return read_stock(path, code)
    if key not in _cache:
        _cache[key] = read_stock(path, code)
        if len(_cache) > CACHED_STOCKS:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    stock = _cache[key]
    return replace(stock, path=Path(path), bars=stock.bars.copy(), quality=Counter(stock.quality))


def read_stock(path: Path, code: str) -> StockInput:
    """Read and clean one stock file by the rules in this module's docstring.

    The rules run on numpy arrays: a bucket run reads thousands of files, and the same rules in
    pandas cost three times the parquet read itself.
    """
    raw = _load(path, code)
    quality: Counter = Counter()
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(path, code, "missing_column", f"required column(s) {missing} are absent")
    ignored = sorted(str(c) for c in raw.columns if c not in REQUIRED + OPTIONAL)

    dates = pd.to_datetime(pd.Series(raw.index), errors="coerce", cache=False)
    dated = dates.notna().to_numpy()
    quality["bad_dates"] = int((~dated).sum())
    if not dated.any():
        raise InputError(path, code, "empty", "the file has no rows with a valid date")
    index = pd.DatetimeIndex(dates[dated]).normalize()
    names = [c for c in REQUIRED + OPTIONAL if c in raw.columns]
    columns = {name: _numbers(raw[name])[dated] for name in names}

    quality["unsorted"] = int(not index.is_monotonic_increasing)
    order = np.argsort(index.asi8, kind="stable")
    index = index[order]
    kept = ~index.duplicated(keep="last")
    quality["duplicate_dates"] = int((~kept).sum())
    index = index[kept]
    columns = {name: values[order][kept] for name, values in columns.items()}

    nan_rows = np.isnan(np.vstack([columns[c] for c in REQUIRED])).any(axis=0)
    with np.errstate(invalid="ignore"):
        impossible = ~nan_rows & (
            (np.vstack([columns[c] for c in PRICES]) <= 0).any(axis=0)
            | (columns["volume"] < 0)
            | (columns["high"] < columns["low"])
        )
    quality["nan_rows"] = int(nan_rows.sum())
    quality["impossible_rows"] = int(impossible.sum())
    missing_day = nan_rows | impossible
    for values in columns.values():
        values[missing_day] = np.nan

    factor = columns.get("factor", np.ones(len(index)))
    positive = factor > 0
    quality["factor_filled"] = int((~positive & ~missing_day).sum()) if "factor" in columns else 0
    columns["factor"] = np.where(missing_day, np.nan, _nearest_valid(np.where(positive, factor, np.nan)))
    if "amount" in columns:
        columns["amount"] = np.where(columns["amount"] >= 0, columns["amount"], np.nan)
    frame = pd.DataFrame(columns, index=index.rename("date"))
    return StockInput(code=code, path=Path(path), bars=frame, quality=quality, ignored_columns=ignored)


def _numbers(column: pd.Series) -> np.ndarray:
    """A column as a float64 copy; anything that is not a number becomes NaN."""
    if column.dtype == np.float64:
        return column.to_numpy(copy=True)
    return pd.to_numeric(column, errors="coerce").astype(np.float64).to_numpy(copy=True)


def _nearest_valid(values: np.ndarray) -> np.ndarray:
    """NaN filled from the previous valid value, leading NaN from the first one; all NaN: 1.0."""
    valid = ~np.isnan(values)
    if not valid.any():
        return np.ones_like(values)
    previous = np.maximum.accumulate(np.where(valid, np.arange(len(values)), 0))
    filled = values[previous]
    first = int(np.argmax(valid))
    filled[:first] = values[first]
    return filled


def _load(path: Path, code: str) -> pd.DataFrame:
    """The raw frame indexed by its `date` (a column or the index)."""
    try:
        raw = pq.read_table(path).to_pandas()  # what pd.read_parquet does, without its dispatch
    except Exception as exc:
        raise InputError(path, code, "unreadable", f"not a readable parquet file: {exc}") from exc
    if "date" in raw.columns:
        return raw.set_index("date")
    if raw.index.name == "date" or isinstance(raw.index, pd.DatetimeIndex):
        return raw
    raise InputError(path, code, "missing_column", "no `date` column or date index")
