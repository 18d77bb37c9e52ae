"""The sensor requests runs for changed buckets only, each state once; the schedule asks the same."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
from conftest import CSI300, build_store, copy_inputs
from dagster import DagsterInstance, build_schedule_context, build_sensor_context
from pyarrow.parquet import ParquetFile, read_table

from precompute_assets.build.buckets import bucket_keys, bucket_of
from precompute_assets.build.freshness import store_status
from precompute_assets.definitions import defs
from precompute_assets.defs.precompute.schedules import daily_update_schedule
from precompute_assets.defs.precompute.sensors import parquet_input_sensor
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.stock_commit import read_stock_meta

CODES = ("SH600000", "SZ000001", "SH600519", "SZ000538", "SZ000792", "SH601318")


def tick(instance, resources, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    return parquet_input_sensor.evaluate_tick(context)


def test_sensor_requests_one_run_for_the_changed_bucket_only(tmp_path):
    parquet = copy_inputs(CODES, tmp_path / "parquet")
    for code in CODES:  # a store built on data up to 2024
        frame = pd.read_parquet(parquet / f"{code}.parquet")
        frame[frame["date"] < "2025-01-01"].to_parquet(parquet / f"{code}.parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    instance = DagsterInstance.ephemeral()

    first = tick(instance, resources, None)
    assert first.run_requests == [] and first.skip_message

    copy_inputs(["SZ000792"], parquet)  # one file changes: its full history, with 2025 and 2026
    second = tick(instance, resources, first.cursor)
    (request,) = second.run_requests
    assert request.partition_key == bucket_of("SZ000792", 4)
    assert request.tags["precompute/reason"] == "input changed"
    status = store_status(settings)
    assert status.behind == ["SZ000792"] and not status.current

    third = tick(instance, resources, second.cursor)
    assert third.run_requests == []

    job = defs.resolve_job_def("precompute_update_job")
    result = job.execute_in_process(partition_key=request.partition_key, instance=instance, resources=resources)
    assert result.success
    meta = read_stock_meta(StoreLayout(settings.qlib_data_path), "SZ000792")
    assert meta["last_date"] == f"{pd.read_parquet(CSI300 / 'SZ000792.parquet')['date'].max():%Y-%m-%d}"
    assert store_status(settings).current
    assert tick(instance, resources, third.cursor).run_requests == []


def test_schedule_requests_the_stale_buckets(tmp_path):
    parquet = copy_inputs(CODES[:3], tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    context = build_schedule_context(
        instance=DagsterInstance.ephemeral(),
        resources=resources,
        scheduled_execution_time=dt.datetime(2026, 5, 8, 17, 30),
        repository_def=defs.get_repository_def(),
    )
    assert daily_update_schedule.evaluate_tick(context).run_requests in (None, [])
    copy_inputs(["SZ000538"], parquet)  # a new listing
    context = build_schedule_context(
        instance=DagsterInstance.ephemeral(),
        resources=resources,
        scheduled_execution_time=dt.datetime(2026, 5, 8, 17, 30),
        repository_def=defs.get_repository_def(),
    )
    (request,) = daily_update_schedule.evaluate_tick(context).run_requests
    assert request.partition_key == bucket_of("SZ000538", 4)


def test_store_summary_and_freshness_check_follow_the_input(tmp_path):
    from dagster import materialize

    from precompute_assets.defs.precompute import PRECOMPUTE_ASSETS, PRECOMPUTE_CHECKS

    parquet = copy_inputs(CODES[:3], tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    result = materialize([*PRECOMPUTE_ASSETS, *PRECOMPUTE_CHECKS], selection=["store_summary"], resources=resources)
    summary = result.asset_materializations_for_node("store_summary")[0].metadata
    assert summary["stocks"].value == 3 and summary["columns_total"].value == 251
    assert summary["store_current"].value is True and summary["stocks_behind_input"].value == 0
    assert "Worst stocks" in summary["quality_report"].value
    (check,) = result.get_asset_check_evaluations()
    assert check.passed

    copy_inputs(["SZ000538"], parquet)  # a new stock the store does not have yet
    result = materialize([*PRECOMPUTE_ASSETS, *PRECOMPUTE_CHECKS], selection=["store_summary"], resources=resources)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["stocks_behind"].value == 1
    assert "SZ000538" in check.metadata["behind"].value


def test_sensor_leaves_a_bucket_alone_while_a_run_for_it_is_unfinished(tmp_path):
    from dagster import DagsterRun, DagsterRunStatus

    parquet = copy_inputs(CODES[:3], tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    copy_inputs(["SZ000538"], parquet)  # a new listing makes its bucket stale
    bucket = bucket_of("SZ000538", 4)
    instance = DagsterInstance.ephemeral()
    running = DagsterRun(
        job_name="precompute_update_job", status=DagsterRunStatus.STARTED, tags={"dagster/partition": bucket}
    )
    instance.add_run(running)
    assert tick(instance, resources, None).run_requests == []
    instance.report_run_canceled(running)
    (request,) = tick(instance, resources, None).run_requests
    assert request.partition_key == bucket


def test_sensor_leaves_alone_the_buckets_of_an_unfinished_range_run(tmp_path):
    """`make run` runs neighbouring buckets as one range run: none of them may get a second run."""
    from dagster import DagsterRun, DagsterRunStatus

    parquet = copy_inputs(CODES[:3], tmp_path / "parquet")
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    copy_inputs(["SZ000538"], parquet)
    bucket = bucket_of("SZ000538", 4)
    keys = bucket_keys(4)
    instance = DagsterInstance.ephemeral()
    range_run = DagsterRun(
        job_name="precompute_bucket_job",
        status=DagsterRunStatus.STARTED,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
    instance.add_run(range_run)
    assert tick(instance, resources, None).run_requests == []
    instance.report_run_canceled(range_run)
    (request,) = tick(instance, resources, None).run_requests
    assert request.partition_key == bucket


class InputReads:
    """Every open of a file in one folder, seen through Python's audit events (`open`, `os.open`)."""

    def __init__(self) -> None:
        self.folder: str | None = None
        self.paths: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if event == "open" and self.folder and isinstance(args[0], str | os.PathLike):
            path = os.fspath(args[0])
            if path.startswith(self.folder) and path.endswith(".parquet"):
                self.paths.append(path)

    def watch(self, folder) -> list[str]:
        self.folder, self.paths = str(folder), []
        return self.paths


