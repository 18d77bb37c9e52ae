"""Quality: values that must lie in a range do, bands are ordered, nothing is infinite, few NaN after warm-up.

Range and order rules are checked on the rows a run wrote (a violation is wrong data: blocking): every
row after a full build, the appended days after an update, every row in the audit (no `written`).
Older rows passed this check when they were written, and the integrity check proves the appended
bytes (the audit: every byte) match their record, so a daily update's check costs its new day. The
NaN share is a warning, measured on full writes: long suspensions legitimately leave ratio and
correlation columns undefined.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from precompute_assets.build.written import WrittenStock
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.warmup import nan_after_warmup
from precompute_assets.settings import Settings
from precompute_assets.store.stock_commit import read_stock_meta
from precompute_assets.validation.bucket_scope import BucketScope
from precompute_assets.validation.gx_runner import CODE, COLUMN, DATE, GxSession, Rule
from precompute_assets.validation.result import ValidationResult
from precompute_assets.validation.stored_values import read_stored, stored_fields, stored_span

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
MAX_NAN_SHARE = 0.25
"""Above this share of NaN after a column's warm-up (on days with input) a column is flagged for a look."""


def validate_quality(
    settings: Settings,
    bucket: str | None,
    written: dict[str, WrittenStock] | None = None,
    *,
    max_nan_share: float = MAX_NAN_SHARE,
) -> ValidationResult:
    scope = BucketScope(settings, bucket, written)
    warmups = {indicator.field: indicator.warmup for indicator in load_registry().all()}
    value_columns = sorted({*RANGES, *(name for pair in ORDERED for name in pair)})
    values, profiles = [], []
    for code in scope.stored:
        meta = read_stock_meta(scope.layout, code)
        if meta is None:
            continue  # unreadable `_stock.json`: the integrity check names it
        rows = stored_span(scope.calendar, meta)[scope.rows_before(code) :]
        whole = len(rows) == meta["rows"]  # a full write: profile every column, not only the ranged ones
        fields = stored_fields(scope.layout, code) if whole else value_columns
        frame = read_stored(scope.layout, code, fields, scope.calendar, rows)
        values.append(frame.reindex(columns=value_columns).rename_axis(DATE).reset_index().assign(**{CODE: code}))
        if whole:
            profiles.extend(_profile(code, frame, warmups))
    value_frame = pd.concat(values, ignore_index=True) if values else pd.DataFrame(columns=[CODE, DATE, *value_columns])
    profile_frame = pd.DataFrame(profiles, columns=[CODE, COLUMN, "infinite", "nan_share", "rows_after_warmup"])

    session = GxSession(f"quality.{scope.name}")
    failures = session.run(
        "values", value_frame.astype({c: "float64" for c in value_columns}), _value_rules(), [CODE, DATE]
    )
    failures += session.run(
        "columns", profile_frame, _profile_rules(max_nan_share), [CODE, COLUMN], ["rows_after_warmup"]
    )
    checked = {
        "stocks_checked": len(values),
        "rows_checked": len(value_frame),
        "stocks_profiled": len({row[0] for row in profiles}),
        "max_nan_share": max_nan_share,
    }
    return ValidationResult("quality", scope.name, session.summary(), session.expectations, failures, checked)


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
