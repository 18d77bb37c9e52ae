"""Is the store older than its input? The core's `store_status`, asked once per state, with one warning.

The input's current version comes from cached file fingerprints (`input_state`), so the per-call
check costs a few `stat`s. Only when it, or the store's manifest or published calendar, changes does
`store_status` compare stock by stock (content versions, not timestamps).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from precompute_assets.build.freshness import store_status
from precompute_assets.consumers.input_state import InputState
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout

log = logging.getLogger(__name__)
_checked: dict[tuple[str, str, int, int], Freshness] = {}


class StaleStoreWarning(UserWarning):
    """The store was built from an older input than the one in the input folder."""


@dataclass(frozen=True)
class Freshness:
    """The verdict, and the stored stocks whose input has rows the store does not show (yet)."""

    stale: bool
    lagging: frozenset[str] = frozenset()
    reason: str = ""


def check_freshness(settings: Settings, state: InputState | None) -> Freshness:
    """Compare the store with the input; warns (log and `StaleStoreWarning`) once per state."""
    if state is None:
        return Freshness(stale=False, reason="no input folder to compare the store with")
    layout = StoreLayout(settings.qlib_data_path)
    key = (str(layout.root), state.version, _mtime(layout.data_version_path), _mtime(layout.calendar_path))
    if key not in _checked:
        _checked[key] = _verdict(settings)
        if _checked[key].stale:
            log.warning(_checked[key].reason)
            warnings.warn(_checked[key].reason, StaleStoreWarning, stacklevel=4)
    return _checked[key]


def _verdict(settings: Settings) -> Freshness:
    status = store_status(settings)
    if status.current:
        return Freshness(stale=False, reason="store built from the current input")
    reason = (
        f"store {settings.qlib_data_path} is older than its input: built from input {status.built_from}, "
        f"the input is now {status.input_version}; behind: {_sample(status.behind)}; not in the store: "
        f"{_sample(status.missing)}; appended but unpublished: {_sample(status.unpublished)}. "
        "Stored values are used as they are, dates the store lacks are computed; re-materialize the store"
    )
    return Freshness(stale=True, lagging=frozenset(status.behind) | frozenset(status.unpublished), reason=reason)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _sample(codes: list[str], n: int = 5) -> str:
    listed = ", ".join(codes[:n])
    return (listed + (", ..." if len(codes) > n else "")) if codes else "none"
