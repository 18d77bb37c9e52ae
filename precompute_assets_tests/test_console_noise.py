"""The known third-party noise is silenced at its source, and nothing else is."""

from __future__ import annotations

import inspect
import io
import subprocess
import sys
import textwrap
from pathlib import Path

from precompute_assets.console_noise import BACKFILL_ITERATION_LINES, IMPORT_NOISE, _LineFilter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = textwrap.dedent(
    """
    import warnings
    import precompute_assets  # installs the filters
    import qlib.contrib.model, gym
    from dagster import BetaWarning, PreviewWarning
    warnings.warn("Function `observable_source_asset` is currently in beta, and may change", BetaWarning)
    warnings.warn("Some other API is currently in preview", PreviewWarning)
    warnings.warn("the project's own warning", UserWarning)
    print("the project's own line")
    """
)


def test_a_fresh_process_shows_only_what_is_not_known_noise():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "ModuleNotFoundError" not in output and "Gym has been unmaintained" not in output
    assert "observable_source_asset" not in output
    assert "Some other API is currently in preview" in output  # not on the list: it shows
    assert "the project's own warning" in output and "the project's own line" in done.stdout


def test_the_line_filter_passes_every_other_line_through():
    out = io.StringIO()
    qlib = next(n for n in IMPORT_NOISE if n.module == "qlib.contrib.model")
    stream = _LineFilter(out, qlib.lines)
    stream.write("ModuleNotFoundError. XGBModel is skipped(optional: maybe installing xgboost can fix it).\n")
    stream.write("ModuleNotFoundError: No module named 'precompute_assets.plugin'\nhalf a ")
    stream.write("line\n")
    stream.write("ModuleNotFoundError.  PyTorch models are skipped (optional: maybe installing pytorch can fix it).\n")
    stream.write("no newline at the end")
    stream.flush()
    assert (
        out.getvalue()
        == "ModuleNotFoundError: No module named 'precompute_assets.plugin'\nhalf a line\nno newline at the end\n"
    )


DAEMON_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import precompute_assets  # installs the filters
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")
    daemon = logging.getLogger("dagster.daemon.BackfillDaemon")
    daemon.info("Evaluating asset backfill abcdefgh")
    daemon.info("No asset partitions to request.")
    daemon.info("Asset backfill abcdefgh completed iteration with status BulkActionStatus.REQUESTED.")
    daemon.info("Backfill iteration summary:\\n**Assets materialized since last iteration:**\\nNone")
    daemon.info("Submitted run 1234 for assets/checks qlib_store with tags {}")
    daemon.info("Asset backfill abcdefgh completed iteration with status BulkActionStatus.COMPLETED_SUCCESS.")
    daemon.warning("Evaluating asset backfill abcdefgh took too long")
    logging.getLogger("dagster.daemon.SensorDaemon").info("No asset partitions to request.")
    """
)


def test_the_backfill_daemon_keeps_what_happened_and_drops_its_per_iteration_bookkeeping():
    done = subprocess.run([sys.executable, "-c", DAEMON_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "INFO Submitted run 1234 for assets/checks qlib_store with tags {}",
        "INFO Asset backfill abcdefgh completed iteration with status BulkActionStatus.COMPLETED_SUCCESS.",
        "WARNING Evaluating asset backfill abcdefgh took too long",
        "INFO No asset partitions to request.",
    ]


def test_every_silenced_backfill_line_is_one_dagster_writes():
    """The filter's texts are Dagster's own (its asset backfill module), so a reworded line would show."""
    import dagster._core.execution.asset_backfill as asset_backfill

    source = inspect.getsource(asset_backfill)
    for start in BACKFILL_ITERATION_LINES:
        assert start.rstrip(" ") in source, start
    assert "completed iteration with status {updated_backfill.status}." in source
