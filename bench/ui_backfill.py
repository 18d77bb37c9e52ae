"""The Dagster UI's one click against `make run` on the same input (target: UI at most 1.3x make run).

    .venv/bin/python bench/ui_backfill.py                  # the sample: data/parquet/stock_data (40 stocks)
    .venv/bin/python bench/ui_backfill.py --stocks 500     # 500 synthetic stocks x 3 years

Both build a fresh store on a fresh Dagster instance with 64 buckets and deploy/dagster.yaml:
- `make run`: `python -m precompute_assets.cli.make_run` (backup off), the process's wall time.
- the UI: `make dev`'s `dagster dev` (webserver and the project's daemon, `cli.dev`). The sensor's first tick
  passes on an empty input and it is switched off as its toggle does, the stocks are copied in, and the
  backfill that the `precompute` job's **Materialize all** launches with **All** partitions is sent
  through the webserver's `launchPartitionBackfill`; timed from the launch to the end of its last run.
Prints both, the ratio, each run's times after the launch (created, started, ended), and the
daemon's CPU seconds, and writes JSON to bench/results/ui_backfill_<input>.json.
No assertion on speed: the ratio is the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "precompute_assets_tests"))

BATCHES = 64
SAMPLE = ROOT / "data" / "parquet" / "stock_data"

# Each run's queue and start times, to show where the UI's time goes between the backfill's launch and its end.
RUN_TIMES = """
query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { timestamp runs { id jobName creationTime startTime endTime tags { key value } } } } }
"""


def empty_store(store: Path, parquet: Path) -> None:
    """A store current for an empty input, so that the sensor's first tick finds nothing to do."""
    from precompute_assets.build import pipeline
    from precompute_assets.settings import Settings

    settings = Settings(parquet_data_path=parquet, qlib_data_path=store, batches=BATCHES)
    pipeline.build_in_process(settings)


def time_make_run(source: Path, work: Path) -> dict:
    home = work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PARQUET_DATA_PATH": str(source),
        "QLIB_DATA_PATH": str(work / "qlib_data"),
        "PRECOMPUTE_BATCHES": str(BATCHES),
        "PRECOMPUTE_BACKUP_AFTER_RUN": "0",
    }
    env.pop("PRECOMPUTE_BUCKETS_PER_RUN", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "precompute_assets.cli.make_run"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"make run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    runs = sum(1 for line in done.stdout.splitlines() if line.startswith("[") and " ok " in line)
    return {"seconds": round(seconds, 1), "bucket_runs": runs, "output_tail": done.stdout.splitlines()[-9:]}


def time_ui_backfill(source: Path, work: Path) -> dict:
    from e2e_services import dagster_dev

    parquet, store = work / "parquet", work / "qlib_data"
    parquet.mkdir(parents=True)
    empty_store(store, parquet)
    env = {"PRECOMPUTE_BATCHES": str(BATCHES)}
    with dagster_dev(work, parquet, store, env=env, timeout=600) as dev:
        dev.quiet_sensor(timeout=300)
        for path in sorted(source.glob("*.parquet")):
            shutil.copy(path, parquet / path.name)
        nodes = [n for n in dev.asset_nodes() if "precompute" in n["jobNames"] and not n["isObservable"]]
        params = {
            "tags": [{"key": "dagster/from_ui", "value": "true"}],
            "assetSelection": [
                {"path": n["assetKey"]["path"]} for n in sorted(nodes, key=lambda n: n["assetKey"]["path"])
            ],
            "partitionNames": next(n["partitionKeys"] for n in nodes if n["isPartitioned"]),
            "fromFailure": False,
        }
        started = time.perf_counter()
        backfill_id = dev.launch_backfill(params)
        backfill = dev.wait_for_backfill(backfill_id, timeout=7200)
        seconds = time.perf_counter() - started
        launched = time.time() - seconds
        runs = backfill["runs"]
        timeline = run_timeline(dev.graphql(RUN_TIMES, {"id": backfill_id})["partitionBackfillOrError"], launched)
        daemon_cpu = daemon_cpu_seconds(dev.process.pid)
    tags = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
    return {
        "seconds": round(seconds, 1),
        "status": backfill["status"],
        "runs": len(runs),
        "bucket_runs": sum("dagster/asset_partition_range_start" in t or "dagster/partition" in t for t in tags),
        "assets": sorted("/".join(a["path"]) for a in params["assetSelection"]),
        "timeline": timeline,
        "daemon_cpu_seconds": daemon_cpu,
    }


def daemon_cpu_seconds(dev_pid: int) -> float:
    """CPU seconds the daemon process has used since `make dev` started it (every daemon thread)."""
    import psutil

    for proc in psutil.Process(dev_pid).children(recursive=True):
        if any(part in ("dagster._daemon", "precompute_assets.cli.daemon") for part in proc.cmdline()):
            times = proc.cpu_times()
            return round(times.user + times.system, 1)
    return float("nan")


def run_timeline(backfill: dict, launched: float) -> list[dict]:
    """Each run's seconds after the launch: created (queued), started (its process up), ended."""
    rows = []
    for run in sorted(backfill["runs"], key=lambda r: r["creationTime"]):
        tags = {t["key"]: t["value"] for t in run["tags"]}
        ends = (tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end"))
        what = tags.get("dagster/partition") or "..".join(filter(None, ends))
        rows.append(
            {
                "run": run["id"][:8],
                "partitions": what or "-",
                "created": round(run["creationTime"] - launched, 1),
                "started": round((run["startTime"] or launched) - launched, 1),
                "ended": round((run["endTime"] or launched) - launched, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=0, help="synthetic stocks (0: the 40-stock sample)")
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    label = f"{args.stocks}_synthetic" if args.stocks else "sample"
    out = args.json or ROOT / "bench" / "results" / f"ui_backfill_{label}.json"
    with tempfile.TemporaryDirectory(prefix="ui_backfill_") as tmp:
        work = Path(tmp)
        if args.stocks:
            from precompute_assets.input.synthetic import generate_market

            source = work / "market"
            generate_market(source, args.stocks, f"{2026 - args.years}-01-01", "2025-12-31", seed=2026)
        else:
            source = SAMPLE
        stocks = len(list(source.glob("*.parquet")))
        make_run = time_make_run(source, work / "make_run")
        ui = time_ui_backfill(source, work / "ui")
    result = {
        "input": label,
        "stocks": stocks,
        "buckets": BATCHES,
        "make_run": make_run,
        "ui_backfill": ui,
        "ratio_ui_to_make_run": round(ui["seconds"] / make_run["seconds"], 2),
        "target_ratio": 1.3,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"input            {label}: {stocks} stocks, {BATCHES} buckets")
    print(f"make run         {make_run['seconds']:.1f} s ({make_run['bucket_runs']} bucket runs)")
    print(
        f"UI backfill      {ui['seconds']:.1f} s ({ui['runs']} runs, {ui['bucket_runs']} of them bucket ranges), "
        f"{ui['status']}"
    )
    print(f"ratio            {result['ratio_ui_to_make_run']:.2f} (target <= 1.3)")
    print("UI timeline      seconds after the launch: run created / started / ended")
    for row in ui["timeline"]:
        times = " ".join(f"{row[k]:7.1f}" for k in ("created", "started", "ended"))
        print(f"  {row['run']}  {row['partitions']:<12} {times}")
    print(f"daemon CPU       {ui['daemon_cpu_seconds']} s since make dev started")
    print(f"json             {out}")


if __name__ == "__main__":
    main()
