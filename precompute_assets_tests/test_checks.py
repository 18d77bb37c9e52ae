"""The store checks in Dagster: they pass on a materialized bucket, name what an alteration broke, and block.

Partitions are few because conftest sets PRECOMPUTE_BATCHES before `precompute_assets.defs.partitions` loads.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import copy_inputs
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    build_schedule_context,
    define_asset_job,
    materialize,
)

from precompute_assets.build.buckets import bucket_of
from precompute_assets.build.freshness import stale_buckets
from precompute_assets.defs.operations import store_backup
from precompute_assets.defs.partitions import stock_buckets
from precompute_assets.defs.precompute.audit import store_audit_job, store_audit_schedule
from precompute_assets.defs.precompute.bars import stock_bars
from precompute_assets.defs.precompute.calendar import trading_calendar
from precompute_assets.defs.precompute.check_status import failed_store_checks
from precompute_assets.defs.precompute.checks import STORE_CHECKS
from precompute_assets.defs.precompute.families import family_assets
from precompute_assets.defs.precompute.manifest import store_manifest
from precompute_assets.defs.precompute.store import qlib_store
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.store.layout import StoreLayout

CODES = ("SH600000", "SZ000001", "SH600519", "SZ000792", "SZ000538", "SZ302132")
BUCKET = bucket_of("SZ000792", len(stock_buckets.get_partition_keys()))
IN_BUCKET = sorted(c for c in CODES if bucket_of(c, len(stock_buckets.get_partition_keys())) == BUCKET)
BUCKET_ASSETS = [stock_bars, *family_assets, qlib_store]
CHECK_NAMES = {"completeness", "quality", "consistency", "integrity"}


def resources_for(parquet: Path, store: Path) -> dict:
    return {"precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(store))}


def run_bucket(resources: dict, instance: DagsterInstance, extra: list | None = None):
    assert materialize([trading_calendar], resources=resources, instance=instance).success
    assets = [*BUCKET_ASSETS, *(extra or []), *STORE_CHECKS]
    return materialize(assets, partition_key=BUCKET, resources=resources, instance=instance, raise_on_error=False)


def run_checks_only(resources: dict, instance: DagsterInstance):
    """Re-validate a bucket without recomputing it: a job of the checks alone, tagged with the partition."""
    job = define_asset_job("store_checks", selection=AssetSelection.checks(*STORE_CHECKS))
    defs = Definitions(assets=[qlib_store], asset_checks=STORE_CHECKS, jobs=[job], resources=resources)
    return defs.resolve_job_def("store_checks").execute_in_process(
        instance=instance, tags={"dagster/partition": BUCKET}, raise_on_error=False
    )


def evaluations(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("checks")
    parquet = copy_inputs(CODES, root / "parquet")
    resources = resources_for(parquet, root / "qlib_data")
    instance = DagsterInstance.ephemeral()
    return SimpleNamespace(
        root=root, parquet=parquet, resources=resources, instance=instance, result=run_bucket(resources, instance)
    )


def test_the_checks_pass_on_a_materialized_bucket_and_the_backup_follows(bucket):
    assert bucket.result.success and len(IN_BUCKET) >= 2
    found = evaluations(bucket.result)
    assert set(found) == CHECK_NAMES
    for name, evaluation in found.items():
        assert evaluation.passed and evaluation.partition == BUCKET and evaluation.blocking, name
        metadata = {key: value.value for key, value in evaluation.metadata.items()}
        assert metadata["gx_statistics"]["evaluated_expectations"] > 0
        assert metadata["gx_statistics"]["success_percent"] == 100.0
        assert metadata["failing_stocks"] == [] and metadata["failure_count"] == 0
    assert found["completeness"].metadata["stocks_checked"].value == len(IN_BUCKET)

    assert failed_store_checks(bucket.instance) == []
    backup = materialize([store_backup], resources=bucket.resources, instance=bucket.instance)
    metadata = backup.asset_materializations_for_node("store_backup")[0].metadata
    assert metadata["stocks"].value == len(IN_BUCKET)
    assert Path(metadata["path"].value).parent == bucket.root / "backups"


def test_an_altered_stored_value_fails_the_checks_naming_stocks_and_columns(bucket, tmp_path):
    store = tmp_path / "qlib_data"
    shutil.copytree(bucket.root / "qlib_data", store, symlinks=True)
    layout = StoreLayout(store)
    victim, other = IN_BUCKET[-1], IN_BUCKET[0]
    for code, field, value in ((victim, "rsi14", 150.0), (other, "close", 0.5)):
        path = layout.bin_path(code, field)
        data = np.fromfile(path, dtype="<f4")
        data[500] = value
        path.write_bytes(data.tobytes())

    instance = DagsterInstance.ephemeral()
    result = run_checks_only(resources_for(bucket.parquet, store), instance)
    assert not result.success  # blocking checks with ERROR severity fail the run
    found = evaluations(result)
    assert found["completeness"].passed
    failed = {name: {k: v.value for k, v in found[name].metadata.items()} for name in ("quality", "consistency")}
    assert failed["quality"]["failing_stocks"] == [victim] and failed["quality"]["failing_columns"] == ["rsi14"]
    # consistency recomputes a random sample of columns: it always covers the base fields (close), and it
    # may also sample the victim's rsi14, which it must then flag too
    assert other in failed["consistency"]["failing_stocks"] and "close" in failed["consistency"]["failing_columns"]
    assert set(failed["consistency"]["failing_stocks"]) <= {victim, other}
    assert f"| {victim} | rsi14 | outside [0, 100] |" in failed["quality"]["failures"]
    integrity = {k: v.value for k, v in found["integrity"].metadata.items()}
    assert integrity["failing_stocks"] == sorted([victim, other])
    assert {"rsi14", "close"} == set(integrity["failing_columns"])

    assert failed_store_checks(instance) == [f"{name} on {BUCKET}" for name in ("consistency", "integrity", "quality")]
    refused = materialize(
        [store_backup], resources=resources_for(bucket.parquet, store), instance=instance, raise_on_error=False
    )
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert "not backing up a store that failed validation: consistency on" in failure.event_specific_data.error.message


def test_a_failing_check_stops_what_reads_the_bucket(bucket, tmp_path):
    registry = load_registry()
    rsi = registry.get("RSI14")
    registry.add(dataclasses.replace(rsi, compute=lambda bars: rsi.compute(bars) + 200.0), replace=True)
    try:
        result = run_bucket(
            resources_for(bucket.parquet, tmp_path / "qlib_data"), DagsterInstance.ephemeral(), [store_manifest]
        )
    finally:
        registry.add(rsi, replace=True)
    assert not result.success
    quality = evaluations(result)["quality"]
    assert not quality.passed and quality.metadata["failing_stocks"].value == IN_BUCKET
    assert quality.metadata["failing_columns"].value == ["rsi14"]
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("qlib_store") in materialized and AssetKey("store_manifest") not in materialized


def test_a_range_run_records_each_buckets_check_result_so_the_backup_follows(tmp_path):
    """Several buckets in one run (make run's grouping): every bucket gets its own evaluation per check."""
    parquet = copy_inputs(CODES, tmp_path / "parquet")
    resources = resources_for(parquet, tmp_path / "qlib_data")
    instance = DagsterInstance.ephemeral()
    keys = stock_buckets.get_partition_keys()
    assert materialize([trading_calendar], resources=resources, instance=instance).success
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    result = materialize([*BUCKET_ASSETS, *STORE_CHECKS], resources=resources, instance=instance, tags=tags)
    assert result.success
    recorded = [(e.check_name, e.partition) for e in result.get_asset_check_evaluations()]
    assert sorted(recorded) == sorted((name, key) for name in CHECK_NAMES for key in keys)  # none on None
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert all(e.target_materialization_data is not None for e in result.get_asset_check_evaluations())
    assert failed_store_checks(instance) == []
    assert materialize([store_backup], resources=resources, instance=instance).success

    # One damaged bucket in a range: that bucket's checks fail on its own partition, the others pass.
    path = StoreLayout(tmp_path / "qlib_data").bin_path(IN_BUCKET[0], "rsi14")
    data = np.fromfile(path, dtype="<f4")
    data[500] = 150.0
    path.write_bytes(data.tobytes())
    job = define_asset_job("store_checks", selection=AssetSelection.checks(*STORE_CHECKS))
    defs = Definitions(assets=[qlib_store], asset_checks=STORE_CHECKS, jobs=[job], resources=resources)
    rechecked = defs.resolve_job_def("store_checks").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )
    assert not rechecked.success
    outcome = {(e.check_name, e.partition): e.passed for e in rechecked.get_asset_check_evaluations()}
    assert sorted(outcome) == sorted((name, key) for name in CHECK_NAMES for key in keys)
    assert {where for where, passed in outcome.items() if not passed} == {
        ("quality", BUCKET),
        ("integrity", BUCKET),
    } | ({("consistency", BUCKET)} if not outcome[("consistency", BUCKET)] else set())
    assert {f.split(" on ")[1] for f in failed_store_checks(instance)} == {BUCKET}


