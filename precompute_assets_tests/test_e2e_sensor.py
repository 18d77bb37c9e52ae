"""End to end: with `dagster dev` running on a built store, one changed parquet file makes the sensor
launch one run, for that file's bucket only, and the store then holds the new rows (read with Qlib)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from conftest import CSI300, build_store, copy_inputs
from e2e_services import SENSOR, dagster_dev, read_with_qlib, wait_for

from precompute_assets.build.buckets import bucket_of

pytestmark = pytest.mark.e2e

CODES = ("SH600519", "SZ000792", "SH000300", "SH600000", "SH601318")
CHANGED = "SZ000792"  # shares its bucket with SH600519
CUTOFF = "2025-01-01"  # the store is first built on the input up to 2024


def feature_digests(store, codes) -> dict[str, str]:
    """One digest per stock over all its feature files (names and bytes)."""
    digests = {}
    for code in codes:
        digest = hashlib.sha1()
        for path in sorted((store / "features" / code.lower()).glob("*.bin")):
            digest.update(path.name.encode() + path.read_bytes())
        digests[code] = digest.hexdigest()
    return digests


def test_sensor_runs_only_the_changed_bucket_and_the_store_follows(tmp_path):
    bucket = bucket_of(CHANGED, 4)
    others = [c for c in CODES if bucket_of(c, 4) != bucket]
    assert bucket_of("SH600519", 4) == bucket and len({bucket_of(c, 4) for c in CODES}) == 4

    parquet = copy_inputs(CODES, tmp_path / "parquet")
    for code in CODES:
        frame = pd.read_parquet(parquet / f"{code}.parquet")
        frame[frame["date"] < CUTOFF].to_parquet(parquet / f"{code}.parquet")
    store = build_store(parquet, tmp_path / "qlib_data").qlib_data_path  # the core pipeline, no Dagster
    before = feature_digests(store, CODES)

    with dagster_dev(tmp_path, parquet, store) as dev:
        # The sensor's first tick finds the store current for its input: it skips and launches nothing.
        first = wait_for("the sensor's first tick", lambda: dev.sensor_ticks(SENSOR), timeout=120)[0]
        assert first["status"] == "SKIPPED" and not first["runIds"], first
        assert dev.runs() == []

        # The vendor delivers 2025-2026 for one stock (rows appended), written beside and renamed in.
        incoming = copy_inputs([CHANGED], tmp_path / "incoming") / f"{CHANGED}.parquet"
        os.replace(incoming, parquet / f"{CHANGED}.parquet")

        def launched():
            ticks = [t for t in dev.sensor_ticks(SENSOR) if t["runIds"]]
            return ticks[0] if ticks else None

        tick = wait_for("the sensor to launch a run", launched, timeout=120, interval=2, on_timeout=dev.log_tail)
        assert len(tick["runIds"]) == 1, tick
        run = wait_for(
            "the sensor's run to finish",
            lambda: next((r for r in dev.runs() if r["status"] in {"SUCCESS", "FAILURE", "CANCELED"}), None),
            timeout=180,
            interval=2,
            on_timeout=dev.log_tail,
        )
        assert run["id"] == tick["runIds"][0] and run["status"] == "SUCCESS", run
        assert run["jobName"] == "precompute_update_job"
        assert run["tags"]["dagster/partition"] == bucket and run["tags"]["precompute/bucket"] == bucket
        assert run["tags"]["dagster/sensor_name"] == SENSOR
        assert run["tags"]["precompute/reason"] == "input changed"

        # A tick after the run sees nothing stale: no other bucket is requested, then or in between.
        wait_for(
            "a sensor tick after the run",
            lambda: [t for t in dev.sensor_ticks(SENSOR) if t["timestamp"] > run["endTime"]],
            timeout=90,
            interval=2,
        )
        later = [t for t in dev.sensor_ticks(SENSOR) if t["timestamp"] > tick["timestamp"]]
        assert all(t["status"] == "SKIPPED" and not t["runIds"] for t in later), later
        assert [r["id"] for r in dev.runs()] == [run["id"]]

    # Only the changed bucket's stocks were rewritten; the stocks of the other buckets are byte-identical.
    after = feature_digests(store, CODES)
    assert {c for c in CODES if after[c] != before[c]} <= {c for c in CODES if bucket_of(c, 4) == bucket}
    assert after[CHANGED] != before[CHANGED]
    assert all(after[c] == before[c] for c in others)

    # Qlib sees the appended rows of the changed stock, equal to the input.
    full = pd.read_parquet(CSI300 / f"{CHANGED}.parquet").set_index("date").sort_index()
    features = read_with_qlib(store, [CHANGED], ["$close", "$rsi14"], tmp_path).xs(CHANGED, level="instrument")
    assert features.index.max() == full.index.max()
    new = full[full.index >= CUTOFF]
    np.testing.assert_array_equal(
        features["$close"].reindex(new.index).to_numpy(), new["close"].astype(np.float32).to_numpy()
    )
    assert np.isfinite(features["$rsi14"].reindex(new.index)).all()
