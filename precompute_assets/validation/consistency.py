"""Consistency: the store holds what its input says.

Base fields must equal the input parquet (cleaned by the input contract, as float32) exactly. For a
seeded random sample of stocks and indicator columns, the family code recomputes the column from the
input and the stored values must match it (within float32 rounding: appended days are computed from
a window of history, not from the first row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from precompute_assets.build.written import WrittenStock
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.compute import compute_family
from precompute_assets.indicators.registry import FAMILIES, Indicator
from precompute_assets.settings import Settings
from precompute_assets.store.base_fields import base_fields
from precompute_assets.validation.bucket_scope import BucketScope, StoreListing
from precompute_assets.validation.gx_runner import CODE, COLUMN, Rule
from precompute_assets.validation.judging import FrameRules, Inspection, judge
from precompute_assets.validation.result import ValidationResult
from precompute_assets.validation.stored_values import read_stored, read_stored_block

SAMPLE_STOCKS = 2
SAMPLE_COLUMNS_PER_FAMILY = 3
RTOL, ATOL = 1e-5, 1e-6
PROFILE = [CODE, COLUMN, "mismatches", "first_mismatch", "stored", "expected"]


def validate_consistency(
    settings: Settings,
    bucket: str | None,
    written: dict[str, WrittenStock] | None = None,
    *,
    seed: int = 0,
    sample_stocks: int = SAMPLE_STOCKS,
    sample_columns: int = SAMPLE_COLUMNS_PER_FAMILY,
    indicators: Sequence[str] | None = None,
) -> ValidationResult:
    """`indicators` replaces the random column sample (e.g. to re-check the columns a failure named).

    With `written`, the stocks a run wrote are compared on the rows it wrote."""
    options = {"sample_stocks": sample_stocks, "sample_columns": sample_columns, "indicators": indicators}
    return next(validate_consistency_buckets(settings, {bucket: written}, {bucket: seed}, **options))


def validate_consistency_buckets(
    settings: Settings,
    written: Mapping[str | None, dict[str, WrittenStock] | None],
    seeds: Mapping[str | None, int],
    *,
    sample_stocks: int = SAMPLE_STOCKS,
    sample_columns: int = SAMPLE_COLUMNS_PER_FAMILY,
    indicators: Sequence[str] | None = None,
) -> Iterator[ValidationResult]:
    """`validate_consistency` of each bucket in `written` (in its order, each with its own seed),
    judged together by GX."""
    import great_expectations as gx

    listing = StoreListing(settings)
    mismatch = gx.expectations.ExpectColumnValuesToBeBetween(column="mismatches", max_value=0)
    details = ["first_mismatch", "stored", "expected"]
    specs = [
        FrameRules("base_fields", [Rule(mismatch, "differs from the input")], [CODE, COLUMN], details),
        FrameRules(
            "indicator_sample", [Rule(mismatch, "differs from a recomputation from the input")], [CODE, COLUMN], details
        ),
    ]
    inspections = (
        _inspect_bucket(BucketScope(listing, bucket, w), seeds[bucket], sample_stocks, sample_columns, indicators)
        for bucket, w in written.items()
    )
    return judge("consistency", specs, inspections)


def _inspect_bucket(
    scope: BucketScope, seed: int, sample_stocks: int, sample_columns: int, indicators: Sequence[str] | None
) -> Inspection:
    stored = set(scope.stored)
    bars = {code: b for code in scope.input_files if code in stored and (b := scope.aligned_bars(code)) is not None}
    base_rows = [row for code, stock_bars in bars.items() for row in _compare_base(scope, code, stock_bars)]
    rng = np.random.default_rng(seed)
    codes = sorted(str(c) for c in rng.choice(sorted(bars), size=min(sample_stocks, len(bars)), replace=False))
    chosen = _sample_indicators(rng, sample_columns, indicators)
    sample_rows = []
    for family, family_indicators in chosen.items():
        result = compute_family(family, {code: bars[code] for code in codes}, scope.calendar, family_indicators)
        for code, frame in result.frames.items():
            frame = frame.iloc[_first_written(scope, code, frame.index) :]
            fields = [i.field for i in family_indicators]
            stored_frame = read_stored(
                scope.layout, code, fields, scope.calendar, frame.index, scope.appended_starts(code)
            )
            for indicator in (i for i in family_indicators if i.name in frame):  # a failed column: completeness
                expected = frame[indicator.name].to_numpy(np.float32)
                sample_rows.append(
                    _row(code, indicator.field, stored_frame.get(indicator.field), expected, frame.index)
                )
    checked = {
        "stocks_checked": len(bars),
        "seed": seed,
        "sampled_stocks": codes,
        "sampled_columns": sorted(i.field for family in chosen.values() for i in family),
    }
    frames = {
        "base_fields": pd.DataFrame(base_rows, columns=PROFILE),
        "indicator_sample": pd.DataFrame(sample_rows, columns=PROFILE),
    }
    return Inspection(scope.name, frames, checked)


def _sample_indicators(
    rng: np.random.Generator, per_family: int, names: Sequence[str] | None
) -> dict[str, list[Indicator]]:
    registry = load_registry()
    if names is not None:
        picked = [registry.get(name) for name in names]
        return {f: [i for i in picked if i.family == f] for f in FAMILIES if any(i.family == f for i in picked)}
    chosen = {}
    for family in FAMILIES:
        members = registry.all(family)
        indexes = sorted(rng.choice(len(members), size=min(per_family, len(members)), replace=False))
        chosen[family] = [members[i] for i in indexes]
    return {family: indicators for family, indicators in chosen.items() if indicators}


def _first_written(scope: BucketScope, code: str, dates: pd.DatetimeIndex) -> int:
    """Position in `dates` of the stock's first row the run wrote (its rows follow the calendar)."""
    before = scope.rows_before(code)
    if not before:
        return 0
    meta = scope.span(code) or {}
    first_new = int(meta.get("start_index", 0)) + before
    return int(dates.searchsorted(scope.calendar[first_new])) if first_new < len(scope.calendar) else len(dates)


def _compare_base(scope: BucketScope, code: str, bars: pd.DataFrame) -> list[tuple]:
    bars = bars.iloc[_first_written(scope, code, bars.index) :]
    expected = base_fields(bars)
    names = list(expected)
    stored = read_stored_block(scope.layout, code, names, scope.calendar, bars.index, scope.appended_starts(code))
    return [_row(code, name, stored[:, j], expected[name], bars.index, exact=True) for j, name in enumerate(names)]


def _row(
    code: str,
    field: str,
    stored: pd.Series | np.ndarray | None,
    expected: np.ndarray,
    index: pd.DatetimeIndex,
    *,
    exact: bool = False,
) -> tuple:
    """(code, column, mismatch count, first mismatching date, stored and expected value there); no
    stored column (None, or NaN throughout from `read_stored_block`) is NaN on every row."""
    values = np.full(len(expected), np.nan, np.float32) if stored is None else np.asarray(stored, np.float32)
    both_nan = np.isnan(values) & np.isnan(expected)
    same = values == expected if exact else np.isclose(values, expected, rtol=RTOL, atol=ATOL)
    bad = np.flatnonzero(~(same | both_nan))
    if not bad.size:
        return code, field, 0, "", np.nan, np.nan
    first = bad[0]
    return code, field, int(bad.size), f"{index[first]:%Y-%m-%d}", float(values[first]), float(expected[first])
