"""Commits of the Dagster instance's SQLite databases without waiting for the disk each time.

Dagster stores every event of a run (each log message, planned and done materialization, check result)
in a transaction of its own, and a bucket run of half the market stores over a thousand of them; with
SQLite's default (`synchronous=FULL`) every commit waits for the disk to confirm it. Dagster puts its
databases in WAL mode, where `synchronous=NORMAL` keeps each database consistent through a crash of
the process or of the machine: a power loss may lose the last events committed before it, never
corrupt a database (https://www.sqlite.org/pragma.html#pragma_synchronous). A database in any other
journal mode keeps the default.

Installed on import, for every SQLite connection the process opens afterwards, which is each of
Dagster's: it opens one per transaction. `definitions` and `make run` import it, so the runs' own
processes (make run's workers, the daemon's run workers) write their events this way; Dagster's
webserver and daemon processes keep the default.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect")
def _commit_without_waiting_for_the_disk(connection: object, _record: object) -> None:
    if not isinstance(connection, sqlite3.Connection):
        return
    mode = connection.execute("PRAGMA journal_mode").fetchone()
    if mode is not None and mode[0] == "wal":
        connection.execute("PRAGMA synchronous=NORMAL")
