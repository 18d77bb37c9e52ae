"""Real Dagster services for the end-to-end tests: `make dev`'s `dagster dev` (cli.dev: Dagster's, with
the project's daemon) on 127.0.0.1, a temporary DAGSTER_HOME, a GraphQL client, and Qlib reads in a
fresh process.

Every service runs in its own process group (`start_new_session`), so stopping it ends the webserver,
the daemon, the code server and every run worker they started, even when a test fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEV = [sys.executable, "-m", "precompute_assets.cli.dev"]  # what `make dev` runs
BATCHES = "4"
LOCATION = "precompute_assets.definitions"  # workspace.yaml's python_module
SENSOR = "parquet_input_sensor"
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0, on_timeout=None) -> Any:
    """Call `probe` until it returns something truthy; fail with `what` (and `on_timeout()`) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


class GraphQLError(AssertionError):
    pass


@dataclass
class GraphQL:
    """The webserver's `/graphql` endpoint, as the UI talks to it."""

    url: str

    def __call__(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise GraphQLError(json.dumps(payload["errors"], indent=1)[:4000])
        return payload["data"]


LOCATIONS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } ... on PythonError { message } } }
"""

ASSET_NODES = """
query { assetNodes { assetKey { path } groupName isMaterializable isObservable isExecutable isPartitioned jobNames
  partitionKeys } }
"""

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { id status ticks(limit: 50) { id status timestamp endTimestamp
    runIds skipReason error { message } } } } ... on PythonError { message } } }
"""

# The UI's sensor toggle (ui-core/src/sensors/SensorMutations.tsx, STOP_SENSOR_MUTATION).
STOP_SENSOR = """
mutation StopRunningSensor($id: String!) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }
"""

# The UI's own mutation (ui-core/src/instance/backfill/BackfillUtils.tsx, LAUNCH_PARTITION_BACKFILL_MUTATION).
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PythonError { message stack }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename
  ... on PartitionBackfill { id status numPartitions isAssetBackfill assetSelection { path }
    error { message } runs { id status tags { key value } } }
  ... on PythonError { message } } }
