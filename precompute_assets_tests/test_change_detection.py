"""Change detection reads only what changed: an input file whose size and modification time its
stock recorded costs a `stat`, a changed file is read once, a touched but unchanged one is hashed only."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from conftest import CSI300, build_store, require_refdata, run_pipeline
from test_incremental import CUT, assert_within_one_ulp, write_cut

from precompute_assets.build import pipeline, update_plan
from precompute_assets.build.buckets import bucket_keys
from precompute_assets.indicators.registry import FAMILIES
from precompute_assets.input import parquet as parquet_input
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader

BATCHES = 2


def _age(path, seconds: float) -> None:
    """Set a file's times in the past, as an evening's files are by the time the update runs."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _count_content_reads(monkeypatch) -> Counter:
    """Count, by file name, every read of an input file's content through the input module."""
    reads: Counter = Counter()
    real_open, real_read_table, real_parquet_file = open, pq.read_table, pq.ParquetFile

    def counted_open(file, *args, **kwargs):
        if str(file).endswith(".parquet"):
            reads[os.path.basename(file)] += 1
        return real_open(file, *args, **kwargs)

    def counted_read_table(source, *args, **kwargs):
        if isinstance(source, str | os.PathLike):
            reads[os.path.basename(source)] += 1
        return real_read_table(source, *args, **kwargs)

    def counted_parquet_file(source, *args, **kwargs):
        if isinstance(source, str | os.PathLike):  # not bytes already read (and counted) through `open`
            reads[os.path.basename(source)] += 1
        return real_parquet_file(source, *args, **kwargs)

    monkeypatch.setattr(parquet_input, "open", counted_open, raising=False)
    monkeypatch.setattr(parquet_input.pq, "read_table", counted_read_table)
    monkeypatch.setattr(parquet_input.pq, "ParquetFile", counted_parquet_file)
    return reads


def _update_buckets(settings: Settings) -> dict[str, dict]:
    reports = {}
    for bucket in bucket_keys(settings.batches):
        pipeline.build_bars(settings, bucket)
        for family in FAMILIES:
            pipeline.build_family(settings, bucket, family)
        reports[bucket] = pipeline.write_bucket(settings, bucket, FAMILIES).metadata
    return reports


def test_an_update_reads_the_changed_file_only(tmp_path, monkeypatch):
    require_refdata()
    codes = sorted(p.stem for p in CSI300.glob("*.parquet"))[2:6]
    changed, touched = codes[0], codes[1]
    parquet = tmp_path / "parquet"
    write_cut(codes, parquet, CUT)
    for code in codes:
        _age(parquet / f"{code}.parquet", 3600)
    settings = Settings(parquet, tmp_path / "store", BATCHES)
    run_pipeline(settings)

    # A new week for one stock: the calendar step reads that file's dates, the bucket steps its
    # content once, and no other file is read at all.
    write_cut([changed], parquet, CUT + pd.Timedelta(days=7))
    _age(parquet / f"{changed}.parquet", 1800)
    parquet_input._hashed.clear()  # a new run's process: nothing known but what the store recorded
    parquet_input._cache.clear()
    reads = _count_content_reads(monkeypatch)
    pipeline.build_calendar(settings)
    assert dict(reads) == {f"{changed}.parquet": 1}
    reads.clear()
    work = _update_buckets(settings)
    assert dict(reads) == {f"{changed}.parquet": 1}
    assert sum(r["stocks_updated"] for r in work.values()) == 1
    assert sum(r["stocks_unchanged"] for r in work.values()) == len(codes) - 1
    pipeline.build_manifest(settings)

    # The same bytes with a new modification time: hashed (one read), not rebuilt, nothing written.
    before = (parquet / f"{touched}.parquet").read_bytes()
    _age(parquet / f"{touched}.parquet", 900)
    assert (parquet / f"{touched}.parquet").read_bytes() == before
    reads.clear()
    parquet_input._hashed.clear()
    parquet_input._cache.clear()
    work = _update_buckets(settings)
    assert dict(reads) == {f"{touched}.parquet": 1}
    assert sum(r["stocks_unchanged"] for r in work.values()) == len(codes)
    assert sum(r["rows_written"] for r in work.values()) == 0
    # its new stat is recorded: the next run reads nothing at all
    reads.clear()
    parquet_input._hashed.clear()
    _update_buckets(settings)
    assert dict(reads) == {}
    monkeypatch.undo()

    # What the update stored equals a fresh build of the final input.
    fresh = build_store(parquet, tmp_path / "fresh", BATCHES)
    incremental, rebuilt = (
        StoreReader(StoreLayout(settings.qlib_data_path)),
        StoreReader(StoreLayout(fresh.qlib_data_path)),
    )
    for code in codes:
        fields = rebuilt.fields(code)
        a, b = incremental.read(code, fields), rebuilt.read(code, fields)
        assert a.index.equals(b.index), code
        for field in fields:
            assert_within_one_ulp(a[field].to_numpy(np.float32), b[field].to_numpy(np.float32), f"{code}.{field}")


def test_restated_history_is_seen_from_the_recorded_digest(tmp_path, monkeypatch):
    """A restated value on a stored day rebuilds the stock, found from the recorded digest alone."""
    require_refdata()
    codes = sorted(p.stem for p in CSI300.glob("*.parquet"))[2:4]
    parquet = tmp_path / "parquet"
    write_cut(codes, parquet, CUT)
    settings = Settings(parquet, tmp_path / "store", BATCHES)
    run_pipeline(settings)

    write_cut(codes, parquet, CUT + pd.Timedelta(days=7))
    frame = pd.read_parquet(parquet / f"{codes[0]}.parquet")
    frame.loc[frame.index[50], "close"] *= 1.0001
    frame.to_parquet(parquet / f"{codes[0]}.parquet")
    pipeline.build_calendar(settings)
    bin_reads: Counter = Counter()
    real_read_bin = update_plan.read_bin

    def counted_read_bin(path):
        bin_reads[Path(path).parent.name] += 1
        return real_read_bin(path)

    monkeypatch.setattr(update_plan, "read_bin", counted_read_bin)
    work = _update_buckets(settings)
    assert sum(r["stocks_rebuilt"] for r in work.values()) == 1
    assert sum(r["stocks_updated"] for r in work.values()) == 1
    # only the restated stock's stored `close` is read, to name any stored day the file lost
    assert set(bin_reads) <= {codes[0].lower()}
