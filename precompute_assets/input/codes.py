"""Stock codes: every common spelling maps to Qlib's canonical `SH600000`."""

from __future__ import annotations

import re

EXCHANGES = ("SH", "SZ", "BJ")
_PATTERNS = (
    re.compile(r"^(?P<ex>SH|SZ|BJ)[._-]?(?P<num>\d{6})$"),
    re.compile(r"^(?P<num>\d{6})[._-]?(?P<ex>SH|SZ|BJ)$"),
)


def canonical_code(stem: str) -> str:
    """`600000.SH`, `SH600000`, `600000_SH`, `sh600000` -> `SH600000`; ValueError otherwise."""
    text = stem.strip().upper()
    for pattern in _PATTERNS:
        match = pattern.match(text)
        if match:
            return f"{match['ex']}{match['num']}"
    raise ValueError(f"{stem!r} is not a stock code (expected e.g. 600000.SH, SH600000, 600000_SH, sh600000)")
