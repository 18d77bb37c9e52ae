"""Qlib basic statistics over 5..60-day windows, evaluated by Qlib's expression engine."""

from __future__ import annotations

from precompute_assets.indicators.registry import add_indicator

FAMILY = "qlib_stats"
WINDOWS = (5, 10, 20, 30, 60)
_TEMPLATES = {
    "MEAN": ("Mean($close, {n})", "mean of close over {n} days"),
    "STD": ("Std($close, {n})", "standard deviation of close over {n} days"),
    "MAX": ("Max($high, {n})", "highest high over {n} days"),
    "MIN": ("Min($low, {n})", "lowest low over {n} days"),
    "QTLU": ("Quantile($close, {n}, 0.8)", "80% quantile of close over {n} days"),
    "QTLD": ("Quantile($close, {n}, 0.2)", "20% quantile of close over {n} days"),
    "CORR": ("Corr($close, $volume, {n})", "correlation of close and volume over {n} days"),
    "CHANGE": ("Ref($close, {n})/$close - 1", "close {n} days ago over today's close, minus 1"),
}


def _register() -> None:
    for prefix, (template, meaning) in _TEMPLATES.items():
        for n in WINDOWS:
            expression = template.format(n=n)
            add_indicator(
                f"{prefix}_{n}",
                FAMILY,
                expression=expression,
                formula=f"{expression}: {meaning.format(n=n)} (Qlib rolling, partial windows at the start)",
                warmup=n if prefix == "CHANGE" else 0,
                params={"window": n},
                added="2026-11-25",
            )


_register()
