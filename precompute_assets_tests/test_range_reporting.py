"""A range run's metadata describes the whole range: date spans by min/max, column counts not summed."""

from __future__ import annotations

from precompute_assets.build.pipeline import StepReport
from precompute_assets.defs.precompute.reporting import merge_reports


def test_a_range_reports_its_widest_span_and_its_column_count():
    early = StepReport(
        metadata={"stocks_written": 3, "columns": 251, "first_date": "2012-01-04", "last_date": "2024-05-31"}
    )
    late = StepReport(
        metadata={"stocks_written": 2, "columns": 251, "first_date": "2010-01-04", "last_date": "2026-01-30"}
    )
    empty = StepReport(metadata={"stocks_written": 0, "columns": 0, "first_date": None, "last_date": None})
    merged = merge_reports({"b00": early, "b01": late, "b02": empty}).metadata
    assert merged["stocks_written"] == 5
    assert merged["columns"] == 251
    assert merged["first_date"] == "2010-01-04"
    assert merged["last_date"] == "2026-01-30"
