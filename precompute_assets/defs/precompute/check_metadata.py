"""A `ValidationResult` as asset-check metadata: GX summary, failing stocks and columns, a failure table."""

from __future__ import annotations

from dagster import MetadataValue

from precompute_assets.validation.result import ValidationResult

TABLE_ROWS = 50


def check_metadata(result: ValidationResult) -> dict[str, object]:
    metadata: dict[str, object] = {
        "gx_statistics": MetadataValue.json(result.statistics),
        "gx_expectations": MetadataValue.json(result.expectations),
        "failure_count": len(result.failures),
        "failing_stocks": MetadataValue.json(result.failing_stocks),
        "failing_columns": MetadataValue.json(result.failing_columns),
        "failures": MetadataValue.md(_table(result)),
    }
    for key, value in result.checked.items():
        metadata[key] = MetadataValue.json(value) if isinstance(value, list | dict) else value
    return metadata


def _table(result: ValidationResult) -> str:
    if result.passed:
        return "none"
    lines = ["| stock | column | problem | rows | first |", "| --- | --- | --- | --- | --- |"]
    for failure in result.failures[:TABLE_ROWS]:
        cells = (failure.code, failure.column, failure.problem, str(failure.rows), failure.example)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    if len(result.failures) > TABLE_ROWS:
        lines.append(f"\n... and {len(result.failures) - TABLE_ROWS} more")
    return "\n".join(lines)
