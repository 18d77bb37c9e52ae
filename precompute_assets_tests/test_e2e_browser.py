"""End to end in a browser: headless Chromium (Debian's package, driven by Playwright) opens the Dagster UI,
clicks "Materialize all", launches the backfill over all buckets and sees it succeed.

As in test_e2e_backfill.py, the services start on an empty input and the sensor is switched off
before the stocks arrive, so the backfill alone builds the store (and the screenshots show its work).

Screenshots go to `tmp_path/screenshots`, or to `$E2E_SCREENSHOT_DIR` when set (the README's images:
`E2E_SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest precompute_assets_tests/test_e2e_browser.py`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import build_store, copy_inputs
from e2e_services import ROOT, dagster_dev

from precompute_assets.build.buckets import bucket_keys

pytestmark = pytest.mark.e2e

CODES = ("SH600519", "SH000300", "SH600000", "SH601318")  # one real stock per bucket
VIEWPORT = {"width": 1600, "height": 1000}


def chromium() -> str:
    """Debian's Chromium (`apt-get install chromium`; .ci/run installs it); Playwright downloads nothing."""
    path = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
    if not path:
        pytest.skip("no Chromium: install Debian's package (apt-get install -y chromium), as .ci/run does")
    return path


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("E2E_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder = folder if folder.is_absolute() else ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_materialize_all_in_the_ui_runs_every_bucket(tmp_path):
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (dev extras) is missing")
    shots = screenshot_dir(tmp_path)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    store = build_store(parquet, tmp_path / "qlib_data").qlib_data_path  # current for an empty input

    with dagster_dev(tmp_path, parquet, store) as dev:
        dev.quiet_sensor()
        copy_inputs(CODES, parquet)
        groups = sorted({n["groupName"] for n in dev.asset_nodes()})
        graph_url = f"{dev.url}/asset-groups?expanded=" + ",".join(f"global@global:{g}" for g in groups)
        sent: list[dict] = []

        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(30_000)

                def record_launch(request):
                    if "/graphql" in request.url and request.method == "POST":
                        body = request.post_data_json or {}
                        if body.get("operationName") == "LaunchPartitionBackfill":
                            sent.append(body["variables"]["backfillParams"])

                page.on("request", record_launch)

                # The global asset graph ("Lineage" in the left navigation), every group expanded.
                page.goto(graph_url, wait_until="networkidle")
                skip_welcome(page)
                materialize = page.get_by_role("button", name="Materialize all")
                sync_api.expect(materialize).to_be_enabled()
                materialize.click()

                # The dialog: choose "All" partitions (it opens with none chosen), then launch the backfill.
                dialog = page.get_by_role("dialog")
                dialog.get_by_role("button", name="All", exact=True).click()
                sync_api.expect(dialog.get_by_text(f"{len(bucket_keys(4))} partitions")).to_be_visible()
                page.screenshot(path=str(shots / "materialize_dialog.png"))
                dialog.get_by_role("button", name="Launch backfill").click()

                toast = page.get_by_text("Created backfill")
                sync_api.expect(toast).to_be_visible()
                backfill_id = re.search(r"Created backfill\s+(\w+)", toast.inner_text()).group(1)
                page.get_by_text("View", exact=True).click()
                page.wait_for_url(f"**/runs/b/{backfill_id}**")

                # The backfill page polls; its status tag turns from "In progress" to "Succeeded".
                status = page.locator("xpath=//*[normalize-space(text())='Status']/following-sibling::*[1]")
                sync_api.expect(status).to_have_text("In progress")
                dev.wait_for_backfill(backfill_id, timeout=360)
                sync_api.expect(status).to_have_text("Succeeded", timeout=60_000)
                page.reload(wait_until="networkidle")  # without the launch toast
                sync_api.expect(status).to_have_text("Succeeded")
                page.screenshot(path=str(shots / "precompute_run.png"))

                # One bucket's run: its steps, and the store step's log and metadata.
                backfill = dev.backfill(backfill_id)
                # (a range of buckets since the assets' backfill policy; its first bucket b00, or b00 alone)
                firsts = (
                    {"key": "dagster/asset_partition_range_start", "value": "b00"},
                    {"key": "dagster/partition", "value": "b00"},
                )
                run = next(r for r in backfill["runs"] if any(tag in r["tags"] for tag in firsts))
                page.set_viewport_size({"width": VIEWPORT["width"], "height": 1200})
                page.goto(f"{dev.url}/runs/{run['id']}", wait_until="networkidle")
                sync_api.expect(page.get_by_text("Success", exact=True).first).to_be_visible()
                page.get_by_placeholder("Filter…").fill("step:qlib_store")
                sync_api.expect(page.get_by_text('Started execution of step "qlib_store"')).to_be_visible()
                page.screenshot(path=str(shots / "bucket_run.png"))
                page.set_viewport_size(VIEWPORT)

                # The graph again, every asset now materialized: tree sidebar hidden, fitted to the canvas
                # (a double click on the background), one step out so that the group titles show.
                page.goto(graph_url, wait_until="networkidle")
                page.get_by_role("button", name="panel_show_right", exact=True).click()  # "Hide sidebar"
                page.mouse.dblclick(260, VIEWPORT["height"] - 30)  # the empty bottom-left corner of the canvas
                page.wait_for_timeout(1_000)
                page.get_by_role("button", name="zoom_out", exact=True).click()
                page.wait_for_timeout(1_500)
                for node in ("trading_calendar", "stock_bars", "qlib_store", "store_manifest"):
                    sync_api.expect(page.get_by_text(node, exact=True).first).to_be_visible()
                page.screenshot(path=str(shots / "asset_graph.png"))
            finally:
                browser.close()

        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        assert {r["status"] for r in backfill["runs"]} == {"SUCCESS"}
        # The UI sent what the GraphQL test (test_e2e_backfill.py) sends.
        (params,) = sent
        assert normalized(params) == normalized(dev.materialize_all_params()), params

    for name in ("materialize_dialog.png", "precompute_run.png", "bucket_run.png", "asset_graph.png"):
        assert (shots / name).stat().st_size > 10_000


def normalized(params: dict) -> dict:
    return {**params, "assetSelection": sorted(tuple(a["path"]) for a in params["assetSelection"])}


def skip_welcome(page) -> None:
    """A fresh DAGSTER_HOME greets the first visitor with a "Join the Dagster community" dialog."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5_000)
    except Exception:  # no dialog: nothing to dismiss
        return
    skip.click()
