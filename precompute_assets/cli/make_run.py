"""`make run`: build or update the store through Dagster runs, with progress and a one-screen summary.

The runs go to the Dagster instance in `DAGSTER_HOME`, so they show in the UI afterwards. The
calendar runs first, then the stale buckets in runs of neighbouring buckets, the stale ones split into
one range per core by the rule the backfill policy uses (`partitions.buckets_per_run_setting`),
two runs at a time, one per core (each runs the store's checks and records them per bucket), then
the manifest, then a backup when something changed and every check passed. While the ranges run,
it shows one line per running range (its `precompute/progress` tag: buckets, stocks, time left).
A bucket whose input, indicator definitions and calendar history are unchanged is not run at all, so
a second `make run` on the same input finishes quickly and changes nothing.
"""

from __future__ import annotations

import gc
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from precompute_assets.cli import import_prefetch
from precompute_assets.settings import RUNS_AT_A_TIME


def main(workers: int = RUNS_AT_A_TIME) -> int:
    """Start the bucket workers first, then import and run the rest (`make_run_driver`).

    The workers' imports (the definitions, Qlib, Great Expectations) take longer than this process's
    calendar run now takes; a worker imports this module again when it starts, and this module imports
    only the standard library and the settings, so both start their imports at once. Before either,
    the files those imports read are asked for all at once (`import_prefetch`).
    """
    import_prefetch.prefetch()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_warm_worker) as pool:
        for _ in range(workers):  # each submit starts a worker: they import while the calendar runs here
            pool.submit(_worker_ready)
        import precompute_assets.definitions  # noqa: F401  (the calendar run loads them first thing)
        from precompute_assets.cli import make_run_driver

        freeze_imported_heap()
        return make_run_driver.main(pool)


def _warm_worker() -> None:
    """A bucket worker's imports, done once as it starts: what its runs load, the definitions, and
    Great Expectations, which their checks import (seconds of a run's start otherwise)."""
    import great_expectations  # noqa: F401

    import precompute_assets.cli.make_run_driver
    import precompute_assets.definitions  # noqa: F401

    import_prefetch.record()  # what the next `make run` asks for before its imports
    freeze_imported_heap()


FULL_COLLECTION_EVERY = 1000
"""Young-generation collections between two full ones (Python's default is 10)."""


def freeze_imported_heap() -> None:
    """Take what the imports built out of the garbage collector's reach (`gc.freeze`), and collect the
    whole heap far less often: a run's steps allocate millions of objects that outlive a young
    collection (a bucket's JSON records, its stocks' frames and metadata), and by Python's default
    each tenth young collection then walks every object the run holds, about a hundred times a run.
    Reference counting frees nearly all of it anyway; the young collections still reclaim new cycles.
    No collection first: on the main process it would delay the calendar run, and the little garbage
    frozen with the rest is never walked either."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def _worker_ready() -> None:
    """The task that starts a worker (`ProcessPoolExecutor` starts its processes on submit)."""


if __name__ == "__main__":
    sys.exit(main())
