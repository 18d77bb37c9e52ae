"""The input contract: one parquet file per stock, read and cleaned by documented rules.

Rules (each counted in `StockInput.quality`, none of them stops a run):
- file name not a stock code, two files for one code, unreadable file, no `date`, a missing required
  column, or no rows: the stock is skipped with an `InputError` naming the file, stock and rule;
- dates: datetimes, dates, integers or strings `YYYYMMDD`, strings `YYYY-MM-DD`; a time-zone-aware
  timestamp is the calendar date in its own zone. A date column of any other type or format, or with no
  date inside `FIRST_DATE`..tomorrow, skips the stock (`bad_dates`); a single unparseable or out-of-range
  date drops its row, counted (`bad_dates`) and reported in `StockInput.problems`;
- duplicate dates: the last row for a date wins (`duplicate_dates`);
- unsorted dates: rows are sorted (`unsorted`);
- NaN (or a non-number) in a required column: the day is missing, all fields NaN (`nan_rows`);
- impossible values (a price <= 0, negative volume, high < low): the day is missing (`impossible_rows`);
- `factor` absent: 1.0; NaN or non-positive factor: carried from the nearest valid day (`factor_filled`);
- a negative `amount` is NaN; other columns are ignored and listed (`ignored_columns`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
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
FIRST_DATE = pd.Timestamp("1990-01-01")
"""The earliest date a row may carry (China's exchanges opened in December 1990); an earlier one is
a misread date (nanoseconds read as 1970, a day count), never history."""


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
    problems: list[InputError] = field(default_factory=list)
    """Rules that dropped rows but kept the stock (bad dates), each naming the file and the rows."""


@dataclass
class InputFolder:
    """The stocks found in the input folder and the files that could not be mapped to one."""

    files: dict[str, Path]
    errors: list[InputError]


def scan_folder(folder: Path) -> InputFolder:
    """Map every `*.parquet` file to its canonical code; bad names and ambiguous codes are errors.

    A folder whose modification and change times and inode are those it had when this process last
    listed it costs a `stat`: every step and check of a run asks for it once per bucket.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist (set PARQUET_DATA_PATH)")
    key = str(folder)
    stat = os.stat(key)
    signature = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)
    known = _listed.get(key)
    if known is None or known[0] != signature:
        known = (signature, _scan(folder))
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > RACY_NS:
            _listed[key] = known
    return InputFolder(files=dict(known[1].files), errors=list(known[1].errors))


def _scan(folder: Path) -> InputFolder:
    by_code: dict[str, list[Path]] = {}
    errors: list[InputError] = []
    for path in sorted(folder.glob("*.parquet"), key=str):  # str keys: comparing Path objects is slow
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
_listed: dict[str, tuple[tuple[int, int, int, int], InputFolder]] = {}
"""Each folder's listing, by the folder's stat when it was listed (names change only with that stat)."""


def file_fingerprint(path: Path) -> str:
    """Content hash of one input file: a touched but unchanged file keeps its fingerprint.

    A file whose size, modification and change times and inode are those it had when this process
    last hashed it costs a `stat`: the sensor and every step ask for the fingerprints of every file.
    """
    key = str(path)
    stat = os.stat(key)
    known = _hashed.get(key)
    if known is not None and known[0] == _signature(stat):
        return known[1]
    return read_input(path)[0]


def file_stat(path: Path) -> list[int] | None:
    """The file's size and modification time, which a stock records at commit to vouch for its input
    unread next time; None when the file was modified too recently for its stat to vouch for anything."""
    stat = os.stat(path)
    return None if time.time_ns() - stat.st_mtime_ns <= RACY_NS else [stat.st_size, stat.st_mtime_ns]


def read_input(path: Path) -> tuple[str, bytes]:
    """The file's content hash and its bytes, from one read: a changed file is hashed and parsed
    (`read_stock(..., content=)`) from the same bytes, so a run reads it once."""
    key = str(path)
    stat = os.stat(key)
    with open(key, "rb") as handle:
        content = handle.read()
    fingerprint = hashlib.sha1(content).hexdigest()
    if time.time_ns() - stat.st_mtime_ns > RACY_NS:
        _hashed[key] = (_signature(stat), fingerprint)
    return fingerprint, content


def known_fingerprint(path: Path, fingerprint: str) -> None:
    """Record that `path`, as it is now, has `fingerprint` (vouched for by its recorded stat), so
    later steps of this process that ask `file_fingerprint` pay a `stat` too."""
    key = str(path)
    _hashed[key] = (_signature(os.stat(key)), fingerprint)


