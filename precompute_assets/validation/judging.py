"""Many buckets of one validation judged together: each bucket inspected on its own, GX run per batch.

A validation inspects a bucket into frames (one row per stock and column, or per stock and date);
`judge` stacks the frames of consecutive buckets until they hold `ROW_BUDGET` rows and has GX judge the
stack at once, then hands back one `ValidationResult` per bucket. After a daily update every bucket of
a run fits one batch (a few rows per stock); an audit or a full build, with every stored row, judges
about one bucket per batch as before, so memory stays bounded by the budget, not by the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd

from precompute_assets.validation.gx_runner import GxSession, Rule
from precompute_assets.validation.result import ValidationResult

ROW_BUDGET = 200_000
"""Rows stacked into one GX validation: a bucket's whole history at 5,000 stocks is about this."""


@dataclass(frozen=True)
class FrameRules:
    """One frame a validation hands GX: its rules, the columns naming a row and those shown with it."""

    name: str
    rules: Sequence[Rule]
    index_columns: Sequence[str]
    detail_columns: Sequence[str] = ()


@dataclass
class Inspection:
    """What a validation found in one bucket (or the whole store) before GX judges it."""

    scope: str
    frames: dict[str, pd.DataFrame]
    checked: dict[str, object] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(len(frame) for frame in self.frames.values())


def judge(
    check: str,
    specs: Sequence[FrameRules],
    inspections: Iterable[Inspection],
    row_budget: int = ROW_BUDGET,
) -> Iterator[ValidationResult]:
    """One result per inspection, in their order; each batch is judged as soon as it is full."""
    batch: list[Inspection] = []
    rows = 0
    for inspection in inspections:
        batch.append(inspection)
        rows += inspection.rows
        if rows >= row_budget:
            yield from _judge_batch(check, specs, batch)
            batch, rows = [], 0
    if batch:
        yield from _judge_batch(check, specs, batch)


def judge_one(check: str, specs: Sequence[FrameRules], inspection: Inspection) -> ValidationResult:
    return next(judge(check, specs, [inspection]))


def _judge_batch(check: str, specs: Sequence[FrameRules], batch: list[Inspection]) -> list[ValidationResult]:
    scopes = [inspection.scope for inspection in batch]
    session = GxSession(f"{check}.{scopes[0]}", scopes)
    failures: dict[str, list] = {scope: [] for scope in scopes}
    for spec in specs:
        frames = {inspection.scope: inspection.frames[spec.name] for inspection in batch}
        found = session.run(spec.name, frames, spec.rules, spec.index_columns, spec.detail_columns)
        for scope, listed in found.items():
            failures[scope] += listed
    return [
        ValidationResult(
            check, scope, session.summary(scope), session.expectations[scope], failures[scope], inspection.checked
        )
        for scope, inspection in zip(scopes, batch, strict=True)
    ]
