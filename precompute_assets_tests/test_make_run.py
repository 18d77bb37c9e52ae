"""`make run`'s grouping of stale buckets into range runs, and what it prints."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from precompute_assets.build.buckets import bucket_keys, bucket_of
from precompute_assets.cli.make_run_driver import bucket_ranges, contiguous_groups
from precompute_assets.defs.partitions import (
    BUCKETS_PER_RUN_ENV,
    RUNS_AT_A_TIME,
    buckets_per_run_setting,
    stock_buckets,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "parquet" / "stock_data"

ORDER = bucket_keys(64)


def test_a_whole_build_runs_one_range_of_neighbouring_buckets_per_core(monkeypatch):
    monkeypatch.delenv(BUCKETS_PER_RUN_ENV, raising=False)
    todo = {bucket: "never built" for bucket in ORDER}
    groups = contiguous_groups(sorted(todo), ORDER, buckets_per_run_setting(len(ORDER)))
    assert RUNS_AT_A_TIME == 2 and [len(g) for g in groups] == [32, 32]
    assert [b for g in groups for b in g] == ORDER
    odd = bucket_keys(7)
    assert [len(g) for g in contiguous_groups(odd, odd, buckets_per_run_setting(len(odd)))] == [4, 3]


def test_a_partial_rebuild_still_runs_one_range_per_core(monkeypatch):
    monkeypatch.delenv(BUCKETS_PER_RUN_ENV, raising=False)
    order = stock_buckets.get_partition_keys()
    stale = order[1 : 1 + len(order) // 2]  # half the buckets: one range would hold them all
    half = -(-len(stale) // RUNS_AT_A_TIME)
    assert bucket_ranges(set(stale)) == [tuple(stale[:half]), tuple(stale[half:])]
    assert bucket_ranges({order[0]}) == [(order[0],)]


def test_the_setting_wins_and_gaps_split_ranges(monkeypatch):
    monkeypatch.setenv(BUCKETS_PER_RUN_ENV, "3")
    todo = {bucket: "input changed" for bucket in ORDER[:4] + ORDER[6:8]}
    groups = contiguous_groups(sorted(todo), ORDER, buckets_per_run_setting(len(ORDER)))
    assert groups == [tuple(ORDER[:3]), (ORDER[3],), tuple(ORDER[6:8])]


SILENCED = (
    "ModuleNotFoundError.",  # Qlib's optional models
    "Gym has been unmaintained",  # gym's banner
    "BetaWarning",
    "PreviewWarning",  # Dagster's, for the APIs the project chose
)


@pytest.mark.slow
def test_make_run_on_the_sample_shows_the_projects_lines_and_no_third_party_noise(tmp_path):
    """`make run` on the sample, one stock of it suspended for most of its history: the output holds
    the progress, the project's own NaN-share warning and the summary, and no line of the silenced sources."""
    parquet = tmp_path / "parquet"
    shutil.copytree(SAMPLE, parquet)
    suspended = sorted(parquet.glob("*.parquet"))[10]
    frame = pd.read_parquet(suspended)
    rows = slice(int(len(frame) * 0.3), int(len(frame) * 0.75))
    flat = frame["close"].iloc[rows.start - 1]
    frame.loc[frame.index[rows], ["open", "high", "low", "close"]] = flat  # suspended: flat prices, no volume
    frame.loc[frame.index[rows], "volume"] = 0.0
    frame.to_parquet(suspended)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != BUCKETS_PER_RUN_ENV}
    env |= {
        "DAGSTER_HOME": str(home),
        "PARQUET_DATA_PATH": str(parquet),
        "QLIB_DATA_PATH": str(tmp_path / "qlib_data"),
        "PRECOMPUTE_BACKUP_AFTER_RUN": "0",
        "PYTHONPATH": str(ROOT),
    }
    # its own process, as `make run` is: the definitions read the store's paths once, at import
    done = subprocess.run(
        [sys.executable, "-m", "precompute_assets.cli.make_run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    code = done.returncode
    lines = (done.stdout + done.stderr).splitlines()
    assert code == 0, "\n".join(lines[-80:])
    noise = [line for line in lines if any(source in line for source in SILENCED)]
    assert noise == [], "\n".join(noise[:20])
    assert "=== precompute summary ===" in lines
    assert any(re.search(r"\[\d+/\d+\] b\d+(\.\.b\d+)? ok", line) for line in lines)
    warning = [line for line in lines if " - WARNING - " in line and "quality" in line]
    assert warning and f"quality {bucket_of(suspended.stem.upper(), 4)}: " in warning[0], "\n".join(lines[-80:])
    assert any("NaN share after warm-up above 25%" in line and suspended.stem.upper() in line for line in lines)
