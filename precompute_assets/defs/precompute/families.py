"""One asset per indicator family, partitioned by bucket, versioned by its registry entries."""

from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, asset

from precompute_assets.build.pipeline import build_family
from precompute_assets.defs.partitions import bucket_backfill_policy, stock_buckets
from precompute_assets.defs.precompute.bars import stock_bars
from precompute_assets.defs.precompute.reporting import materialize_buckets, work_run
from precompute_assets.defs.precompute.retries import BUCKET_RETRIES
from precompute_assets.defs.resources import PrecomputeSettings
from precompute_assets.indicators.catalog import family_code_version, load_registry
from precompute_assets.indicators.registry import FAMILIES

_DESCRIPTIONS = {
    "qlib_stats": "Mean/Std/Max/Min/Quantile/Corr/Ref statistics through Qlib's expression engine.",
    "alpha158": "The 158 Alpha158 factors through Qlib's expression engine (alpha_001 .. alpha_158).",
    "technical": "Technical indicators: TA-Lib where it has them, pandas for KDJ, Ichimoku, VWAP, volatility.",
    "fundamental": "Price and volume features in pandas.",
}


def build_family_asset(family: str) -> AssetsDefinition:
    @asset(
        name=family,
        deps=[stock_bars],
        partitions_def=stock_buckets,
        backfill_policy=bucket_backfill_policy,
        retry_policy=BUCKET_RETRIES,
        code_version=family_code_version(family),
        group_name="indicators",
        description=f"{_DESCRIPTIONS[family]} {len(load_registry().all(family))} columns.",
    )
    def _family(context: AssetExecutionContext, precompute: PrecomputeSettings) -> MaterializeResult:
        return materialize_buckets(
            context,
            lambda bucket: build_family(precompute.settings, bucket, family, context.log.info, work_run(context)),
        )

    return _family


family_assets = [build_family_asset(family) for family in FAMILIES]
