"""Cold imports of a `make run` worker with and without asking for their files first (`import_prefetch`).

    .venv/bin/python bench/cold_imports.py --rounds 3

Each round evicts the files the last `make run` worker recorded (`posix_fadvise(DONTNEED)`: their pages
leave the page cache, the rest of the machine's cache stays), then times a new interpreter doing the
worker's imports, alternately plain and with `import_prefetch.prefetch()` first. Prints each pair and
their ratio (plain / prefetched), measured side by side so the disk's state is shared; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute_assets.cli import import_prefetch  # noqa: E402

IMPORTS = "import great_expectations, precompute_assets.cli.make_run_driver, precompute_assets.definitions"
PREFETCHED = f"from precompute_assets.cli import import_prefetch; import_prefetch.prefetch(); {IMPORTS}"
RECORDED = f"{IMPORTS}; from precompute_assets.cli import import_prefetch; import_prefetch.record()"


def evict(files: list[str]) -> None:
    for file in files:
        import_prefetch.advise(file, os.POSIX_FADV_DONTNEED)


def timed(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "cold_imports.json")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-c", RECORDED], cwd=ROOT, check=True)  # what a worker records
    files = import_prefetch.LIST_FILE.read_text().splitlines()
    rounds = []
    for _ in range(args.rounds):
        pair = {"load_average": round(os.getloadavg()[0], 2)}
        for name, code in (("plain", IMPORTS), ("prefetched", PREFETCHED)):
            evict(files)
            pair[f"{name}_seconds"] = round(timed(code), 2)
        pair["ratio"] = round(pair["plain_seconds"] / pair["prefetched_seconds"], 2)
        rounds.append(pair)
        print(pair, flush=True)
    results = {"files": len(files), "rounds": rounds}
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{len(files)} files; JSON: {args.json}")


if __name__ == "__main__":
    main()
