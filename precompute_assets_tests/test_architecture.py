"""The import contracts in pyproject.toml hold, and they do catch an import that points up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": str(LINT.parent)},
    )


def test_the_tree_keeps_every_import_contract():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("store/layout.py", "from precompute_assets.build import pipeline", "Imports point down"),
        ("indicators/registry.py", "from precompute_assets.indicators import catalog", "Inside indicators"),
        ("build/buckets.py", "import dagster", "The core never imports dagster"),
        ("defs/precompute/jobs.py", "from precompute_assets.defs import operations", "No import cycle"),
    ],
)
def test_an_import_against_the_architecture_breaks_its_contract(tmp_path, module, line, contract):
    copy = tmp_path / "tree"
    shutil.copytree(
        ROOT / "precompute_assets", copy / "precompute_assets", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    path = copy / "precompute_assets" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = lint(copy)
    assert done.returncode != 0
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, done.stdout
