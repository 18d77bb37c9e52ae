"""What consumes the store, in the graph: lineage marks them stale whenever the store changes."""

import base64

from dagster import MaterializeResult, MetadataValue, asset

from precompute_assets.defs.precompute.manifest import store_manifest
from precompute_assets.defs.resources import PrecomputeSettings


@asset(
    deps=[store_manifest],
    group_name="research",
    description="The five strategies on the stored stocks over the last three years, from the stored indicators.",
)
def backtest_report(precompute: PrecomputeSettings) -> MaterializeResult:
    # imported here: the consumers bring in Qlib's models and mlflow, which every run's process would
    # otherwise load with these definitions (the store's runs never use them)
    from precompute_assets.consumers import backtest_report as run_backtest_report

    report = run_backtest_report(precompute.settings)
    rows = ["| strategy | " + " | ".join(next(iter(report.metrics.values()))) + " |"]
    rows.append("|" + " --- |" * (len(next(iter(report.metrics.values()))) + 1))
    for strategy, metrics in report.metrics.items():
        rows.append(f"| {strategy} | " + " | ".join(f"{v:.4g}" for v in metrics.values()) + " |")
    chart = base64.b64encode(report.equity_png).decode()
    return MaterializeResult(
        metadata={
            "metrics": MetadataValue.md("\n".join(rows)),
            "equity_curve": MetadataValue.md(f"![equity](data:image/png;base64,{chart})"),
            **{f"{s}_total_return": float(m["total_return"]) for s, m in report.metrics.items()},
            **{f"{s}_sharpe": float(m["sharpe"]) for s, m in report.metrics.items()},
        }
    )


@asset(
    deps=[store_manifest],
    group_name="research",
    description="LightGBM on every stored column (Alpha158's label), with IC and rank IC on the test segment.",
)
def trained_model(precompute: PrecomputeSettings) -> MaterializeResult:
    from precompute_assets.consumers import train_model  # imported here: see backtest_report

    result = train_model(precompute.settings)
    return MaterializeResult(
        metadata={**{k: float(v) for k, v in result.metrics.items()}, "features_from": result.handler}
    )


RESEARCH_ASSETS = [backtest_report, trained_model]