def _signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def read_dates(path: Path, code: str) -> pd.DatetimeIndex:
    """The trading dates one file contributes to the calendar (only the date column is read).

    The same dates `read_stock` keeps: both parse with `row_dates`, and both raise `bad_dates` alike.
    """
    return pd.DatetimeIndex(np.unique(read_days(path, code)).astype("datetime64[ns]"), name="date")


def read_days(path: Path, code: str) -> np.ndarray:
    """The day (`datetime64[D]`) of each of the file's rows that has one, as `read_dates` reads them:
    the calendar scan's unit, unsorted and with the file's duplicates."""
    try:
        parquet = pq.ParquetFile(path)
        names = set(parquet.schema_arrow.names)
        column = parquet.read(columns=["date"], use_threads=False).column("date") if "date" in names else None
    except Exception as exc:
        raise InputError(path, code, "unreadable", f"not a readable parquet file: {exc}") from exc
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(path, code, "missing_column", f"required column(s) {missing} are absent")
    if column is None:
        dates = row_dates(path, code, _load(path, code).dates)
    elif _naive_timestamps(column.type):  # the usual file: no parsing
        dates = row_dates(path, code, column.to_numpy())
    else:
        dates = row_dates(path, code, column.to_pandas())
    return dates[~np.isnat(dates)].astype("datetime64[D]")


def row_dates(path: Path, code: str, values: np.ndarray | pd.Series | pd.Index) -> np.ndarray:
    """Each row's date as `datetime64[ns]` midnight, NaT where the row has none, by `file_dates`'s
    rules; naive timestamps (the usual file) on numpy alone, which is most of a file's reading time
    in pandas."""
    if not (isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.datetime64)):
        return file_dates(path, code, values).to_numpy("datetime64[ns]")
    days = values.astype("datetime64[D]")
    valid = (days >= np.datetime64(FIRST_DATE.date(), "D")) & (days <= np.datetime64(last_valid_date().date(), "D"))
    if len(days) and not valid.any():  # the column names no usable date: `file_dates` raises, with its message
        return file_dates(path, code, pd.DatetimeIndex(values)).to_numpy("datetime64[ns]")
    return np.where(valid, days, np.datetime64("NaT", "D")).astype("datetime64[ns]")


def _naive_timestamps(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) and kind.tz is None


def last_valid_date() -> pd.Timestamp:
    """The latest date a row may carry: tomorrow (a vendor in an earlier time zone may be a day ahead)."""
    return pd.Timestamp(dt.date.today()) + pd.Timedelta(days=1)


def file_dates(path: Path, code: str, values: pd.Series | pd.Index) -> pd.DatetimeIndex:
    """Each row's date (NaT where the row has no valid date); raises `bad_dates` when the column names
    no usable date at all, so a misread column never passes for a one-row stock."""
    values = pd.Series(values) if isinstance(values, pd.Index) else values.reset_index(drop=True)
    try:
        parsed = parse_dates(values)
    except ValueError as exc:
        raise InputError(path, code, "bad_dates", str(exc)) from exc
    first, last = FIRST_DATE, last_valid_date()
    outside = ~parsed.isna() & ((parsed < first) | (parsed > last))
    if len(parsed) and (parsed.isna() | outside).all():
        found = parsed[~parsed.isna()]
        seen = f"found {found.min():%Y-%m-%d}..{found.max():%Y-%m-%d}" if len(found) else f"e.g. {_example(values)}"
        raise InputError(
            path,
            code,
            "bad_dates",
            f"no date of the {len(parsed)} rows lies in {first:%Y-%m-%d}..{last:%Y-%m-%d} ({seen})",
        )
    return parsed.where(~outside)


