"""The indicator registry: one entry per stored column, whatever family computes it.

Families add their columns on import (`add_indicator`); users add their own with
`catalog.register_indicator` (from a notebook, or from a module named in `PRECOMPUTE_PLUGINS`)
without touching core code. This module imports no family: `catalog` loads them. The registry is
the single source for column names, formulas, versions and history needs: the store, the manifest,
the Dagster code versions and the consumers all read it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import pandas as pd

from precompute_assets.store.base_fields import ALL_BASE_FIELDS

FAMILIES = ("qlib_stats", "alpha158", "technical", "fundamental")

History = Literal["point", "windowed", "recursive", "cumulative"]
"""How much past a value needs: none, a fixed window, a decaying recursion (EMA), or all of it (OBV)."""

Compute = Callable[[pd.DataFrame], pd.Series]
"""Takes one stock's bars (float64, valid rows only, date index) and returns one column."""


class RegistryError(ValueError):
    """A registration that would make the registry ambiguous or unusable."""


@dataclass(frozen=True)
class Indicator:
    """One stored column: what computes it, what it means, and how much history it needs.

    An alias (`same_as` names its source) is a second name for the source's column: the family steps
    do not compute it, the store writes its file from the source's values, and its fingerprint
    follows the source's. The registry fills in the source's compute, expression and history needs.
    """

    name: str
    family: str
    formula: str
    version: str = "1"
    warmup: int = 0
    history: History = "windowed"
    params: Mapping[str, object] = field(default_factory=dict)
    compute: Compute | None = None
    expression: str | None = None
    qlib_name: str | None = None
    added: str = ""
    history_rows: int | None = None
    same_as: str | None = None
    source: Indicator | None = field(default=None, compare=False, repr=False)
    """The resolved `same_as` indicator; set by `Registry.add`."""

    @property
    def field(self) -> str:
        """The store's file stem: Qlib field names are lower case."""
        return self.name.lower()

    @cached_property
    def fingerprint(self) -> str:
        """Identity of what this column holds; changes when its definition or version changes.

        Cached (the indicator is frozen): a bucket's plan compares every column of every stock. An
        alias's changes with its source's, so a changed source restates both files."""
        if self.source is not None:
            text = f"{self.name}|{self.family}|{self.version}|same_as:{self.source.fingerprint}"
        else:
            text = f"{self.name}|{self.family}|{self.version}|{self.expression}|{sorted(self.params.items())}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    @property
    def computed_as(self) -> Indicator:
        """The indicator whose computation gives this column: itself, or an alias's source."""
        return self.source if self.source is not None else self


