"""The Qlib families on the panel engine vs today's Qlib engine vs stock Qlib, measured in one run.

    .venv/bin/python bench/panel_engine.py --stocks 100 --years 10
    .venv/bin/python bench/panel_engine.py --tails-only --input /tmp/bench18_5000/in   # 5,000 stocks

`--tails-only` measures only the one-day tails of the panel engine and of today's engine, each family in
its own process, on the bars a daily update's family step receives (each stock cut by the bars step's
`tail_start` with the registry's largest history need); the bars are loaded once and handed to every
process as a pickle. Each step reports its seconds and its peak resident memory (the process's high-water
mark reset just before the family runs, so it includes the step's input bars) and the rise over the
memory held before it.

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
import gc
import json
import os
import pickle
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
TAIL_STEPS = ("panel_tail", "today_tail")


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


def write_update_bars(folder: Path, out: Path) -> None:
    """The bars a daily update's family step gets for the stocks trading on the last day: each cut at
    `tail_start` with the registry's largest history need, as the bars step cuts them; pickled."""
    from precompute_assets.build.family_update import tail_start
    from precompute_assets.indicators.catalog import load_registry
    from precompute_assets.indicators.history import history_need
    from precompute_assets.input.bars import load_bars, scan_calendar
    from precompute_assets.input.parquet import scan_folder

    files = scan_folder(folder).files
    calendar = scan_calendar(files).dates
    bars = load_bars(files, sorted(files), calendar).bars
    need = max(history_need(i) for i in load_registry().all())
    last = calendar[-1]
    cut = {c: b.iloc[tail_start(b, last, need) :] for c, b in bars.items() if b.index[-1] == last}
    with out.open("wb") as f:
        pickle.dump((cut, calendar), f, protocol=pickle.HIGHEST_PROTOCOL)


def _memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def run_tail_step(step: str, family: str, bars_path: Path, repeat: int) -> dict[str, object]:
    """One engine's one-day tail of one family on the pickled update bars, `repeat` times: wall and
    CPU seconds of each run (the first is cold, as a daily update's step is), and memory."""
    from precompute_assets.build.family_update import tail_start
    from precompute_assets.indicators.catalog import load_registry
    from precompute_assets.indicators.expressions import panel_engine, qlib_engine
    from precompute_assets.indicators.history import history_need

    with bars_path.open("rb") as f:
        bars, calendar = pickle.load(f)
    last = calendar[-1]
    exprs = expressions(family)
    new_from = {c: last for c in bars}
    need = max(history_need(i) for i in load_registry().all(family))
    few = dict(list(bars.items())[:2])  # numba's kernels and Qlib's set-up are outside the timing
    if step == "panel_tail":
        panel_engine.evaluate_tails(family, few, calendar, {c: last for c in few}, exprs)
    else:
        qlib_engine.evaluate_expressions(family, {c: b.iloc[-need:] for c, b in few.items()}, calendar, exprs)
    gc.collect()
    before = _memory_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: the step's own peak
    wall, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        if step == "panel_tail":
            result = panel_engine.evaluate_tails(family, bars, calendar, new_from, exprs)
        else:  # what the update step hands today's engine: each stock cut to the family's history need
            tails = {c: b.iloc[tail_start(b, last, need) :] for c, b in bars.items()}
            result = qlib_engine.evaluate_expressions(family, tails, calendar, exprs)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        assert len(result.frames) == len(bars) and not result.errors, result.errors[:3]
        del result
    peak = _memory_kb("VmHWM")
    return {
        "stock_days": len(bars),
        "seconds": wall[0],
        "cpu_seconds": cpu[0],
        "best_seconds": min(wall),
        "best_cpu_seconds": min(cpu),
        "runs_seconds": wall,
        "runs_cpu_seconds": cpu,
        "peak_rss_mb": peak / 1024,
        "rss_before_mb": before / 1024,
        "rise_mb": (peak - before) / 1024,
    }


def measure_tails(bars_path: Path, repeat: int) -> dict[str, dict[str, dict[str, object]]]:
    """Each tail step of each family in its own process, one after the other."""
    results: dict[str, dict[str, dict[str, object]]] = {}
    for step in TAIL_STEPS:
        for family in FAMILIES:
            command = [sys.executable, __file__, "--step", step, "--family", family, "--bars", str(bars_path)]
            command += ["--repeat", str(repeat)]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=True)
            results.setdefault(step, {})[family] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


TIMES = {"first": "seconds", "first CPU": "cpu_seconds", "best": "best_seconds", "best CPU": "best_cpu_seconds"}
"""The timings reported: the first (cold) run and the best of the repeats, wall and CPU seconds."""


def tails_report(results: dict[str, dict[str, dict[str, object]]], header: str) -> tuple[list[str], dict[str, float]]:
    heads = "".join(f"{name + ' s':>13}" for name in TIMES)
    lines = [header, f"{'step':<12}{'family':<12}{heads}{'stock-days/s':>14}{'peak RSS MB':>13}{'rise MB':>9}"]
    for step, by_family in results.items():
        for family, found in by_family.items():
            times = "".join(f"{found[key]:>13.2f}" for key in TIMES.values())
            rate = found["stock_days"] / found["seconds"]
            lines.append(
                f"{step:<12}{family:<12}{times}{rate:>14,.0f}{found['peak_rss_mb']:>13.0f}{found['rise_mb']:>9.0f}"
            )
    lines.append("ratios today / panel (same run; >1 means the panel is faster)")
    ratios = {}
    for family in FAMILIES:
        parts = []
        for name, key in TIMES.items():
            ratio = results["today_tail"][family][key] / results["panel_tail"][family][key]
            ratios[f"{family} tail: panel vs today, {name}"] = ratio
            parts.append(f"{name} {ratio:.1f}x")
        lines.append(f"  {family:<11}" + ", ".join(parts))
    return lines, ratios


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
    parser.add_argument("--input", type=Path, default=None, help="an input folder to use instead of a generated one")
    parser.add_argument("--tails-only", action="store_true", help="one-day tails only: the panel vs today's engine")
    parser.add_argument("--repeat", type=int, default=3, help="--tails-only: runs of each step (first and best kept)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--family", choices=FAMILIES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bars", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.step and args.bars:
        print(json.dumps(run_tail_step(args.step, args.family, args.bars, args.repeat)))
        return
    if args.step:
        print(json.dumps(run_step(args.step, args.data)))
        return
    if args.tails_only:
        tails_only(args)
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


def tails_only(args: argparse.Namespace) -> None:
    from precompute_assets.input.synthetic import generate_market

    load_line = "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench_panel_tails_") as tmp:
        folder = args.input
        if folder is None:
            folder = Path(tmp) / "in"
            end = 2014 + args.years
            generate_market(
                folder, args.stocks, "2015-01-01", f"{end}-12-31", seed=args.seed, with_amount=args.stocks // 4
            )
        bars_path = Path(tmp) / "update_bars.pkl"
        write_update_bars(folder, bars_path)
        results = measure_tails(bars_path, args.repeat)
    stocks = results["panel_tail"][FAMILIES[0]]["stock_days"]
    source = f"input {args.input}" if args.input else f"synthetic seed {args.seed}, {args.years} years"
    header = f"One-day tails of the Qlib families, {stocks:.0f} stocks ({source}); {load_line} at the start"
    lines, ratios = tails_report(results, header)
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": vars(args), "load_at_start": load_line, "results": results, "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
