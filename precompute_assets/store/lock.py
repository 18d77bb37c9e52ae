"""Write locks on the store that hold across processes and across hosts sharing its filesystem.

A lock is the file `<store>/.locks/<name>.lock`, created with O_CREAT|O_EXCL (atomic on local
filesystems and on NFSv3 and later) and holding its owner: host, pid, start time, purpose. While it
is held a heartbeat thread touches it. A lock is stale, and the next writer breaks it, when its owner
is a dead process on this host, or when nobody touched it for `stale_after` seconds (the owner's host
died or lost the filesystem). Bucket writers and store-wide operations (restore) exclude each other:
each takes its own lock, then backs off if a lock of the other kind is held, so at worst both back off.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from precompute_assets.store.errors import OperationError

LOCK_DIR = ".locks"
STORE = "store"
STALE_AFTER = 600.0
WAIT_POLL = 0.5
UNWRITTEN_GRACE = 30.0
"""A lock file without its owner yet may be in the middle of being written; older, it is a crash's leftover."""
WAIT_POLL = 0.5


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int
    started: str
    purpose: str
    token: str

    def __str__(self) -> str:
        return f"host {self.host} pid {self.pid} ({self.purpose or 'no purpose given'}) since {self.started}"


class LockHeldError(OperationError):
    """A second writer was refused; the message names the holder and how the lock goes away."""

    def __init__(self, path: Path, owner: LockOwner | None, stale_after: float) -> None:
        self.path, self.owner = path, owner
        holder = str(owner) if owner else "an owner that has not written its name yet"
        name = path.name.removesuffix(".lock")
        super().__init__(
            f"{name} in {path.parent.parent} is locked by {holder}; a second writer is refused. "
            f"If that process is gone, the lock expires {stale_after:.0f}s after its last heartbeat "
            f"(at once for a dead process on the same host), or remove {path} by hand."
        )


def lock_dir(root: Path) -> Path:
    return Path(root) / LOCK_DIR


def read_owner(path: Path) -> LockOwner | None:
    try:
        return LockOwner(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stale_reason(path: Path, stale_after: float = STALE_AFTER) -> str | None:
    """Why the lock at `path` no longer protects anything, or None while its owner may be writing."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "released"
    owner = read_owner(path)
    if owner is None:
        return f"no owner written for {age:.0f}s" if age > UNWRITTEN_GRACE else None
    if owner.host == socket.gethostname() and not pid_alive(owner.pid):
        return f"process {owner.pid} on this host is gone"
    if age > stale_after:
        return f"no heartbeat for {age:.0f}s"
    return None


def held_locks(root: Path, stale_after: float = STALE_AFTER) -> dict[str, LockOwner | None]:
    """Live locks of a store by name."""
    directory = lock_dir(root)
    paths = sorted(directory.glob("*.lock")) if directory.is_dir() else []
    return {p.name.removesuffix(".lock"): read_owner(p) for p in paths if stale_reason(p, stale_after) is None}


class StoreLock:
    """An exclusive lock named `name` on the store at `root`; a context manager.

    `excludes(other)` names the other locks that must not be held at the same time as this one.
    """

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        purpose: str = "",
        stale_after: float = STALE_AFTER,
        excludes: Callable[[str], bool] = lambda other: False,
        wait: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.wait, self.on_wait = wait, on_wait
        self.purpose = purpose
        self.stale_after = stale_after
        self.excludes = excludes
        self.path = lock_dir(root) / f"{name}.lock"
        self.owner: LockOwner | None = None
        self.waited = 0.0
        """Seconds `acquire(wait=...)` spent waiting for another holder."""
        self.waited_for: LockOwner | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self, wait: float = 0.0) -> StoreLock:
        """Take the lock; while another live writer holds it, wait up to `wait` seconds, then refuse.

        Waiting is for writers that would only redo the holder's work (two runs of one bucket): once
        they hold the lock they re-check the store, so queueing behind the holder is safe.
        """
        started = time.monotonic()
        while True:
            try:
                return self._acquire_once()
            except LockHeldError as held:
                if time.monotonic() - started >= wait:
                    raise
                if self.on_wait is not None and self.waited_for is None:  # said once, when waiting starts
                    self.on_wait(f"{self.name}: waiting up to {wait:.0f}s for {held.owner or 'its holder'}")
                self.waited_for = held.owner or self.waited_for
                time.sleep(min(WAIT_POLL, max(wait - (time.monotonic() - started), 0.01)))
                self.waited = time.monotonic() - started

    def _acquire_once(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if stale_reason(self.path, self.stale_after) is None or not self._break_stale():
                    raise LockHeldError(self.path, read_owner(self.path), self.stale_after) from None
                continue
            self.owner = LockOwner(socket.gethostname(), os.getpid(), _now(), self.purpose, uuid.uuid4().hex)
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(asdict(self.owner)))
                handle.flush()
                os.fsync(handle.fileno())
            self._refuse_if_excluded()
            self._start_heartbeat()
            return self
        raise LockHeldError(self.path, read_owner(self.path), self.stale_after)

    def release(self) -> None:
        """Remove the lock if it is still ours (a lock broken as stale and taken by another is left alone)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.owner is not None and read_owner(self.path) == self.owner:
            self.path.unlink(missing_ok=True)
        self.owner = None

    def __enter__(self) -> StoreLock:
        return self.acquire(self.wait)

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _refuse_if_excluded(self) -> None:
        for other in sorted(self.path.parent.glob("*.lock")):
            name = other.name.removesuffix(".lock")
            if name != self.name and self.excludes(name) and stale_reason(other, self.stale_after) is None:
                self.release()
                raise LockHeldError(other, read_owner(other), self.stale_after)

    def _break_stale(self) -> bool:
        """Move the stale lock aside; if what was moved turns out to be a fresh lock, put it back."""
        seen = read_owner(self.path)
        tomb = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, tomb)
        except FileNotFoundError:
            return True
        if read_owner(tomb) != seen:
            with contextlib.suppress(FileExistsError):
                os.link(tomb, self.path)
            tomb.unlink(missing_ok=True)
            return False
        tomb.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lock-{self.name}", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_after / 5):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return


def bucket_lock(
    root: Path,
    bucket: str,
    *,
    purpose: str = "",
    stale_after: float = STALE_AFTER,
    wait: float = 0.0,
    on_wait: Callable[[str], None] | None = None,
) -> StoreLock:
    """The lock a bucket's writer holds while it commits stocks; it also keeps a restore out.

    `wait`: seconds a `with` block waits for another holder before it refuses (telling `on_wait` once)."""
    name, purpose = f"bucket-{bucket}", purpose or f"writing bucket {bucket}"
    return StoreLock(
        root,
        name,
        purpose=purpose,
        stale_after=stale_after,
        excludes=lambda other: other == STORE,
        wait=wait,
        on_wait=on_wait,
    )


def store_lock(root: Path, *, purpose: str, stale_after: float = STALE_AFTER) -> StoreLock:
    """The lock a store-wide operation holds (restore); it refuses while any bucket is being written."""
    return StoreLock(root, STORE, purpose=purpose, stale_after=stale_after, excludes=lambda other: other != STORE)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one of another user's counts).

    A zombie does not count: a killed worker whose parent died too is reparented to pid 1, and where
    pid 1 is not an init that reaps (a container's entry process), it stays a zombie for ever.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return not _zombie(pid)
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether the process has exited and waits to be reaped (state Z or X in /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