def parse_dates(values: pd.Series) -> pd.DatetimeIndex:
    """The calendar date each value means, NaT where it means none; ValueError when the column's type
    or format is none of: datetimes (a zone-aware one: its local date), dates, integers `YYYYMMDD`,
    strings `YYYYMMDD` or `YYYY-MM-DD`."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pd.DatetimeIndex(values.dt.tz_localize(None)).normalize()
    if pd.api.types.is_datetime64_dtype(dtype):
        return pd.DatetimeIndex(values).normalize()
    if pd.api.types.is_bool_dtype(dtype):
        raise ValueError(f"dates of type {dtype} are not a date format ({ACCEPTED})")
    if pd.api.types.is_numeric_dtype(dtype):
        return _recognised(_yyyymmdd(values.to_numpy(np.float64)), values)
    values = values.astype(object)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "string":
        return _recognised(_date_strings(values), values)
    if kind in ("integer", "floating", "mixed-integer-float"):
        return _recognised(_yyyymmdd(pd.to_numeric(values, errors="coerce").to_numpy(np.float64)), values)
    if kind in ("date", "datetime", "datetime64"):
        return pd.DatetimeIndex([_one_date(v) for v in values]).normalize()
    if kind == "empty":
        return _recognised(pd.DatetimeIndex([pd.NaT] * len(values)), values)
    return _recognised(pd.DatetimeIndex([_one_date(v) for v in values]), values)


ACCEPTED = "datetimes, dates, YYYYMMDD integers or strings, YYYY-MM-DD strings"
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COMPACT = re.compile(r"^\d{8}$")


def _recognised(parsed: pd.DatetimeIndex, values: pd.Series) -> pd.DatetimeIndex:
    """`parsed`, unless not one value parsed: then the column is in no accepted format."""
    if len(values) and parsed.isna().all():
        raise ValueError(f"dates like {_example(values)} ({values.dtype}) are in no accepted format ({ACCEPTED})")
    return parsed


def _example(values: pd.Series) -> str:
    present = values.dropna()
    return _show(present.iloc[0]) if len(present) else "NaN"


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _yyyymmdd(numbers: np.ndarray) -> pd.DatetimeIndex:
    """Integral numbers read as YYYYMMDD (a vendor's integer date); anything else NaT."""
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(numbers) & (numbers == np.floor(numbers)) & (numbers >= 1e7) & (numbers < 1e8)
    whole = np.where(usable, numbers, 19700101).astype(np.int64)
    parts = pd.DataFrame({"year": whole // 10000, "month": whole // 100 % 100, "day": whole % 100})
    parsed = pd.DatetimeIndex(pd.to_datetime(parts, errors="coerce"))
    return parsed.where(usable)


def _date_strings(values: pd.Series) -> pd.DatetimeIndex:
    text = values.where(values.notna(), "").astype(str).str.strip()
    iso = pd.to_datetime(text.where(text.str.match(_ISO)), format="%Y-%m-%d", errors="coerce")
    compact = pd.to_datetime(text.where(text.str.match(_COMPACT)), format="%Y%m%d", errors="coerce")
    return pd.DatetimeIndex(iso.fillna(compact))


def _one_date(value: object) -> pd.Timestamp:
    """One value of a mixed column, by the same rules as a whole column."""
    if isinstance(value, dt.datetime | dt.date | np.datetime64):
        stamp = pd.Timestamp(value)
        return (stamp.tz_localize(None) if stamp.tzinfo is not None else stamp).normalize()
    if isinstance(value, str):
        return _date_strings(pd.Series([value], dtype=object))[0]
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return _yyyymmdd(np.array([value], dtype=np.float64))[0]
    return pd.NaT


CACHED_STOCKS = 3000
"""Cleaned inputs a bucket run keeps: it reads each file for its bars and again for two checks, one
step after another over all of its buckets, so the cache must hold a whole run or every check misses
(a daily update runs half the market per process, one range per core).
Keyed by the file's content hash (cheap next to parsing and cleaning), so a rewritten file is read
again however quickly it was rewritten. Consumers read uncached, as any fresh process would."""
_cache: OrderedDict[tuple[str, str], StockInput] = OrderedDict()


def read_stock_cached(
    path: Path, code: str, fingerprint: str | None = None, content: bytes | None = None
) -> StockInput:
    """`read_stock` through the bucket run's cache (a copy the caller owns); `fingerprint` is the
    file's `file_fingerprint` when the caller has just computed it, `content` the bytes it was
    computed from (parsed instead of reading the file again)."""
    try:
        key = (code, fingerprint or file_fingerprint(path))
    except OSError:
        return read_stock(path, code, content)
    if key not in _cache:
        _cache[key] = read_stock(path, code, content)
        if len(_cache) > CACHED_STOCKS:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    stock = _cache[key]
    return replace(
        stock, path=Path(path), bars=stock.bars.copy(), quality=Counter(stock.quality), problems=list(stock.problems)
    )


def read_stock(path: Path, code: str, content: bytes | None = None) -> StockInput:
    """Read and clean one stock file by the rules in this module's docstring (from `content`, the
    file's bytes, when the caller has read them).

    The rules run on numpy arrays: a bucket run reads thousands of files, and the same rules in
    pandas cost three times the parquet read itself.
    """
    raw = _load(path, code, content)
    quality: Counter = Counter()
    missing = [c for c in REQUIRED if c not in raw.names]
    if missing:
        raise InputError(path, code, "missing_column", f"required column(s) {missing} are absent")
    ignored = sorted(str(c) for c in raw.names if c not in REQUIRED + OPTIONAL)

    if not len(raw.dates):
        raise InputError(path, code, "empty", "the file has no rows")
    dates = row_dates(path, code, raw.dates)
    dated = ~np.isnat(dates)
    quality["bad_dates"] = int((~dated).sum())
    problems = []
    if quality["bad_dates"]:
        rows = np.flatnonzero(~dated)
        shown_dates = pd.Index(raw.dates)
        shown = ", ".join(f"row {i}: {_show(shown_dates[i])}" for i in rows[:3])
        problems.append(
            InputError(
                path,
                code,
                "bad_dates",
                f"{len(rows)} row(s) dropped, their date is in no accepted format or outside "
                f"{FIRST_DATE:%Y-%m-%d}..{last_valid_date():%Y-%m-%d} ({shown})",
            )
        )
    stamps = dates[dated].view(np.int64)
    columns = {name: raw.numbers(name)[dated] for name in REQUIRED + OPTIONAL if name in raw.names}

    quality["unsorted"] = int(bool((np.diff(stamps) < 0).any()))
    order = np.argsort(stamps, kind="stable")
    stamps = stamps[order]
    kept = np.ones(len(stamps), dtype=bool)
    kept[:-1] = stamps[1:] != stamps[:-1]  # the file's last row for a date wins: the sort is stable
    quality["duplicate_dates"] = int((~kept).sum())
    index = pd.DatetimeIndex(stamps[kept].view("datetime64[ns]"))
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
    return StockInput(
        code=code, path=Path(path), bars=frame, quality=quality, ignored_columns=ignored, problems=problems
    )


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


@dataclass
class _RawColumns:
    """A file as read: its column names (the dates aside), its dates as stored, and its columns, as
    pyarrow's arrays (`arrays`, the used columns only) or as the pandas frame pyarrow gives (`frame`)."""

    names: list[str]
    dates: np.ndarray | pd.Index
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    frame: pd.DataFrame | None = None

    def numbers(self, name: str) -> np.ndarray:
        """A used column as a float64 copy; anything that is not a number becomes NaN."""
        return self.arrays[name] if self.frame is None else _numbers(self.frame[name])


def _load(path: Path, code: str, content: bytes | None = None) -> _RawColumns:
    """The file's dates and used columns: with pyarrow alone for the usual file (naive timestamps in a
    `date` column, numeric columns), else through the pandas frame pyarrow gives."""
    try:
        parquet = pq.ParquetFile(path if content is None else pa.BufferReader(content))
        schema = parquet.schema_arrow
        used = [name for name in REQUIRED + OPTIONAL if name in schema.names]
        index = _stored_index(schema)
        if _plain_file(schema, index, used):
            table = parquet.read(columns=["date", *used], use_threads=False, use_pandas_metadata=False)
            arrays = {n: np.array(table.column(n).to_numpy(), dtype=np.float64) for n in used}
            names = [n for n in schema.names if n != "date" and n not in index]
            return _RawColumns(names, table.column("date").to_numpy(), arrays)
        raw = parquet.read(use_threads=False).to_pandas()  # what pd.read_parquet does, without its dispatch
    except Exception as exc:
        raise InputError(path, code, "unreadable", f"not a readable parquet file: {exc}") from exc
    if "date" in raw.columns:
        raw = raw.set_index("date")
    elif not (raw.index.name == "date" or isinstance(raw.index, pd.DatetimeIndex)):
        raise InputError(path, code, "missing_column", "no `date` column or date index")
    return _RawColumns(list(raw.columns), raw.index, frame=raw)


def _plain_file(schema: pa.Schema, index: list[str], used: list[str]) -> bool:
    """Whether pyarrow's columns are the pandas frame's, numbers and dates alike: a `date` column of
    naive timestamps, numeric used columns, unique names, and no stored index but `date` or pandas'
    unnamed one (which the frame would drop)."""
    if "date" not in schema.names or len(set(schema.names)) != len(schema.names):
        return False
    if index not in ([], ["date"]) and not (len(index) == 1 and index[0].startswith("__index_level_")):
        return False
    kinds = [schema.field(name).type for name in used]
    return _naive_timestamps(schema.field("date").type) and all(
        pa.types.is_integer(k) or pa.types.is_floating(k) for k in kinds
    )


def _stored_index(schema: pa.Schema) -> list[str]:
    """The columns pandas stored as the frame's index (a range index is stored as metadata only)."""
    index = (schema.pandas_metadata or {}).get("index_columns", [])
    return [name for name in index if isinstance(name, str)]
