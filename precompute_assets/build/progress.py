"""Progress and structured per-stock log lines for long steps, through whatever logger the caller gives."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

Log = Callable[[str], None]


def no_log(message: str) -> None:
    """The default for notebook use: steps stay quiet."""


class Progress:
    """Counts stocks through a step; reports done/total, elapsed and time left at most every `every` s.

    Per-stock lines given to `advance` go out with the next report, one log message for many lines:
    each message is a Dagster event stored in the instance, and a build has five lines per stock.
    """

    def __init__(self, step: str, total: int, log: Log, every: float = 3.0) -> None:
        self.step, self.total, self.log, self.every = step, total, log, every
        self.done = 0
        self.started = self.last = time.perf_counter()
        self.pending: list[str] = []

    def advance(self, n: int = 1, lines: Iterable[str] = ()) -> None:
        self.done += n
        self.pending.extend(lines)
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            elapsed = now - self.started
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            report = f"{self.step}: {self.done}/{self.total} stocks, {elapsed:.1f}s elapsed, ~{left:.0f}s left"
            self.log("\n".join([report, *self.pending]))
            self.pending.clear()


def stock_line(**fields: object) -> str:
    """One JSON line per stock and step (stock, family, outcome, seconds...), for log search and alerts."""
    return json.dumps(fields, default=str, sort_keys=True)
