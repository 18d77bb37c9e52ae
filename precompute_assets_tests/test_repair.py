"""A same-size overwrite (only a checksum sees it) is found by the integrity check and repaired by the next run."""

from __future__ import annotations

import numpy as np
from conftest import build_store, copy_inputs, run_pipeline

from precompute_assets.build.buckets import bucket_of
from precompute_assets.build.freshness import stale_buckets
from precompute_assets.defs.precompute.checks import integrity_marking_repairs
from precompute_assets.store.layout import StoreLayout


def test_overwritten_file_is_marked_then_rebuilt(tmp_path):
    parquet = copy_inputs(("SH600000", "SZ000001", "SH600519"), tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    layout = StoreLayout(settings.qlib_data_path)
    path = layout.bin_path("SZ000001", "rsi14")
    original = path.read_bytes()
    damaged = np.frombuffer(original, dtype="<f4").copy()
    damaged[500] += 1.0
    path.write_bytes(damaged.tobytes())  # same size: only the crc32 tells
    bucket = bucket_of("SZ000001", settings.batches)
    assert stale_buckets(settings) == {}  # sizes alone cannot see it

    (result,) = integrity_marking_repairs(settings, {bucket: None})  # the whole bucket, as the audit judges it
    assert not result.passed and result.failing_stocks == ["SZ000001"]
    assert "rsi14" in result.describe()
    assert stale_buckets(settings)[bucket].reason == "damaged store files"

    run_pipeline(settings, [bucket])
    assert layout.bin_path("SZ000001", "rsi14").read_bytes() == original
    assert all(r.passed for r in integrity_marking_repairs(settings, {bucket: None}))
    assert stale_buckets(settings) == {}
