"""`qrun` runs the store workflow of examples/ as Qlib users run it, on a store of the embedded sample."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from consumers_fixtures import build
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "parquet" / "stock_data"
WORKFLOW = ROOT / "examples" / "workflow_config_lightgbm_store.yaml"
# Qlib's benchmark regularisation is sized for a whole market; on a dozen stocks it grows no tree
# (constant predictions, IC undefined), so only the model's regularisation is lightened here.
LIGHT = {"lambda_l1": 1.0, "lambda_l2": 1.0, "num_leaves": 15, "max_depth": 4, "num_threads": 1, "seed": 7}


@pytest.mark.slow
def test_qrun_store_workflow_prints_ic(tmp_path: Path) -> None:
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for path in sorted(SAMPLE.glob("*.parquet"))[:12]:
        shutil.copy(path, parquet / path.name)
    store = build(parquet, tmp_path / "qlib_data").qlib_data_path
    yaml = YAML(typ="rt")
    config = yaml.load(WORKFLOW.read_text())
    config["task"]["model"]["kwargs"].update(LIGHT)
    workflow = tmp_path / "workflow.yaml"
    with workflow.open("w") as handle:
        yaml.dump(config, handle)
    env = {**os.environ, "QLIB_DATA_PATH": str(store), "PYTHONPATH": str(ROOT), "PARQUET_DATA_PATH": str(parquet)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("qrun")), str(workflow)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "no store at" not in output and "computing" not in output  # read the store, computed nothing
    for name in ("IC", "Rank IC"):
        found = re.search(rf"'{name}': (?:np\.float64\()?([-0-9.e]+|nan)", output)
        assert found, f"{name} not printed:\n{output[-3000:]}"
        assert math.isfinite(float(found.group(1))), found.group(0)
    assert (tmp_path / "mlruns.db").exists()  # the SQLite experiment store of the YAML's exp_manager
