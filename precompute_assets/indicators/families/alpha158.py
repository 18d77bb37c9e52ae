"""The 158 Alpha158 factors, as `alpha_001` .. `alpha_158`, evaluated by Qlib's expression engine.

The expressions come from Qlib itself (`Alpha158DL.get_feature_config()`), so a new Qlib version's
definitions flow in unchanged and each column keeps its Qlib name (KMID, ...) in the registry.
"""

from __future__ import annotations

from precompute_assets.indicators.registry import add_indicator

FAMILY = "alpha158"


def _register() -> None:
    from qlib.contrib.data.loader import Alpha158DL

    expressions, qlib_names = Alpha158DL.get_feature_config()
    for number, (expression, qlib_name) in enumerate(zip(expressions, qlib_names, strict=True), start=1):
        add_indicator(
            f"alpha_{number:03d}",
            FAMILY,
            expression=expression,
            qlib_name=qlib_name,
            formula=f"{qlib_name} = {expression}",
            params={"qlib_name": qlib_name},
            added="2026-11-25",
        )


_register()
