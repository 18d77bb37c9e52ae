"""Great Expectations 1.x run inside a validation: one ephemeral context, pandas frames, named failures.

`dagster-ge` does not support GX 1.x, so the checks drive GX themselves. Every validation turns what
it inspects into a frame whose rows carry a stock code (and a date or a column name); GX evaluates
the expectations and lists the unexpected rows, which become `Failure`s naming stocks and columns.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precompute_assets.validation.result import Failure

CODE, COLUMN, DATE = "code", "column", "date"


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
    """One ephemeral GX context for one validation call: nothing is written to disk."""

    def __init__(self, name: str) -> None:
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
        self.statistics = {"evaluated_expectations": 0, "successful_expectations": 0, "unsuccessful_expectations": 0}
        self.expectations: list[dict[str, object]] = []

    def run(
        self,
        frame_name: str,
        frame: pd.DataFrame,
        rules: Sequence[Rule],
        index_columns: Sequence[str],
        detail_columns: Sequence[str] = (),
    ) -> list[Failure]:
        """Validate `frame` against `rules`; unexpected rows are grouped per stock and column.

        `index_columns` identify a row (`code` plus `date` or `column`); `detail_columns` are shown in
        the failure's example (e.g. the first mismatching date of a stock's column).
        """
        batch = (
            self.source.add_dataframe_asset(frame_name)
            .add_batch_definition_whole_dataframe(frame_name)
            .get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
        )
        suite = self.context.suites.add(
            self._gx.ExpectationSuite(
                name=f"{self.name}.{frame_name}", expectations=[copy.copy(r.expectation) for r in rules]
            )
        )
        names = [*index_columns, *detail_columns]
        result = batch.validate(
            suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": names}
        )
        for key in self.statistics:
            self.statistics[key] += int(result.statistics[key])
        failures: list[Failure] = []
        for rule, outcome in zip(rules, result.results, strict=True):
            self.expectations.append(_summary(frame_name, outcome))
            if outcome.exception_info.get("raised_exception"):
                message = outcome.exception_info.get("exception_message")
                failures.append(
                    Failure("*", rule.column or "*", f"{rule.problem}: GX could not evaluate it: {message}")
                )
            elif not outcome.success:
                failures.extend(_failures(rule, outcome.result.get("unexpected_index_list") or []))
        return failures

    def summary(self) -> dict[str, float]:
        """GX's statistics over every frame this session validated."""
        evaluated = self.statistics["evaluated_expectations"]
        percent = 100.0 * self.statistics["successful_expectations"] / evaluated if evaluated else 100.0
        return {**self.statistics, "success_percent": round(percent, 2)}


def _summary(frame_name: str, outcome) -> dict[str, object]:
    kwargs = outcome.expectation_config.kwargs
    column = kwargs.get("column") or f"{kwargs.get('column_A')} vs {kwargs.get('column_B')}"
    return {
        "frame": frame_name,
        "expectation": outcome.expectation_config.type,
        "column": column,
        "success": bool(outcome.success),
        "element_count": outcome.result.get("element_count"),
        "unexpected_count": outcome.result.get("unexpected_count"),
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
