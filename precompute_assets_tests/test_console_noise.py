"""The known third-party noise is silenced at its source, and nothing else is."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

from precompute_assets.console_noise import IMPORT_NOISE, _LineFilter

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
