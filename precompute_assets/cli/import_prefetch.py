"""Ask for the files `make run`'s imports will read, all at once, before the imports start.

A `make run` after a day's pause finds its virtual environment on disk, not in the page cache, and
Python's imports read their few thousand modules and shared libraries one at a time: each waits for
the disk, so a slow disk turns seconds of imports into a minute before the first run starts. Asked
for together (`posix_fadvise(WILLNEED)` from a pool of threads), the reads overlap.

What to ask for is what the last `make run` loaded: a worker records, once its imports are done,
every file its process has mapped or imported (`record`); the next `make run` asks for them
(`prefetch`). The list lives next to the interpreter's environment, as it names that environment's
files; where it cannot be written or read, nothing is asked for and the imports run as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib.util import cache_from_source
from pathlib import Path

LIST_FILE = Path(sys.prefix) / "precompute-import-files.txt"
THREADS = 32
"""Files asked for at once: enough to keep the disk's queue full while each open waits on it."""


def record(path: Path | None = None) -> None:
    """Write the files this process imported (compiled modules, extension modules) and maps (shared
    libraries) to `path` (default `LIST_FILE`), replacing it atomically."""
    path = path or LIST_FILE
    files = set(_mapped_files())
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source:
            continue
        files.add(source)
        if source.endswith(".py"):
            with contextlib.suppress(ValueError, NotImplementedError):
                files.add(cache_from_source(source))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text("\n".join(sorted(f for f in files if os.path.isfile(f))) + "\n")
        os.replace(tmp, path)


def prefetch(path: Path | None = None) -> threading.Thread | None:
    """Start asking for the recorded files in the background; the thread (None when there is no list)."""
    path = path or LIST_FILE
    try:
        files = path.read_text().splitlines()
    except OSError:
        return None
    thread = threading.Thread(target=_ask_for, args=(files,), name="import-prefetch", daemon=True)
    thread.start()
    return thread


def _ask_for(files: list[str]) -> None:
    with ThreadPoolExecutor(THREADS, thread_name_prefix="import-prefetch") as pool:
        for _ in pool.map(advise, files):
            pass


def advise(file: str, advice: int = os.POSIX_FADV_WILLNEED) -> None:
    """`posix_fadvise` over the whole of `file` (WILLNEED: start reading it into the page cache without
    waiting for it); a file that cannot be opened is skipped."""
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, advice)
    finally:
        os.close(fd)


def _mapped_files() -> list[str]:
    """Files this process maps (its shared libraries), from `/proc/self/maps` where there is one."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return [parts[5] for line in lines if len(parts := line.split(maxsplit=5)) == 6 and parts[5].startswith("/")]
