"""`make dev`: `dagster dev` (webserver, daemon and their shared code server), with the project's
daemon (`cli.daemon`, backfills looked at every few seconds instead of every 30) in place of Dagster's.

`dagster dev` starts its daemon as `python -m dagster._daemon run ...`; this runs Dagster's own `dev`
command with that one module name replaced, every argument and option passed through.

    python -m precompute_assets.cli.dev -h 127.0.0.1 -p 3000 -w workspace.yaml
"""

from __future__ import annotations

from collections.abc import Sequence

DAGSTER_DAEMON, PROJECT_DAEMON = "dagster._daemon", "precompute_assets.cli.daemon"


def with_project_daemon(command: Sequence[str]) -> list[str]:
    """`command` with Dagster's daemon module swapped for the project's; any other command unchanged."""
    args = list(command)
    for i in range(len(args) - 1):
        if args[i] == "-m" and args[i + 1] == DAGSTER_DAEMON:
            args[i + 1] = PROJECT_DAEMON
    return args


def main() -> None:
    from dagster._cli import dev

    open_subprocess = dev.open_ipc_subprocess

    def open_with_project_daemon(command: Sequence[str], **kwargs):
        return open_subprocess(with_project_daemon(command), **kwargs)

    dev.open_ipc_subprocess = open_with_project_daemon
    dev.dev_command(prog_name="dagster dev")


if __name__ == "__main__":
    main()
