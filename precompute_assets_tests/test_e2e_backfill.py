"""End to end: the UI's "Materialize all" backfill through the real webserver and daemon, read back with Qlib.

`dagster dev` runs on 127.0.0.1 with a temporary DAGSTER_HOME (deploy/dagster.yaml); the backfill is
launched with the webserver's own `launchPartitionBackfill` mutation and the parameters the UI sends
(test_e2e_browser.py checks they are the same), the daemon runs it, and Qlib itself (`qlib.init` +
`D.features`) reads the store it leaves.

The sensor, running by default, would build the same buckets beside the backfill (test_e2e_sensor.py
covers it). So that the store holds the backfill's work alone, the services start on an empty input
(the sensor's first tick finds nothing to do), the sensor is switched off as its toggle in the UI does,
and only then do the stocks arrive and the backfill start.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import build_store, copy_inputs
from e2e_services import dagster_dev, read_with_qlib

from precompute_assets.build.buckets import bucket_keys, bucket_of
from precompute_assets.cli.dev import PROJECT_DAEMON
from precompute_assets.defs.precompute.run_progress import PROGRESS_TAG

pytestmark = pytest.mark.e2e

# Real CSI300 data, 2010-2026: every one of the 4 buckets gets a stock, b02 gets two.
CODES = ("SH600519", "SH000300", "SH600000", "SZ000001", "SH601318")
WARM_UP = 60  # rows; RSI14 needs 14, Alpha158's longest window 60

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
STORE_CHECKS = ("completeness", "quality", "consistency", "integrity")
CHECK_EXECUTIONS = """
query Checks($key: AssetKeyInput!, $name: String!) { assetCheckExecutions(assetKey: $key, checkName: $name, limit: 50) {
  runId status partition evaluation { partition } } }
"""

MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename
  ... on AssetNode { assetMaterializations(limit: 200) { runId partition } } } }
"""


def test_materialize_all_backfill_builds_a_store_qlib_reads(tmp_path):
    assert sorted({bucket_of(code, 4) for code in CODES}) == bucket_keys(4)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    store = build_store(parquet, tmp_path / "qlib_data").qlib_data_path  # current for an empty input

    # The backfill policy's own range: every bucket in one range per core, two of two buckets here
    with dagster_dev(tmp_path, parquet, store) as dev:
        dev.quiet_sensor()
        copy_inputs(CODES, parquet)
        assert not (store / "features").exists() or not any((store / "features").iterdir())

        params = dev.materialize_all_params()
        assert params["partitionNames"] == bucket_keys(4)
        selected = {tuple(a["path"]) for a in params["assetSelection"]}
        assert {("trading_calendar",), ("stock_bars",), ("qlib_store",), ("store_manifest",)} <= selected
        assert ("stock_parquet_files",) not in selected  # the observable source is observed, not materialized

        backfill_id = dev.launch_backfill(params)
        backfill = dev.wait_for_backfill(backfill_id, timeout=900)
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        runs = backfill["runs"]
        assert runs and {r["status"] for r in runs} == {"SUCCESS"}, runs
        tags = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
        assert all(t.get("dagster/from_ui") == "true" for t in tags)
        # The buckets ran in ranges, as `make run` runs them: fewer runs than buckets, each bucket in one.
        ranges = sorted((t[RANGE_START], t[RANGE_END]) for t in tags if RANGE_START in t)
        assert ranges == [("b00", "b01"), ("b02", "b03")], tags
        assert not any("dagster/partition" in t for t in tags), "a run of a single bucket"
        # Each range run told its progress: buckets, stocks and time left, in a tag the runs list shows
        progress = [t[PROGRESS_TAG] for t in tags if RANGE_START in t]
        assert all(re.fullmatch(r"\w+: 2/2 buckets, \d+/\d+ stocks; run 100% done, .*~0s left", p) for p in progress)

        # The backfill's own runs materialized every selected asset, every bucket of the partitioned ones.
        nodes = {tuple(n["assetKey"]["path"]): n for n in dev.asset_nodes()}
        run_ids = {r["id"] for r in runs}
        for key in sorted(selected):
            result = dev.graphql(MATERIALIZATIONS, {"key": {"path": list(key)}})["assetNodeOrError"]
            done = {m["partition"] for m in result["assetMaterializations"] if m["runId"] in run_ids}
            expected = set(bucket_keys(4)) if nodes[key]["isPartitioned"] else {None}
            assert done == expected, f"{key}: materialized by the backfill for {done}, expected {expected}"

        assert {r["id"] for r in dev.runs()} == run_ids  # nothing but the backfill ran

        # `make dev`'s daemon (cli.daemon) ran it; its console keeps the runs it submitted and drops the
        # bookkeeping it logs on every iteration (console_noise)
        assert any(PROJECT_DAEMON in proc.cmdline() for proc in psutil.Process(dev.process.pid).children(True))
        log = dev.log_path.read_text(errors="replace")
        assert "Submitted run" in log and "Evaluating asset backfill" not in log

        # Every bucket's check results are recorded on its own partition (none on None), all passed.
        for name in STORE_CHECKS:
            found = dev.graphql(CHECK_EXECUTIONS, {"key": {"path": ["qlib_store"]}, "name": name})
            executions = [e for e in found["assetCheckExecutions"] if e["runId"] in run_ids]
            recorded = sorted(str(e["evaluation"] and e["evaluation"]["partition"]) for e in executions)
            assert recorded == bucket_keys(4), f"{name}: recorded on {recorded}"
            assert {e["status"] for e in executions} == {"SUCCEEDED"}, f"{name}: {executions}"

    features = read_with_qlib(store, list(CODES), ["$close", "$rsi14", "$alpha_001"], tmp_path)
    assert sorted(features.index.get_level_values("instrument").unique()) == sorted(CODES)
    for code in CODES:
        stored = features.xs(code, level="instrument")
        source = pd.read_parquet(parquet / f"{code}.parquet").set_index("date").sort_index()
        assert source.index.isin(stored.index).all(), f"{code}: input dates missing from the store"
        close = stored["$close"].reindex(source.index).to_numpy()
        np.testing.assert_array_equal(close, source["close"].astype(np.float32).to_numpy(), err_msg=code)
        assert stored["$close"].dtype == np.float32
        after = stored.reindex(source.index).iloc[WARM_UP:]
        for field in ("$rsi14", "$alpha_001"):
            assert np.isfinite(after[field]).all(), f"{code} {field}: {after[field].isna().sum()} NaN after warm-up"
        assert stored["$rsi14"].dropna().between(0, 100).all(), code
