"""The full-market harness runs end to end in --small mode (correctness of the harness only, no timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_full_market_harness_small_mode(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "full_market.py"),
            "--small",
            "--stocks",
            "40",
            "--years",
            "2",
            "--batches",
            "4",
            "--json",
            str(out),
            "--keep-page-cache",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["market"]["stocks"] == 40 and result["market"]["columns"] == 251
    assert result["full_build"]["stock_days_per_second"] > 0 and result["full_build"]["peak_memory_mb"] > 0
    assert result["daily_update"]["ratio_to_full_build"] > 0
    assert result["read"]["stocks"] == 40 and set(result["backtest"]) == {
        "ma_cross",
        "rsi",
        "macd",
        "bollinger",
        "multi_factor",
        "multi_factor_replay",
    }
    assert "| full_build" in done.stdout or "[full_build]" in done.stdout


@pytest.mark.slow
def test_panel_engine_tails_only_harness(tmp_path):
    # the harness of the 5,000-stock tails measurement, on a small market (correctness only, no timings)
    out = tmp_path / "tails.json"
    command = [sys.executable, str(ROOT / "bench" / "panel_engine.py"), "--tails-only", "--stocks", "6"]
    done = subprocess.run(
        [*command, "--years", "1", "--repeat", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"panel_tail", "today_tail"}
    for by_family in results.values():
        assert set(by_family) == {"alpha158", "qlib_stats"}
        for found in by_family.values():
            assert found["stock_days"] == 6 and found["seconds"] > 0 and found["peak_rss_mb"] >= found["rise_mb"] >= 0
    assert "panel / today" in done.stdout or "today / panel" in done.stdout
