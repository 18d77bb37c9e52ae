"""The store checks after a one-day update: scoped to what the update wrote, against the whole bucket.

    .venv/bin/python bench/scoped_checks.py --stocks 40

Real CSI300 series from the refdata (read in place), cut one day short, built, then updated with the
last day by the core pipeline. Each of the four validations then runs on every bucket twice in this
process: with the update's record (the checks of the run that wrote it) and without (the audit),
after one untimed warm-up call. Input files are cached in the process, and the store is small enough
to sit in the page cache: the ratios show the work avoided, not disk reads saved. Prints seconds per
check and the ratio; both sides come from the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute_assets.build import intermediates, pipeline  # noqa: E402
from precompute_assets.build.buckets import bucket_keys  # noqa: E402
from precompute_assets.build.written import read_written  # noqa: E402
from precompute_assets.settings import Settings  # noqa: E402
from precompute_assets.validation.completeness import validate_completeness  # noqa: E402
from precompute_assets.validation.consistency import validate_consistency  # noqa: E402
from precompute_assets.validation.integrity import validate_integrity  # noqa: E402
from precompute_assets.validation.quality import validate_quality  # noqa: E402

CSI300 = ROOT.parent / "shared" / "refdata" / "csi300_daily"
VALIDATIONS = {
    "completeness": validate_completeness,
    "quality": validate_quality,
    "consistency": validate_consistency,
    "integrity": validate_integrity,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stocks", type=int, default=40)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        codes = sorted(p.stem for p in CSI300.glob("*.parquet"))[2 : 2 + args.stocks]
        frames = {code: pd.read_parquet(CSI300 / f"{code}.parquet") for code in codes}
        parquet = work / "parquet"
        parquet.mkdir()
        for code, frame in frames.items():
            frame.iloc[:-1].to_parquet(parquet / f"{code}.parquet")
        settings = Settings(parquet, work / "qlib_data", args.batches)
        pipeline.build_in_process(settings)
        for code, frame in frames.items():
            frame.to_parquet(parquet / f"{code}.parquet")
        pipeline.build_in_process(settings)
        buckets = bucket_keys(settings.batches)
        records = {b: read_written(intermediates.bucket_dir(settings.work_path, b)) for b in buckets}
        print(f"{len(codes)} stocks, {args.batches} buckets, one new day")
        for name, validate in VALIDATIONS.items():
            validate(settings, buckets[0], None)  # imports, GX start and the input cache are not either side's
            seconds = {}
            for side in ("scoped", "whole"):
                started = time.perf_counter()
                for bucket in buckets:
                    result = validate(settings, bucket, records[bucket] if side == "scoped" else None)
                    assert not result.blocking, result.describe()  # NaN-share warnings may stand
                seconds[side] = time.perf_counter() - started
            ratio = seconds["scoped"] / seconds["whole"]
            print(f"{name:13s} scoped {seconds['scoped']:6.2f}s  whole {seconds['whole']:6.2f}s  ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
