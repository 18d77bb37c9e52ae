"""Third-party console noise, silenced where it starts, each source by its exact message.

Installed once per process by `precompute_assets/__init__.py`, so `make run`, its run processes,
`make dev`'s code server and every run worker start quiet. Nothing here is a blanket filter: a line or
warning that does not match one of the exact texts below (the project's own warnings, any new
third-party message) still shows.

- Qlib's `qlib.contrib.model` prints "ModuleNotFoundError. <model> is/are skipped ..." to stdout at
  import for each optional model library that is missing (CatBoost, XGBoost, PyTorch); the project
  uses none of them.
- gym prints its "unmaintained since 2022" banner to stderr at import; Qlib's RL package imports gym,
  and the project never uses it.
- Dagster's backfill daemon logs its bookkeeping at INFO on every iteration (about ten lines), which
  `make dev`'s daemon runs every 2 s (`cli.daemon`) while a backfill is in progress; the lines that
  say something happened (a run submitted, the backfill done, warnings and errors) still show.
- Dagster warns about beta and preview APIs the project chose knowingly: the observable input source,
  the backfill policy (range runs) and partitioned asset checks (one result per bucket); and that
  `dagster dev`, which `make dev` runs, is superseded by `dg dev` (the project has no `dg` layout).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TextIO


@dataclass(frozen=True)
class ImportNoise:
    """Lines a module prints to `stream` ("stdout" or "stderr") while it is imported."""

    module: str
    stream: str
    lines: tuple[re.Pattern[str], ...]


IMPORT_NOISE = (
    ImportNoise(
        "qlib.contrib.model",
        "stdout",
        (
            re.compile(
                r"ModuleNotFoundError\.\s+\S.* (is|are) skipped\.? ?\(optional: maybe installing .+ can fix it\.?\)\.?"
            ),
        ),
    ),
    ImportNoise(
        "gym",
        "stderr",
        (
            re.compile(r"(Additionally, )?Gym has been unmaintained since 2022 and does not support NumPy 2\.0 .*"),
            re.compile(r"Please upgrade to Gymnasium, the maintained drop-in replacement of Gym, .*"),
            re.compile(r"Users of this version of Gym should be able to simply replace 'import gym' .*"),
            re.compile(r"See the migration guide at https://gymnasium\.farama\.org/introduction/migration_guide/ .*"),
        ),
    ),
)

# Exact starts of Dagster's warnings, selected by message rather than by Dagster's classes so that
# this module (imported by the package) needs no Dagster import and the core stays free of it.
DAGSTER_API_WARNINGS = (
    "Function `observable_source_asset` is currently in beta",  # BetaWarning
    "Parameter `backfill_policy` of function `asset` is currently in beta",  # BetaWarning
    "Specifying a partitions_def on an AssetCheckSpec is currently in preview",  # PreviewWarning
    "Function `dev_command` is superseded",  # `make dev` (cli.dev) runs `dagster dev`, not `dg dev`
)


BACKFILL_DAEMON_LOGGER = "dagster.daemon.BackfillDaemon"
# Exact starts of the backfill daemon's per-iteration INFO lines (dagster/_core/execution/asset_backfill.py).
BACKFILL_ITERATION_LINES = (
    "Evaluating asset backfill ",
    "Assets targeted by backfill ",
    "No relevant assets materialized since last tick.",
    "Assets materialized since last tick:",
    "Not all root assets (assets in backfill that do not have parents in the backill) have been requested",
    "Root assets that have not yet been requested:",
    "Considering the following candidate subset:",
    "Candidate subset is empty.",
    "No asset partitions to request.",
    "Asset partitions to request:",
    "The following assets were considered for materialization but not requested:",
    "Backfill has in progress runs. Backfill is still in progress.",
    "Backfill iteration summary:",
    "Overall backfill status:",
)
_ITERATION_DONE = re.compile(r"Asset backfill \S+ completed iteration with status BulkActionStatus\.REQUESTED\.")


class _BackfillIterationFilter(logging.Filter):
    """Drops the INFO lines the backfill daemon writes on every iteration whatever happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith(BACKFILL_ITERATION_LINES) or _ITERATION_DONE.fullmatch(message))


class _LineFilter:
    """A text stream that drops whole lines matching `patterns` and passes everything else through."""

    def __init__(self, target: TextIO, patterns: Sequence[re.Pattern[str]]) -> None:
        self.target, self.patterns, self.pending = target, patterns, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not any(p.fullmatch(line) for p in self.patterns):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.write("\n")
        self.target.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.target, name)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader with the module's known lines filtered out of one stream."""

    def __init__(self, loader: importlib.abc.Loader, noise: ImportNoise) -> None:
        self.loader, self.noise = loader, noise

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        original = getattr(sys, self.noise.stream)
        quiet = _LineFilter(original, self.noise.lines)
        setattr(sys, self.noise.stream, quiet)
        try:
            self.loader.exec_module(module)
        finally:
            if getattr(sys, self.noise.stream) is quiet:
                setattr(sys, self.noise.stream, original)
            quiet.flush()

    def __getattr__(self, name: str) -> object:  # resources, source, code: the real loader's
        return getattr(self.loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds the noisy modules through the other finders and wraps their loaders."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None):
        noise = next((n for n in IMPORT_NOISE if n.module == fullname), None)
        if noise is None:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _QuietFinder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _QuietLoader(spec.loader, noise)
                return spec
        return None


def install() -> None:
    """Filter the known noise in this process (idempotent)."""
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
    backfill_daemon = logging.getLogger(BACKFILL_DAEMON_LOGGER)
    if not any(isinstance(f, _BackfillIterationFilter) for f in backfill_daemon.filters):
        backfill_daemon.addFilter(_BackfillIterationFilter())
    for message in DAGSTER_API_WARNINGS:
        # `message` is matched at the start of the warning's text: only these exact warnings go
        warnings.filterwarnings("ignore", message=re.escape(message), category=Warning)
