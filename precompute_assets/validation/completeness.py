"""Completeness: every readable input stock, each of its input dates and every registered column is stored.

A stock whose input file breaks the input contract is skipped by design (the run reports why), so it
is listed, not failed, here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from precompute_assets.build.written import WrittenStock
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.registry import Registry
from precompute_assets.input.parquet import StockInput
from precompute_assets.settings import Settings
from precompute_assets.store.base_fields import BASE_FIELDS
from precompute_assets.validation.bucket_scope import BucketScope, StoreListing
from precompute_assets.validation.gx_runner import CODE, COLUMN, Rule
from precompute_assets.validation.judging import FrameRules, Inspection, judge
from precompute_assets.validation.result import ValidationResult
from precompute_assets.validation.stored_values import file_spans

CALENDAR = "calendar"
WHOLE = "*"
"""The column of a stock's row that stands for its complete columns and calendar."""


def expected_columns(registry: Registry, stock: StockInput) -> list[str]:
    """Store fields a stock must have: the base fields (`amount` when its input has one) and every indicator."""
    base = [*BASE_FIELDS, *(["amount"] if "amount" in stock.bars.columns else [])]
    return base + [indicator.field for indicator in registry.all()]


def validate_completeness(
    settings: Settings, bucket: str | None, written: dict[str, WrittenStock] | None = None
) -> ValidationResult:
    """Every input stock of the bucket, or with `written` the stocks a run wrote."""
    return next(validate_completeness_buckets(settings, {bucket: written}))


def validate_completeness_buckets(
    settings: Settings, written: Mapping[str | None, dict[str, WrittenStock] | None]
) -> Iterator[ValidationResult]:
    """`validate_completeness` of each bucket in `written` (in its order), judged together by GX."""
    import great_expectations as gx

    listing = StoreListing(settings)
    registry = load_registry()
    specs = [
        FrameRules(
            "stocks",
            [
                Rule(
                    gx.expectations.ExpectColumnValuesToBeInSet(column="stored", value_set=[True]),
                    "not in the store",
                    "*",
                )
            ],
            [CODE],
        ),
        FrameRules(
            "columns",
            [
                Rule(
                    gx.expectations.ExpectColumnValuesToBeInSet(column="present", value_set=[True]),
                    "no file in the store",
                ),
                Rule(
                    gx.expectations.ExpectColumnValuesToBeBetween(column="missing_dates", max_value=0),
                    "input dates missing from the store",
                ),
            ],
            [CODE, COLUMN],
            ["first_missing"],
        ),
    ]
    inspections = (_inspect_bucket(BucketScope(listing, bucket, w), registry) for bucket, w in written.items())
    return judge("completeness", specs, inspections)


def _inspect_bucket(scope: BucketScope, registry: Registry) -> Inspection:
    inputs = scope.readable_inputs()
    stored = {code for code in scope.stored if scope.span(code) is not None}
    stocks = pd.DataFrame({CODE: list(inputs), "stored": [code in stored for code in inputs]})
    columns = pd.DataFrame(
        [
            row
            for code, stock in inputs.items()
            if code in stored
            for row in _coverage(scope, registry, code, stock, scope.appended_starts(code))
        ],
        columns=[CODE, COLUMN, "present", "missing_dates", "first_missing"],
    )
    checked = {
        "stocks_in_input": len(scope.input_files),
        "stocks_checked": len(inputs),
        "inputs_skipped": scope.input_errors(),
        "columns_per_stock": len(registry.all()) + len(BASE_FIELDS),
        "calendar_days": len(scope.calendar),
    }
    return Inspection(scope.name, {"stocks": stocks, "columns": columns}, checked)


def _coverage(
    scope: BucketScope, registry: Registry, code: str, stock: StockInput, known_starts: dict[str, int]
) -> list[tuple]:
    """A row per expected column (or the calendar) that is missing or misses input dates, and one for
    the stock standing for all that is complete: GX names every gap, and a complete stock costs it one
    row, not one per column."""
    dates = stock.bars.index
    positions = scope.calendar.get_indexer(dates)
    rows = [(code, WHOLE, True, 0, "")]
    off_calendar = _missing(dates, positions >= 0)
    if off_calendar[0]:
        rows.append((code, CALENDAR, True, *off_calendar))
    spans = file_spans(scope.layout, code, known_starts)
    missing: dict[tuple[int, int], tuple[int, str]] = {}  # nearly every column of a stock has the same span
    for name in expected_columns(registry, stock):
        span = spans.get(name.lower())
        if span is None:
            rows.append((code, name, False, 0, ""))
            continue
        if span not in missing:
            start, count = span
            missing[span] = _missing(dates, (positions >= start) & (positions < start + count))
        if missing[span][0]:
            rows.append((code, name, True, *missing[span]))
    return rows


def _missing(dates: pd.DatetimeIndex, covered: np.ndarray) -> tuple[int, str]:
    missing = np.flatnonzero(~covered)
    return int(missing.size), (f"{dates[missing[0]]:%Y-%m-%d}" if missing.size else "")
