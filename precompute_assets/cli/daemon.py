"""`dagster-daemon run`, with the backfill daemon looking at backfills every `BACKFILL_TICK_SECONDS`.

Dagster's backfill daemon sleeps a fixed 30 s between iterations (`DEFAULT_DAEMON_INTERVAL_SECONDS` in
`dagster._daemon.controller`, read by `dagster._daemon.backfill.execute_backfill_iteration_loop` on
every loop; no instance setting changes it). A backfill of the `precompute` job has three levels
(calendar, bucket ranges, manifest and summary) and each waits for the iteration after the one before
it finished, so one click paid up to 30 s per level, plus up to 30 s before anything started and after
the last run, on top of the work. This entry point sets that constant before the daemon starts and
then runs Dagster's own daemon command unchanged. The same constant is the asset daemon's default
interval, which deploy/dagster.yaml pins at 30 s (`auto_materialize.minimum_interval_seconds`).

    python -m precompute_assets.cli.daemon run -w workspace.yaml   # what `make dev` starts (cli.dev)
"""

from __future__ import annotations

BACKFILL_TICK_SECONDS = 2
"""Seconds between the backfill daemon's iterations. An iteration with no backfill in progress is three
queries of the run storage; one with a backfill in progress costs well under a second of CPU."""


def main() -> None:
    from dagster._daemon import controller
    from dagster._daemon.cli import main as dagster_daemon

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = BACKFILL_TICK_SECONDS
    dagster_daemon()


if __name__ == "__main__":
    main()
