"""What a validation found: a verdict, the Great Expectations summary, and the failing stocks and columns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Failure:
    """One stock and column that broke one rule; `*` stands for every stock or the whole stock.

    `blocking` failures mean the stored data is wrong or unusable; the others (a high NaN share) are
    worth a look but do not stop readers.
    """

    code: str
    column: str
    problem: str
    rows: int = 1
    example: str = ""
    blocking: bool = True

    def __str__(self) -> str:
        where = f" ({self.rows} rows, first: {self.example})" if self.rows > 1 else f" ({self.example})"
        return f"{self.code} {self.column}: {self.problem}{where if self.example else ''}"


@dataclass
class ValidationResult:
    """The outcome of one validation of one bucket (or of a whole store)."""

    check: str
    scope: str
    statistics: dict[str, float] = field(default_factory=dict)
    expectations: list[dict[str, object]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    checked: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def blocking(self) -> bool:
        """True when a failure makes the stored data unfit to read (not only worth a warning)."""
        return any(f.blocking for f in self.failures)

    @property
    def failing_stocks(self) -> list[str]:
        return sorted({f.code for f in self.failures if f.code != "*"})

    @property
    def failing_columns(self) -> list[str]:
        return sorted({f.column for f in self.failures if f.column != "*"})

    def describe(self, limit: int = 20) -> str:
        """One line per failure (the first `limit`), for logs and error messages."""
        if self.passed:
            return f"{self.check} {self.scope}: passed"
        lines = [f"{self.check} {self.scope}: {len(self.failures)} failure(s) in {len(self.failing_stocks)} stock(s)"]
        lines += [f"  - {failure}" for failure in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)

    @classmethod
    def combine(cls, results: list[ValidationResult]) -> ValidationResult:
        """One result for several buckets (a run over a partition range): stock and row counts add up."""
        if len(results) == 1:
            return results[0]
        statistics: dict[str, float] = {}
        checked: dict[str, object] = {}
        for result in results:
            for key, value in result.statistics.items():
                statistics[key] = statistics.get(key, 0) + value
            for key, value in result.checked.items():
                if isinstance(value, list):
                    checked[key] = [*checked.get(key, []), *value]  # type: ignore[misc]
                elif key in checked and (key.endswith("_checked") or key.startswith("stocks_")):
                    checked[key] = checked[key] + value  # type: ignore[operator]
                else:
                    checked.setdefault(key, value)
        evaluated = statistics.get("evaluated_expectations", 0)
        statistics["success_percent"] = (
            round(100.0 * statistics.get("successful_expectations", 0) / evaluated, 2) if evaluated else 100.0
        )
        return cls(
            check=results[0].check,
            scope=",".join(r.scope for r in results),
            statistics=statistics,
            expectations=[e for r in results for e in r.expectations],
            failures=[f for r in results for f in r.failures],
            checked=checked,
        )
