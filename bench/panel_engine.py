"""The Qlib families on the panel engine vs today's Qlib engine vs stock Qlib, measured in one run.

    .venv/bin/python bench/panel_engine.py --stocks 100 --years 10

On one synthetic market (the project's generator) and the same stocks, each engine computes the
alpha158 and qlib_stats expressions for a full build and for a one-day tail (the daily update):
- panel: `panel_engine.evaluate_expressions` / `evaluate_tails` (the default engine);
- today: `qlib_engine.evaluate_expressions` (PRECOMPUTE_EXPRESSION_ENGINE=qlib), tails cut as the
  update step cut them for it (`update.tail_start` with the family's largest history need);
- stock Qlib: `D.features` with the same expressions on a Qlib store of the same base fields, kernels=2.
Each measurement runs in its own process (numba compilation and the bars' loading are outside the
timed part); its peak RSS is reported. Prints a table of stock-days per second and ratios, and JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.full_market import PeakMemory  # noqa: E402

FAMILIES = ("alpha158", "qlib_stats")
STEPS = ("panel_full", "today_full", "qlib_full", "panel_tail", "today_tail", "qlib_tail")


def load(data: Path):
    from precompute_assets.input.bars import load_bars, scan_calendar
    from precompute_assets.input.parquet import scan_folder

    files = scan_folder(data / "in").files
    calendar = scan_calendar(files).dates
    return load_bars(files, sorted(files), calendar).bars, calendar


def expressions(family: str) -> dict[str, str]:
    from precompute_assets.indicators.catalog import load_registry

    return {i.name: i.expression for i in load_registry().all(family)}


def write_store(data: Path) -> None:
    """A Qlib store of the bars' base fields for stock Qlib, each stock's bins from its first day."""
    from precompute_assets.store.base_fields import base_fields
    from precompute_assets.store.bin_file import write_bin
    from precompute_assets.store.calendar import write_calendar
    from precompute_assets.store.layout import StoreLayout

    bars, calendar = load(data)
    layout = StoreLayout(data / "qlib")
    write_calendar(layout, calendar)
    lines = []
    for code, frame in bars.items():
        layout.stock_dir(code).mkdir(parents=True, exist_ok=True)
        for name, values in base_fields(frame).items():
            write_bin(layout.bin_path(code, name), int(calendar.get_loc(frame.index[0])), values)
        lines.append(f"{code}\t{frame.index[0]:%Y-%m-%d}\t{frame.index[-1]:%Y-%m-%d}\n")
    layout.instruments_path.parent.mkdir(parents=True, exist_ok=True)
    layout.instruments_path.write_text("".join(lines))


def run_step(step: str, data: Path) -> dict[str, float]:
    """One engine on one kind of work; seconds per family and the stock-days computed."""
    from precompute_assets.build.family_update import tail_start
    from precompute_assets.indicators.catalog import load_registry
    from precompute_assets.indicators.expressions import panel_engine, qlib_engine
    from precompute_assets.indicators.history import history_need

    bars, calendar = load(data)
    last = calendar[-1]
    tail = step.endswith("tail")
    live = {c: b for c, b in bars.items() if b.index[-1] == last} if tail else bars
    stock_days = len(live) if tail else sum(len(b) for b in bars.values())
    if step.startswith("panel"):  # compile (or load the cached) kernels outside the timing
        few = dict(list(bars.items())[:2])
        for family in FAMILIES:
            panel_engine.evaluate_tails(family, few, calendar, {c: last for c in few}, expressions(family))
    if step.startswith("qlib"):
        qlib_engine.init_qlib(data / "qlib", kernels=2)
    out: dict[str, float] = {"stock_days": stock_days}
    for family in FAMILIES:
        exprs = expressions(family)
        started = time.perf_counter()
        if step == "panel_full":
            panel_engine.evaluate_expressions(family, bars, calendar, exprs)
        elif step == "today_full":
            qlib_engine.evaluate_expressions(family, bars, calendar, exprs)
        elif step == "panel_tail":
            panel_engine.evaluate_tails(family, live, calendar, {c: last for c in live}, exprs)
        elif step == "today_tail":
            need = max(history_need(i) for i in load_registry().all(family))
            tails = {c: b.iloc[tail_start(b, last, need) :] for c, b in live.items()}
            qlib_engine.evaluate_expressions(family, tails, calendar, exprs)
        else:
            from qlib.data import D

            start = calendar[0] if step == "qlib_full" else last
            D.features(sorted(live), list(exprs.values()), start_time=start, end_time=last, freq="day")
        out[family] = time.perf_counter() - started
    return out


def measure(step: str, data: Path) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--step", step, "--data", str(data)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    memory = PeakMemory(proc.pid)
    output, _ = proc.communicate()
    peak = memory.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{step} failed")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=100)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.data)))
        return

    from precompute_assets.input.synthetic import generate_market

    with tempfile.TemporaryDirectory(prefix="bench_panel_") as tmp:
        data = Path(tmp)
        end = 2014 + args.years
        generate_market(
            data / "in", args.stocks, "2015-01-01", f"{end}-12-31", seed=args.seed, with_amount=args.stocks // 4
        )
        write_store(data)
        results = {step: measure(step, data) for step in STEPS}

    lines = [f"Qlib families, {args.stocks} synthetic stocks x {args.years} years (stock-days per second)"]
    lines.append(f"{'step':<12}{'family':<12}{'seconds':>10}{'stock-days/s':>16}{'peak RSS MB':>14}")
    for step, found in results.items():
        for family in FAMILIES:
            rate = found["stock_days"] / found[family]
            lines.append(f"{step:<12}{family:<12}{found[family]:>10.2f}{rate:>16,.0f}{found['peak_rss_mb']:>14.0f}")
    lines.append("ratios (same run; >1 means the panel is faster)")
    ratios = {}
    for family in FAMILIES:
        for kind in ("full", "tail"):
            for other in ("today", "qlib"):
                ratio = results[f"{other}_{kind}"][family] / results[f"panel_{kind}"][family]
                ratios[f"{family} {kind}: panel vs {other}"] = ratio
                lines.append(
                    f"  {family:<11}{kind:<6}panel / {'today' if other == 'today' else 'stock Qlib':<11}{ratio:>8.1f}x"
                )
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results, "ratios": ratios},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
