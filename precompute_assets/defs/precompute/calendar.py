"""The trading calendar: one unpartitioned asset writes `calendars/day.txt` for every bucket."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from precompute_assets.build.pipeline import build_calendar
from precompute_assets.defs.precompute.input_source import stock_parquet_files
from precompute_assets.defs.precompute.reporting import to_result
from precompute_assets.defs.resources import PrecomputeSettings


@asset(deps=[stock_parquet_files], group_name="precompute", description="Union of every input date (never shrinks).")
def trading_calendar(context: AssetExecutionContext, precompute: PrecomputeSettings) -> MaterializeResult:
    report = build_calendar(precompute.settings)
    for error in report.errors:
        context.log.error(error)
    return to_result(report)