def test_the_store_audit_finds_damage_in_old_rows_and_marks_it_for_the_next_run(bucket, tmp_path):
    """The weekly audit runs the checks over every bucket in one run; an overwritten old value (which the
    checks after an update do not read) fails integrity on its bucket and is rebuilt by the next run."""
    store = tmp_path / "qlib_data"
    shutil.copytree(bucket.root / "qlib_data", store, symlinks=True)
    resources = resources_for(bucket.parquet, store)
    settings = resources["precompute"].settings
    victim = IN_BUCKET[0]
    path = StoreLayout(store).bin_path(victim, "ma20")
    original = path.read_bytes()
    data = np.frombuffer(original, dtype="<f4").copy()
    data[300] += 0.5  # same size, in range: only a checksum sees it
    path.write_bytes(data.tobytes())

    request = store_audit_schedule(build_schedule_context(scheduled_execution_time=datetime(2026, 12, 5, 6)))
    defs = Definitions(assets=[qlib_store], asset_checks=STORE_CHECKS, jobs=[store_audit_job], resources=resources)
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def("store_audit").execute_in_process(
        instance=instance, tags=request.tags, raise_on_error=False
    )
    assert not result.success
    outcome = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
    keys = stock_buckets.get_partition_keys()
    assert sorted(outcome) == sorted((name, key) for name in CHECK_NAMES for key in keys)
    # the fixture built one bucket: the others' stocks are (rightly) reported missing from the store
    # consistency recomputes a random sample (seeded by the run id): it sees the damage only if it drew it
    sample = outcome[("consistency", BUCKET)].metadata
    drew_victim = victim in sample["sampled_stocks"].value and "ma20" in sample["sampled_columns"].value
    failed = {name for (name, key), e in outcome.items() if not e.passed and key == BUCKET}
    assert failed == {"integrity"} | ({"consistency"} if drew_victim else set())
    assert {name for (name, key), e in outcome.items() if not e.passed and key != BUCKET} <= {"completeness"}
    assert outcome[("integrity", BUCKET)].metadata["failing_stocks"].value == [victim]
    assert stale_buckets(settings)[BUCKET].reason == "damaged store files"

    rerun = run_bucket(resources, instance)
    assert rerun.success and all(e.passed for e in rerun.get_asset_check_evaluations())
    # a run that wrote the bucket checks what it wrote: the rebuilt stock, not its unchanged neighbours
    assert evaluations(rerun)["completeness"].metadata["stocks_checked"].value == 1 < len(IN_BUCKET)
    assert path.read_bytes() == original and BUCKET not in stale_buckets(settings)