"""

RUNS = """
query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { id status jobName startTime endTime tags { key value } } } ... on PythonError { message } } }
"""


@dataclass
class DagsterDev:
    """`dagster dev` (webserver + daemon) for one test: its port, home, paths and log."""

    root: Path
    parquet: Path
    store: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def log_path(self) -> Path:
        return self.root / "dagster_dev.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql(self) -> GraphQL:
        return GraphQL(f"{self.url}/graphql")

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "PARQUET_DATA_PATH": str(self.parquet),
            "QLIB_DATA_PATH": str(self.store),
            "PRECOMPUTE_BATCHES": BATCHES,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no dagster dev log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def start(self, timeout: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "deploy" / "dagster.yaml", self.home / "dagster.yaml")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*DEV, "-h", "127.0.0.1", "-p", str(self.port), "-w", "workspace.yaml"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends everything it started
            )
        wait_for("the webserver and the code location", self._location_loaded, timeout, on_timeout=self.log_tail)

    def _location_loaded(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {self.process.returncode}\n{self.log_tail()}")
        try:
            workspace = self.graphql(LOCATIONS, timeout=10)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False
        entries = workspace.get("locationEntries") or []
        for entry in entries:
            error = entry.get("locationOrLoadError") or {}
            if error.get("__typename") == "PythonError":
                raise AssertionError(f"code location {entry['name']} failed to load: {error['message']}")
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left of it (and any straggler)."""
        if self.process is None:
            return
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        _, alive = psutil.wait_procs(descendants, timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None

    # --- what the UI does and shows ---------------------------------------------------------------

    def asset_nodes(self) -> list[dict]:
        return self.graphql(ASSET_NODES)["assetNodes"]

    def materialize_all_params(self) -> dict:
        """What the global asset graph's "Materialize all…" button sends once "All" partitions are chosen
        in its dialog (dagster-webserver 1.13, captured from the browser by test_e2e_browser.py).

        The button takes every executable, non-observable asset (`optionsForExecuteButton`). They all
        share the hidden `__ASSET_JOB` and one partitions definition (unpartitioned assets do not count),
        so the dialog launches an asset backfill with the chosen `partitionNames`; it sends
        `allPartitions: true` instead only when the selection's roots have different partitions
        definitions (its "pureAll" target), which this graph never has.
        """
        nodes = [n for n in self.asset_nodes() if n["isExecutable"] and not n["isObservable"]]
        partitions = next(n["partitionKeys"] for n in nodes if n["isPartitioned"])
        return {
            "tags": [{"key": "dagster/from_ui", "value": "true"}],
            "assetSelection": [
                {"path": n["assetKey"]["path"]} for n in sorted(nodes, key=lambda n: n["assetKey"]["path"])
            ],
            "partitionNames": partitions,
            "fromFailure": False,
        }

    def launch_backfill(self, params: dict) -> str:
        result = self.graphql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", json.dumps(result, indent=1)
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        result = self.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        assert result["__typename"] == "PartitionBackfill", result
        return result

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> dict:
        """The backfill once it and every run it launched have finished."""

        def done() -> dict | None:
            backfill = self.backfill(backfill_id)
            runs_done = all(r["status"] in FINISHED_RUN for r in backfill["runs"])
            return backfill if backfill["status"] in FINISHED_BACKFILL and runs_done else None

        return wait_for(
            f"backfill {backfill_id}",
            done,
            timeout,
            interval=2,
            on_timeout=lambda: json.dumps(self.backfill(backfill_id), indent=1)[:3000] + "\n" + self.log_tail(),
        )

    def runs(self, **filters: Any) -> list[dict]:
        """Runs, newest first, with their tags as a dict; not those of the daily schedules, which launch
        on the clock (17:30 Asia/Shanghai, 03:30) and may fall inside a test."""
        result = self.graphql(RUNS, {"filter": filters})["runsOrError"]
        assert result["__typename"] == "Runs", result
        for run in result["results"]:
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return [r for r in result["results"] if "dagster/schedule_name" not in r["tags"]]

    def sensor(self, name: str) -> dict:
        selector = {"repositoryName": "__repository__", "repositoryLocationName": LOCATION, "sensorName": name}
        result = self.graphql(SENSOR_QUERY, {"selector": selector})["sensorOrError"]
        assert result["__typename"] == "Sensor", result
        return result

    def sensor_ticks(self, name: str) -> list[dict]:
        """The sensor's finished ticks (not the one in flight), oldest first."""
        ticks = self.sensor(name)["sensorState"]["ticks"]
        return sorted((t for t in ticks if t["status"] != "STARTED"), key=lambda t: t["timestamp"])

    def stop_sensor(self, name: str) -> None:
        """Switch a sensor off, as its toggle in the UI does."""
        state_id = self.sensor(name)["sensorState"]["id"]
        result = self.graphql(STOP_SENSOR, {"id": state_id})["stopSensor"]
        assert result["__typename"] == "StopSensorMutationResult", result
        assert result["instigationState"]["status"] == "STOPPED", result

    def quiet_sensor(self, timeout: float = 120) -> None:
        """Let the parquet sensor's first tick pass (it must find nothing to do), then switch it off.

        For tests whose store must hold one launch's work alone: started on an empty input with a store
        current for it, the sensor launches nothing before it is off, and input copied in afterwards is
        left to what the test launches.
        """
        first = wait_for("the sensor's first tick", lambda: self.sensor_ticks(SENSOR), timeout, 1, self.log_tail)
        assert first[0]["status"] == "SKIPPED" and not first[0]["runIds"], first
        self.stop_sensor(SENSOR)
        assert self.runs() == []


@contextlib.contextmanager
def dagster_dev(
    root: Path, parquet: Path, store: Path, timeout: float = 180, env: dict[str, str] | None = None
) -> Iterator[DagsterDev]:
    """`dagster dev` for the duration of the block, stopped (process group and all) on the way out."""
    services = DagsterDev(root=root, parquet=parquet, store=store, extra_env=env or {})
    try:
        services.start(timeout=timeout)
        yield services
    finally:
        services.stop()


_QLIB_READ = textwrap.dedent(
    """
    import json, sys
    import qlib
    from qlib.constant import REG_CN
    from qlib.data import D

    store, out, codes, fields = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    qlib.init(provider_uri=store, region=REG_CN, kernels=1, expression_cache=None, dataset_cache=None)
    frame = D.features(codes, fields, freq="day")
    frame.to_pickle(out)
    """
)


def read_with_qlib(store: Path, codes: list[str], fields: list[str], workdir: Path):
    """`qlib.init(provider_uri=store)` and `D.features(codes, fields)` in a fresh interpreter, as a user
    would (Qlib's configuration is process-global; this keeps the test process's Qlib untouched)."""
    import pandas as pd

    out = workdir / "qlib_features.pkl"
    done = subprocess.run(
        [sys.executable, "-c", _QLIB_READ, str(store), str(out), json.dumps(codes), json.dumps(fields)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return pd.read_pickle(out)
