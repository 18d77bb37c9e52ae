"""The compiled bin-file reads (`store.bin_columns`) and the panel and grid built on them, against
numpy's own reading of the same files (`np.fromfile`) on files of every shape the store can hold:
different first rows, a torn tail, a header alone, an empty file, a missing file, a field reaching
past the probed rows, and instrument spans that cut a stock's rows."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precompute_assets.store.bin_checksums import check_files
from precompute_assets.store.bin_columns import MISSING, Paths, read_into_grid, read_into_rows
from precompute_assets.store.calendar import write_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader, read_grid, read_panel

DAYS = 40


def _write(path: Path, first: int, values: np.ndarray, torn: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.concatenate([[np.float32(first)], values.astype("<f4")]).astype("<f4").tobytes() + torn)


def _numpy_window(path: Path, lo: int, hi: int) -> dict[int, np.float32]:
    """Calendar position -> value for the file's values on [lo, hi], as numpy reads the file."""
    data = np.fromfile(path, dtype="<f4") if path.exists() else np.empty(0, "<f4")
    if data.size < 2:
        return {}
    first = int(data[0])
    return {first + i: v for i, v in enumerate(data[1:]) if lo <= first + i <= hi}


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    paths = [tmp_path / f"f{i}.bin" for i in range(6)]
    _write(paths[0], 0, rng.normal(size=DAYS).astype(np.float32))
    _write(paths[1], 7, rng.normal(size=20).astype(np.float32), torn=b"\x01\x02")  # torn tail
    _write(paths[2], 12, np.empty(0, np.float32))  # a header alone
    paths[3].write_bytes(b"")  # empty
    _write(paths[5], 30, np.array([1.5, np.nan, -2.0], np.float32))  # paths[4] is missing
    return paths


@pytest.mark.parametrize(("lo", "hi"), [(0, DAYS - 1), (5, 31), (31, 31)])
def test_grid_reads_what_numpy_reads(files: list[Path], lo: int, hi: int) -> None:
    out = np.full((hi - lo + 1, len(files)), np.nan, np.float32)
    spans = read_into_grid(Paths.of([str(p) for p in files]), lo, hi, out)
    assert list(np.flatnonzero(spans.first == MISSING)) == [4]
    for j, path in enumerate(files):
        expected = np.full(hi - lo + 1, np.nan, np.float32)
        for position, value in _numpy_window(path, lo, hi).items():
            expected[position - lo] = value
        np.testing.assert_array_equal(out[:, j], expected)
        assert spans.count[j] == len(_numpy_window(path, lo, hi))


def test_rows_take_each_files_values_at_its_positions(files: list[Path]) -> None:
    lo, hi = 2, 35
    wanted = [np.arange(2, 36), np.array([3, 8, 9, 26, 27, 28]), np.arange(12, 20), np.arange(0), np.arange(5, 9)]
    wanted.append(np.array([30, 31, 32, 33]))
    starts = np.zeros(len(wanted) + 1, np.int64)
    np.cumsum([len(w) for w in wanted], out=starts[1:])
    positions = np.concatenate(wanted).astype(np.int64)
    rows = np.random.default_rng(5).permutation(len(positions)).astype(np.int64)
    out = np.full(len(positions), np.nan, np.float32)
    read_into_rows(Paths.of([str(p) for p in files]), lo, hi, positions, starts, rows, out)
    for j, path in enumerate(files):
        values = _numpy_window(path, lo, hi)
        for k in range(starts[j], starts[j + 1]):
            expected = values.get(int(positions[k]), np.float32(np.nan))
            np.testing.assert_array_equal(out[rows[k]], expected)


def test_panel_and_grid_match_numpy_reads_of_a_store(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path / "qlib_data")
    calendar = pd.bdate_range("2020-01-01", periods=DAYS)
    write_calendar(layout, calendar)
    rng = np.random.default_rng(11)
    shapes = {"sh600000": (0, DAYS), "sh600001": (10, 25), "sz000002": (20, 20)}
    for code, (first, rows) in shapes.items():
        for name in ("close", "a", "b"):
            _write(layout.features_dir / code / f"{name}.day.bin", first, rng.normal(size=rows).astype(np.float32))
    _write(layout.features_dir / "sh600001" / "b.day.bin", 5, rng.normal(size=35).astype(np.float32))  # wider
    (layout.features_dir / "sz000002" / "a.day.bin").unlink()
    reader = StoreReader(layout)
    codes, fields = ["SH600000", "SH600001", "SZ000002"], ["a", "b"]
    spans = {"SH600000": [(calendar[3], calendar[12]), (calendar[30], calendar[35])]}

    panel = read_panel(reader, codes, fields, calendar[2], calendar[38], spans=spans)
    frame = panel.frame(fields)
    assert panel.missing == [("SZ000002", "a")]
    expected = []
    for code in codes:
        cols = {
            n: _numpy_window(layout.features_dir / code.lower() / f"{n}.day.bin", 2, 38) for n in ["close", *fields]
        }
        days = sorted(set().union(*(c.keys() for c in cols.values())))  # the probe's rows, widened by b's
        if code in spans:
            days = [d for d in days if any(a <= calendar[d] <= b for a, b in spans[code])]
        for d in days:
            expected.append((calendar[d], code, *(cols[n].get(d, np.nan) for n in fields)))
    reference = pd.DataFrame(expected, columns=["datetime", "instrument", *fields]).set_index(
        ["datetime", "instrument"]
    )
    reference = reference.sort_index().astype(np.float32)
    pd.testing.assert_frame_equal(frame, reference, check_names=False, check_index_type=False)

    grid = read_grid(reader, codes, fields, calendar[2], calendar[38])
    for k, name in enumerate(fields):
        for j, code in enumerate(codes):
            column = np.full(37, np.nan, np.float32)
            for d, v in _numpy_window(layout.features_dir / code.lower() / f"{name}.day.bin", 2, 38).items():
                column[d - 2] = v
            np.testing.assert_array_equal(grid.values[k][:, j], column)


def test_sizes_and_continued_crc32s_of_many_files_are_zlibs(tmp_path):
    rng = np.random.default_rng(7)
    paths, expected, offsets, before, wanted = [], [], [], [], []
    for i in range(150):  # more files than are opened at once
        data = rng.bytes(int(rng.integers(0, 12_000)))
        path = tmp_path / f"f{i}.day.bin"
        path.write_bytes(data)
        offset = int(rng.integers(0, len(data) + 1))
        wrong_size = i % 9 == 0
        paths.append(str(path))
        expected.append(len(data) + 4 if wrong_size else len(data))
        offsets.append(offset)
        before.append(zlib.crc32(data[:offset]))
        wanted.append(-1 if wrong_size else zlib.crc32(data[offset:], before[-1]))
    paths.append(str(tmp_path / "missing.day.bin"))
    expected.append(4), offsets.append(0), before.append(0), wanted.append(-1)
    checked = check_files(Paths.of(paths), np.array(expected), np.array(offsets), np.array(before))
    assert checked.crc.tolist() == wanted
    assert checked.size.tolist() == [os.path.getsize(p) for p in paths[:-1]] + [MISSING]