INPUT_READS = InputReads()


def test_a_tick_with_nothing_changed_reads_no_input_file(tmp_path, monkeypatch):
    parquet = copy_inputs(CODES, tmp_path / "parquet")
    written = time.time() - 10  # files not written in the last moments (parquet.RACY_NS: those are hashed each time)
    for path in parquet.glob("*.parquet"):
        os.utime(path, (written, written))
    settings = build_store(parquet, tmp_path / "qlib_data")
    resources = {
        "precompute": PrecomputeSettings(parquet_data_path=str(parquet), qlib_data_path=str(settings.qlib_data_path))
    }
    parquet_reads = []
    monkeypatch.setattr(pq, "ParquetFile", lambda *a, **k: parquet_reads.append(a) or ParquetFile(*a, **k))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: parquet_reads.append(a) or read_table(*a, **k))
    instance = DagsterInstance.ephemeral()
    first = tick(instance, resources, None)

    reads = INPUT_READS.watch(parquet)
    second = tick(instance, resources, first.cursor)
    assert second.run_requests == []
    assert reads == [] and parquet_reads == []

    changed = parquet / "SZ000792.parquet"
    frame = pd.read_parquet(changed)
    frame.iloc[:-1].to_parquet(changed)  # one file changes: it alone is read, once per tick
    os.utime(changed, (written, written))
    reads = INPUT_READS.watch(parquet)
    (request,) = tick(instance, resources, second.cursor).run_requests
    assert request.partition_key == bucket_of("SZ000792", 4)
    assert reads == [str(changed)]
