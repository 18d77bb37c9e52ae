"""Regenerate the embedded sample input (`data/parquet/stock_data`) from the synthetic market generator.

The sample is small and committed so the project runs out of the box; anyone can rebuild it (or a
bigger market for scale tests) with this script, and the result is identical for the same arguments.

    python scripts/generate_sample.py --out data/parquet/stock_data --stocks 40 --start 2022-01-04 \
        --end 2024-12-31 --seed 7
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/parquet/stock_data"), help="output folder")
    parser.add_argument("--stocks", type=int, default=40, help="number of stocks")
    parser.add_argument("--start", default="2022-01-04", help="first calendar date (YYYY-MM-DD)")
    parser.add_argument("--end", default="2024-12-31", help="last calendar date (YYYY-MM-DD)")
    parser.add_argument("--seed", type=int, default=7, help="random seed; same seed, same files")
    parser.add_argument("--listed-midway", type=int, default=3, help="stocks that list part-way through")
    parser.add_argument("--with-amount", type=int, default=2, help="stocks that carry an amount column")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO) not in sys.path:  # run from a checkout without installing the package
        sys.path.insert(0, str(REPO))
    import pandas as pd

    from precompute_assets.input.synthetic import generate_market

    args.out.mkdir(parents=True, exist_ok=True)
    stale = sorted(args.out.glob("*.parquet"))
    for path in stale:  # old files would otherwise linger as extra stocks
        path.unlink()

    began = time.perf_counter()
    paths = generate_market(
        args.out,
        args.stocks,
        args.start,
        args.end,
        args.seed,
        listed_midway=args.listed_midway,
        with_amount=args.with_amount,
    )
    elapsed = time.perf_counter() - began

    frames = {p.stem: pd.read_parquet(p) for p in paths} if len(paths) <= 200 else {}
    size = sum(p.stat().st_size for p in paths)
    print(f"removed {len(stale)} old file(s); wrote {len(paths)} files to {args.out} in {elapsed:.2f}s")
    print(f"total size {size / 1e6:.2f} MB, seed {args.seed}, {args.start} .. {args.end}")
    if frames:
        rows = sum(len(f) for f in frames.values())
        late = sorted(
            s for s, f in frames.items() if f["date"].iloc[0] > pd.Timestamp(args.start) + pd.Timedelta(days=7)
        )
        amount = sorted(s for s, f in frames.items() if "amount" in f.columns)
        suspended = sum(int((f["volume"] == 0).sum()) for f in frames.values())
        steps = sum(int((f["factor"].diff().fillna(0) != 0).sum()) for f in frames.values())
        print(f"rows {rows}, suspended rows {suspended}, factor steps {steps}")
        print(f"listed mid-way: {', '.join(late) or '-'}; with amount: {', '.join(amount) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