class Registry:
    """Ordered, name-unique collection of indicators (names are unique case-insensitively)."""

    def __init__(self) -> None:
        self._by_field: dict[str, Indicator] = {}

    def add(self, indicator: Indicator, *, replace: bool = False) -> Indicator:
        if indicator.family not in FAMILIES:
            raise RegistryError(f"indicator {indicator.name!r}: unknown family {indicator.family!r}; one of {FAMILIES}")
        if indicator.field in ALL_BASE_FIELDS:
            raise RegistryError(f"indicator {indicator.name!r}: {indicator.field!r} is a base field of the store")
        existing = self._by_field.get(indicator.field)
        if existing is not None and not replace:
            raise RegistryError(
                f"indicator {indicator.name!r} is already registered by family {existing.family!r} "
                f"as {existing.name!r}; names are unique across families (case-insensitive)"
            )
        aliases = self.aliases_of(indicator.name) if existing is not None else []
        if indicator.same_as is not None:
            indicator = self._resolve_alias(indicator)
            if aliases:
                raise RegistryError(f"indicator {indicator.name!r} is the source of {[a.name for a in aliases]}")
        elif (indicator.compute is None) == (indicator.expression is None):
            raise RegistryError(f"indicator {indicator.name!r}: give exactly one of compute=, expression= or same_as=")
        self._by_field[indicator.field] = indicator
        for alias in aliases:  # a replaced source: its aliases follow the new definition
            self._by_field[alias.field] = self._resolve_alias(dataclasses.replace(alias, compute=None, expression=None))
        return indicator

    def _resolve_alias(self, alias: Indicator) -> Indicator:
        """The alias bound to its registered source, with the source's computation and history needs."""
        source = self._by_field.get(str(alias.same_as).lower())
        if source is None:
            raise RegistryError(f"indicator {alias.name!r}: same_as={alias.same_as!r} is not registered (add it first)")
        if source.same_as is not None:
            raise RegistryError(f"indicator {alias.name!r}: {source.name!r} is itself an alias of {source.same_as!r}")
        if source.field == alias.field:
            raise RegistryError(f"indicator {alias.name!r} cannot be an alias of itself")
        own = (alias.compute, alias.expression)
        if own != (None, None) and own != (source.compute, source.expression):
            raise RegistryError(
                f"indicator {alias.name!r}: an alias takes its source's computation, give same_as= only"
            )
        return dataclasses.replace(
            alias,
            same_as=source.name,
            compute=source.compute,
            expression=source.expression,
            warmup=source.warmup,
            history=source.history,
            history_rows=source.history_rows,
            params=dict(source.params),
            source=source,
        )

    def aliases_of(self, name: str) -> list[Indicator]:
        """The indicators registered as `same_as` this one."""
        return [i for i in self._by_field.values() if i.same_as is not None and i.same_as.lower() == name.lower()]

    def remove(self, name: str) -> None:
        aliases = self.aliases_of(name)
        if aliases:
            raise RegistryError(f"indicator {name!r} is the source of {[a.name for a in aliases]}: remove them first")
        self._by_field.pop(name.lower(), None)

    def get(self, name: str) -> Indicator:
        try:
            return self._by_field[name.lower()]
        except KeyError:
            raise KeyError(f"no registered indicator {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_field

    def all(self, family: str | None = None) -> list[Indicator]:
        return [i for i in self._by_field.values() if family is None or i.family == family]

    def names(self, family: str | None = None) -> list[str]:
        return [i.name for i in self.all(family)]

    def computed(self, family: str | None = None) -> list[Indicator]:
        """The indicators a family step computes: all but the aliases, whose files the store copies."""
        return [i for i in self.all(family) if i.same_as is None]


REGISTRY = Registry()
"""Every registered column: the families add theirs on import (`indicators.catalog.load_registry`)."""


def add_indicator(
    name: str,
    family: str,
    *,
    formula: str,
    compute: Compute | None = None,
    expression: str | None = None,
    version: str = "1",
    warmup: int = 0,
    history: History = "windowed",
    params: Mapping[str, object] | None = None,
    qlib_name: str | None = None,
    added: str | None = None,
    history_rows: int | None = None,
    same_as: str | None = None,
    replace: bool = False,
) -> Indicator:
    """Add one column to the registry; the families call this on import, users `catalog.register_indicator`.

    `compute` serves the pandas families (technical, fundamental); `expression` is a Qlib expression
    for the Qlib families (qlib_stats, alpha158). `warmup` is the count of leading NaN rows; `history`
    and `history_rows` say how many past input rows an appended day needs (see `history.history_need`).
    `replace=True` swaps in a new definition of an existing name (bump `version` so the store
    recomputes it). `same_as="<registered name>"` (instead of `compute` / `expression`) makes this
    column a second name of that one: computed once, stored under both names, with the source's
    warm-up and history.
    """
    indicator = Indicator(
        name=name,
        family=family,
        formula=formula,
        version=str(version),
        warmup=int(warmup),
        history=history,
        params=dict(params or {}),
        compute=compute,
        expression=expression,
        qlib_name=qlib_name,
        added=added or dt.date.today().isoformat(),
        history_rows=history_rows,
        same_as=same_as,
    )
    return REGISTRY.add(indicator, replace=replace)
