"""The registry as every caller uses it: the built-in families and `PRECOMPUTE_PLUGINS` registered.

`registry` is plain data the families add to; this module is the one place that imports the families,
so nothing below it imports back up. A family (or plugin) that fails to import stops start-up with an
error naming it, rather than leaving a half-filled registry.
"""

from __future__ import annotations

import hashlib
import importlib
import os

from precompute_assets.indicators.registry import REGISTRY, Indicator, Registry, RegistryError, add_indicator

BUILT_IN = tuple(
    f"precompute_assets.indicators.families.{name}" for name in ("qlib_stats", "alpha158", "technical", "fundamental")
)
_loaded = False


def load_registry() -> Registry:
    """The registry with the built-in families and any `PRECOMPUTE_PLUGINS` modules registered."""
    global _loaded
    if not _loaded:
        plugins = [m.strip() for m in os.environ.get("PRECOMPUTE_PLUGINS", "").split(",") if m.strip()]
        for module in (*BUILT_IN, *plugins):
            try:
                importlib.import_module(module)
            except Exception as exc:
                kind = "family" if module in BUILT_IN else "plugin (PRECOMPUTE_PLUGINS)"
                raise RegistryError(f"indicator {kind} {module} failed to import: {exc!r}") from exc
        _loaded = True
    return REGISTRY


def register_indicator(name: str, family: str, **definition) -> Indicator:
    """Add one column to the store's definition; re-materializing its family then writes it.

    The built-in families are registered first, so a clash with a built-in name is reported as the
    user's. Arguments as `registry.add_indicator` (`formula=`, and `compute=` or `expression=`, ...).
    """
    load_registry()
    return add_indicator(name, family, **definition)


def family_code_version(family: str) -> str:
    """Dagster code version of a family asset: changes when any of its registry entries changes."""
    prints = ",".join(i.fingerprint for i in load_registry().all(family))
    return hashlib.sha1(prints.encode()).hexdigest()[:12]
