"""The Definitions load, validate with the dagster CLI, pin the asset graph, and run a partition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import copy_inputs
from dagster import AssetKey, DagsterInstance

from precompute_assets.build.buckets import bucket_of
from precompute_assets.definitions import defs
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader

ROOT = Path(__file__).resolve().parents[1]

# The asset graph, pinned: a change here is a change to lineage, and must be deliberate.
GRAPH = {
    "stock_parquet_files": [],
    "trading_calendar": ["stock_parquet_files"],
    "stock_bars": ["stock_parquet_files", "trading_calendar"],
    "qlib_stats": ["stock_bars"],
    "alpha158": ["stock_bars"],
    "technical": ["stock_bars"],
    "fundamental": ["stock_bars"],
    "qlib_store": ["alpha158", "fundamental", "qlib_stats", "technical"],
    "store_manifest": ["qlib_store"],
    "store_summary": ["store_manifest"],
    "backtest_report": ["store_manifest"],
    "trained_model": ["store_manifest"],
}
PARTITIONED = {"stock_parquet_files", "stock_bars", "qlib_stats", "alpha158", "technical", "fundamental", "qlib_store"}


def test_dagster_definitions_validate_passes():
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-m",
            "precompute_assets.definitions",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_asset_graph_is_the_pinned_one():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert GRAPH.keys() <= keys
    for name, parents in GRAPH.items():
        node = graph.get(AssetKey(name))
        assert sorted(p.to_user_string() for p in node.parent_keys) == sorted(parents), name
        assert (node.partitions_def is not None) == (name in PARTITIONED), name


CHECKS = {"qlib_store": ["completeness", "consistency", "integrity", "quality"], "store_summary": ["store_is_current"]}
JOBS = {
    "calendar_job",
    "manifest_job",
    "precompute_bucket_job",
    "precompute_update_job",
    "store_backup_job",
    "store_cleanup_job",
    "store_restore_job",
    "store_audit",
}
SENSORS = {"parquet_input_sensor": "precompute_update_job"}
SCHEDULES = {
    "daily_update_schedule": "precompute_update_job",
    "store_audit_schedule": "store_audit",
    "store_cleanup": "store_cleanup_job",
}


def test_checks_jobs_sensors_and_schedules_are_the_pinned_ones():
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[str]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), []).append(key.name)
    assert {asset: sorted(names) for asset, names in checks.items()} == CHECKS
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= JOBS
    assert {s.name: s.job_name for s in repository.sensor_defs} == SENSORS
    assert {s.name: s.job_name for s in repository.schedule_defs} == SCHEDULES


def test_family_code_versions_follow_the_registry():
    graph = defs.resolve_asset_graph()
    from precompute_assets.indicators.catalog import family_code_version

    for family in ("qlib_stats", "alpha158", "technical", "fundamental"):
        assert graph.get(AssetKey(family)).code_version == family_code_version(family)


def test_materialize_one_partition_through_the_definitions(tmp_path):
    parquet = copy_inputs(["SH600000", "SZ000001", "SH600519", "SZ000792"], tmp_path / "parquet")
    resources = {"precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(tmp_path / "q"))}
    instance = DagsterInstance.ephemeral()
    calendar_job = defs.resolve_job_def("calendar_job")
    assert calendar_job.execute_in_process(instance=instance, resources=resources).success
    bucket = bucket_of("SZ000792", 4)
    bucket_job = defs.resolve_job_def("precompute_bucket_job")
    result = bucket_job.execute_in_process(partition_key=bucket, instance=instance, resources=resources)
    assert result.success
    store = result.asset_materializations_for_node("qlib_store")[0].metadata
    assert store["stocks_written"].value >= 1
    reader = StoreReader(StoreLayout(tmp_path / "q"))
    assert reader.has_stock("SZ000792")
    assert {"close", "rsi14", "alpha_158", "mean_60", "price_change"} <= set(reader.fields("SZ000792"))


def test_a_transient_error_in_a_bucket_step_is_retried(tmp_path, monkeypatch):
    from dagster import materialize

    import precompute_assets.defs.precompute.bars as bars_asset
    from precompute_assets.defs.precompute import PRECOMPUTE_ASSETS

    parquet = copy_inputs(["SH600000"], tmp_path / "parquet")
    resources = {"precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(tmp_path / "q"))}
    instance = DagsterInstance.ephemeral()
    assert materialize(
        PRECOMPUTE_ASSETS, selection=["trading_calendar"], resources=resources, instance=instance
    ).success
    real, attempts = bars_asset.build_bars, []

    def flaky(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("simulated: NFS server not responding")
        return real(*args, **kwargs)

    monkeypatch.setattr(bars_asset, "build_bars", flaky)
    bucket = bucket_of("SH600000", 4)
    result = materialize(
        PRECOMPUTE_ASSETS, selection=["stock_bars"], partition_key=bucket, resources=resources, instance=instance
    )
    assert result.success and len(attempts) == 2


def test_the_precompute_job_is_the_store_and_backfills_in_ranges():
    """The UI's one job builds the store alone; every partitioned asset runs ranges of `make run`'s size,
    every bucket in one range per core."""
    from precompute_assets.cli.make_run_driver import contiguous_groups
    from precompute_assets.defs.partitions import RUNS_AT_A_TIME, buckets_per_run_setting, stock_buckets

    job = defs.resolve_job_def("precompute")
    assets = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    store = {"trading_calendar", "stock_bars", "qlib_stats", "alpha158", "technical", "fundamental"}
    assert assets == store | {"qlib_store", "store_manifest", "store_summary"}
    checks = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert {"completeness", "quality", "consistency", "integrity", "store_is_current"} <= checks
    graph = defs.resolve_asset_graph()
    size = buckets_per_run_setting()
    buckets = stock_buckets.get_partition_keys()
    assert len(contiguous_groups(buckets, buckets, size)) == RUNS_AT_A_TIME
    for name in PARTITIONED - {"stock_parquet_files"}:
        policy = graph.get(AssetKey(name)).backfill_policy
        assert policy is not None and policy.max_partitions_per_run == size, name
