"""Quality: values that must lie in a range do, bands are ordered, nothing is infinite, few NaN after warm-up.

Range and order rules are checked on the rows a run wrote (a violation is wrong data: blocking): every
row after a full build, the appended days after an update, every row in the audit (no `written`).
Older rows passed this check when they were written, and the integrity check proves the appended
bytes (the audit: every byte) match their record, so a daily update's check costs its new day. The
NaN share is a warning, measured on full writes: long suspensions legitimately leave ratio and
correlation columns undefined.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from precompute_assets.build.written import WrittenStock
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.warmup import nan_after_warmup
from precompute_assets.settings import Settings
from precompute_assets.validation.bucket_scope import BucketScope, StoreListing
from precompute_assets.validation.gx_runner import CODE, COLUMN, DATE, Rule
from precompute_assets.validation.judging import FrameRules, Inspection, judge
from precompute_assets.validation.result import ValidationResult
from precompute_assets.validation.stored_values import read_stored, read_stored_block, stored_fields, stored_span

RANGES: dict[str, tuple[float | None, float | None]] = {
    "rsi14": (0.0, 100.0),
    "kdj_k": (0.0, 100.0),
    "kdj_d": (0.0, 100.0),
    "stoch_k": (0.0, 100.0),
    "stoch_d": (0.0, 100.0),
    "williams_r": (-100.0, 0.0),
    "volume": (0.0, None),
    "atr14": (0.0, None),
}
ORDERED = (("bollinger_upper", "bollinger_middle"), ("bollinger_middle", "bollinger_lower"))
TOLERANCE = 1e-4
"""Slack on range bounds: TA-Lib's STOCH gives -3e-13 for 0; an altered value is far outside anyway."""
VALUE_COLUMNS = sorted({*RANGES, *(name for pair in ORDERED for name in pair)})
MAX_NAN_SHARE = 0.25
"""Above this share of NaN after a column's warm-up (on days with input) a column is flagged for a look."""


def validate_quality(
    settings: Settings,
    bucket: str | None,
    written: dict[str, WrittenStock] | None = None,
    *,
    max_nan_share: float = MAX_NAN_SHARE,
) -> ValidationResult:
    return next(validate_quality_buckets(settings, {bucket: written}, max_nan_share=max_nan_share))


def validate_quality_buckets(
    settings: Settings,
    written: Mapping[str | None, dict[str, WrittenStock] | None],
    *,
    max_nan_share: float = MAX_NAN_SHARE,
) -> Iterator[ValidationResult]:
    """`validate_quality` of each bucket in `written` (in its order), judged together by GX."""
    listing = StoreListing(settings)
    warmups = {indicator.field: indicator.warmup for indicator in load_registry().all()}
    specs = [
        FrameRules("values", _value_rules(), [CODE, DATE]),
        FrameRules("columns", _profile_rules(max_nan_share), [CODE, COLUMN], ["rows_after_warmup"]),
    ]
    inspections = (
        _inspect_bucket(BucketScope(listing, bucket, w), warmups, max_nan_share) for bucket, w in written.items()
    )
    return judge("quality", specs, inspections)


def _inspect_bucket(scope: BucketScope, warmups: dict[str, int], max_nan_share: float) -> Inspection:
    """The ranged columns on the rows the run wrote, one block per stock (no frame per stock: a daily
    update reads one row of each); every column's profile for a stock written in full."""
    codes, dates, blocks, profiles = [], [], [], []
    for code in scope.stored:
        meta = scope.span(code)
        if meta is None:
            continue  # unreadable `_stock.json`: the integrity check names it
        rows = stored_span(scope.calendar, meta)[scope.rows_before(code) :]
        if len(rows) == meta["rows"]:  # a full write: profile every column, not only the ranged ones
            frame = read_stored(scope.layout, code, stored_fields(scope.layout, code), scope.calendar, rows)
            profiles.extend(_profile(code, frame, warmups))
            block = frame.reindex(columns=VALUE_COLUMNS).to_numpy(np.float64)
        else:
            block = read_stored_block(
                scope.layout, code, VALUE_COLUMNS, scope.calendar, rows, scope.appended_starts(code)
            )
        codes.append(np.full(len(rows), code, dtype=object))
        dates.append(rows)
        blocks.append(block)
    values = pd.DataFrame(
        np.concatenate(blocks) if blocks else np.empty((0, len(VALUE_COLUMNS))), columns=VALUE_COLUMNS
    )
    values.insert(0, DATE, np.concatenate(dates) if dates else np.array([], "datetime64[ns]"))
    values.insert(0, CODE, np.concatenate(codes) if codes else np.array([], dtype=object))
    profile_frame = pd.DataFrame(profiles, columns=[CODE, COLUMN, "infinite", "nan_share", "rows_after_warmup"])
    checked = {
        "stocks_checked": len(blocks),
        "rows_checked": len(values),
        "stocks_profiled": len({row[0] for row in profiles}),
        "max_nan_share": max_nan_share,
    }
    return Inspection(scope.name, {"values": values, "columns": profile_frame}, checked)


def _value_rules() -> list[Rule]:
    import great_expectations as gx

    rules = []
    for name, (low, high) in RANGES.items():
        expectation = gx.expectations.ExpectColumnValuesToBeBetween(
            column=name, min_value=low - TOLERANCE, max_value=None if high is None else high + TOLERANCE
        )
        bounds = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        rules.append(Rule(expectation, f"outside {bounds}", name))
    for high, low in ORDERED:
        expectation = gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=high, column_B=low, or_equal=True, ignore_row_if="either_value_is_missing"
        )
        rules.append(Rule(expectation, f"{high} below {low}", high))
    return rules


def _profile_rules(max_nan_share: float) -> list[Rule]:
    import great_expectations as gx

    return [
        Rule(gx.expectations.ExpectColumnValuesToBeBetween(column="infinite", max_value=0), "infinite values"),
        Rule(
            gx.expectations.ExpectColumnValuesToBeBetween(column="nan_share", max_value=max_nan_share),
            f"NaN share after warm-up above {max_nan_share:.0%} (days without input excluded)",
            blocking=False,
        ),
    ]


def _profile(code: str, frame: pd.DataFrame, warmups: dict[str, int]) -> list[tuple]:
    """Per column: infinite count, and NaN share past the warm-up on days the stock has input."""
    with_input = np.isfinite(frame["close"].to_numpy()) if "close" in frame else np.ones(len(frame), bool)
    limits = np.array([warmups.get(name, 0) for name in frame.columns])
    values = frame.to_numpy()
    nans, counted = nan_after_warmup(values, with_input, limits)
    infinite = np.isinf(values).sum(axis=0)
    shares = np.divide(nans, counted, out=np.zeros(len(limits)), where=counted > 0)
    return [
        (code, name, int(inf), round(float(share), 4), int(count))
        for name, inf, share, count in zip(frame.columns, infinite, shares, counted, strict=True)
    ]
