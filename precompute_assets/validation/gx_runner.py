"""Great Expectations 1.x run inside a validation: one ephemeral context, pandas frames, named failures.

`dagster-ge` does not support GX 1.x, so the checks drive GX themselves. Every validation turns what
it inspects into a frame whose rows carry a stock code (and a date or a column name); GX evaluates
the expectations and lists the unexpected rows, which become `Failure`s naming stocks and columns.

One session judges several groups (the buckets of a run) in one GX validation per frame: GX's cost is
a fixed tenth of a second or so per validated batch, whatever its rows, and a daily update hands each
bucket a few rows. Each group still gets its own statistics and expectation results, split from GX's
unexpected rows, as a validation of that group alone would report them.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.validation.result import Failure

CODE, COLUMN, DATE = "code", "column", "date"
GROUP = "__group"
"""The column that tells GX's unexpected rows apart by group (internal: never shown in a failure)."""
STATISTICS = ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations")


@dataclass(frozen=True)
class Rule:
    """One expectation and the words for what it catches.

    `column` names the store column the rule is about; None takes it from each row's `column` value
    (frames with one row per stock and column).
    """

    expectation: object
    problem: str
    column: str | None = None
    blocking: bool = True


class GxSession:
    """One ephemeral GX context for one validation call over `groups`: nothing is written to disk."""

    def __init__(self, name: str, groups: Sequence[str] = ("",)) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self._gx = gx
        self.name = name
        config = DataContextConfig(  # in memory, no docs site, no progress bars in the run logs
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_pandas(name)
        self.groups = list(groups)
        self.statistics = {group: dict.fromkeys(STATISTICS, 0) for group in self.groups}
        self.expectations: dict[str, list[dict[str, object]]] = {group: [] for group in self.groups}

    def run(
        self,
        frame_name: str,
        frames: Mapping[str, pd.DataFrame],
        rules: Sequence[Rule],
        index_columns: Sequence[str],
        detail_columns: Sequence[str] = (),
    ) -> dict[str, list[Failure]]:
        """Validate each group's frame against `rules` in one GX validation; unexpected rows are
        grouped per group, stock and column.

        `index_columns` identify a row (`code` plus `date` or `column`); `detail_columns` are shown in
        the failure's example (e.g. the first mismatching date of a stock's column).
        """
        frame = _stacked(frames, self.groups)
        batch = (
            self.source.add_dataframe_asset(frame_name)
            .add_batch_definition_whole_dataframe(frame_name)
            .get_batch(batch_parameters={"dataframe": frame})
        )
        suite = self.context.suites.add(
            self._gx.ExpectationSuite(
                name=f"{self.name}.{frame_name}", expectations=[copy.copy(r.expectation) for r in rules]
            )
        )
        names = [GROUP, *index_columns, *detail_columns]
        result = batch.validate(
            suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": names}
        )
        sizes = frame[GROUP].value_counts().to_dict()
        failures: dict[str, list[Failure]] = {group: [] for group in self.groups}
        for rule, outcome in zip(rules, result.results, strict=True):
            rows: dict[str, list[dict]] = {group: [] for group in self.groups}
            for row in outcome.result.get("unexpected_index_list") or []:
                rows[row.pop(GROUP)].append(row)
            raised = outcome.exception_info.get("raised_exception")
            # GX judged the whole stack failed yet listed no row: no group can be said to have passed
            unnamed = not outcome.success and not raised and not any(rows.values())
            for group in self.groups:
                success = not raised and not unnamed and not rows[group]
                self._count(group, success)
                self.expectations[group].append(
                    _summary(frame_name, outcome, success, sizes.get(group, 0), len(rows[group]))
                )
                if raised:
                    message = outcome.exception_info.get("exception_message")
                    failures[group].append(
                        Failure("*", rule.column or "*", f"{rule.problem}: GX could not evaluate it: {message}")
                    )
                elif unnamed:
                    failures[group].append(Failure("*", rule.column or "*", f"{rule.problem}: GX found it failed"))
                else:
                    failures[group].extend(_failures(rule, rows[group]))
        return failures

    def _count(self, group: str, success: bool) -> None:
        statistics = self.statistics[group]
        statistics["evaluated_expectations"] += 1
        statistics["successful_expectations" if success else "unsuccessful_expectations"] += 1

    def summary(self, group: str = "") -> dict[str, float]:
        """GX's statistics over every frame this session validated, for one group."""
        statistics = self.statistics[group]
        evaluated = statistics["evaluated_expectations"]
        percent = 100.0 * statistics["successful_expectations"] / evaluated if evaluated else 100.0
        return {**statistics, "success_percent": round(percent, 2)}


def _stacked(frames: Mapping[str, pd.DataFrame], groups: Sequence[str]) -> pd.DataFrame:
    """The groups' frames one under the other, each row tagged with its group. Empty frames are left
    out of the stack, so their untyped columns do not turn the others' numbers into objects."""
    parts = [frames[group].assign(**{GROUP: group}) for group in groups if len(frames[group])]
    if not parts:
        return frames[groups[0]].assign(**{GROUP: pd.Series([], dtype=object)}).reset_index(drop=True)
    return pd.concat(parts, ignore_index=True)


def _summary(frame_name: str, outcome, success: bool, elements: int, unexpected: int) -> dict[str, object]:
    kwargs = outcome.expectation_config.kwargs
    column = kwargs.get("column") or f"{kwargs.get('column_A')} vs {kwargs.get('column_B')}"
    return {
        "frame": frame_name,
        "expectation": outcome.expectation_config.type,
        "column": column,
        "success": success,
        "element_count": elements,
        "unexpected_count": unexpected,
    }


def _failures(rule: Rule, rows: list[dict]) -> list[Failure]:
    """Group GX's unexpected rows into one failure per stock and column, with the first as example."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        column = rule.column or str(row.get(COLUMN, "*"))
        groups.setdefault((str(row.get(CODE, "*")), column), []).append(row)
    identity = {CODE, COLUMN}
    failures = []
    for (code, column), members in sorted(groups.items()):
        first = members[0]
        example = ", ".join(f"{k}={_text(v)}" for k, v in first.items() if k not in identity)
        failures.append(Failure(code, column, rule.problem, len(members), example, rule.blocking))
    return failures


def _text(value: object) -> str:
    if isinstance(value, pd.Timestamp | dt.date):
        return f"{value:%Y-%m-%d}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)
