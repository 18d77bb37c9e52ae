"""What one 4-byte append to every bin file of a store costs from an empty page cache, one file after
another against each stock's last pages asked for first (`posix_fadvise`, as the store step does).

    sudo .venv/bin/python bench/cold_appends.py /work/fm1000/qlib_data --threads 1 4

Each pass starts from an empty page cache (root only: `drop_caches`, after `sync`; `--pages-only`
keeps the inodes cached). The appends are undone after each pass, outside the timing (every file
truncated to its size and given back its modification time), so the store and its backups stay valid.
Prints seconds and microseconds per file for each way and thread count, and writes JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FOUR_BYTES = b"\x00\x00\xc0\x7f"  # a float32 NaN
PAGE = os.sysconf("SC_PAGE_SIZE")
OPEN_AT_ONCE = 64  # as store.stock_commit does
Stock = list[tuple[str, int, int, int]]
"""A stock's bin files: path, size, access and modification time (ns)."""


def stock_files(store: Path) -> list[Stock]:
    stocks = []
    for link in sorted((store / "features").iterdir()):
        if link.name.startswith("."):
            continue
        files = []
        with os.scandir(link.resolve()) as entries:
            for entry in entries:
                if entry.name.endswith(".day.bin"):
                    stat = entry.stat()
                    files.append((entry.path, stat.st_size, stat.st_atime_ns, stat.st_mtime_ns))
        stocks.append(files)
    return stocks


def plain(files: Stock) -> None:
    for path, *_ in files:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, FOUR_BYTES)
        finally:
            os.close(fd)


def last_pages_first(files: Stock) -> None:
    """As the store step appends: a batch of files opened, their last pages asked for, then written."""
    for at in range(0, len(files), OPEN_AT_ONCE):
        fds = []
        try:
            for path, size, *_ in files[at : at + OPEN_AT_ONCE]:
                fds.append(os.open(path, os.O_WRONLY | os.O_APPEND))
                os.posix_fadvise(fds[-1], size - size % PAGE, PAGE, os.POSIX_FADV_WILLNEED)
            for fd in fds:
                os.write(fd, FOUR_BYTES)
        finally:
            for fd in fds:
                os.close(fd)


def put_back(stocks: list[Stock]) -> None:
    for files in stocks:
        for path, size, atime, mtime in files:
            os.truncate(path, size)
            os.utime(path, ns=(atime, mtime))


def drop_page_cache(pages_only: bool = False) -> bool:
    """Write everything out and empty the page cache (and the inode cache, unless `pages_only`); False
    where the kernel does not allow it (not root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n" if pages_only else "3\n")
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path, help="a store's qlib_data folder")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--pages-only", action="store_true", help="drop the page cache only, not inodes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    stocks = stock_files(args.store)
    files = sum(len(s) for s in stocks)
    results = []
    for threads in args.threads:
        for name, append in (("plain", plain), ("last pages first", last_pages_first)):
            if not drop_page_cache(args.pages_only):
                parser.error("emptying the page cache needs root (/proc/sys/vm/drop_caches)")
            started = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(append, stocks))
            seconds = time.perf_counter() - started
            put_back(stocks)
            results.append({"way": name, "threads": threads, "files": files, "seconds": round(seconds, 2)})
            each = seconds / files * 1e6
            print(f"{name:18s} {threads} thread(s): {files} appends in {seconds:6.2f} s, {each:5.1f} us each")
    if args.json:
        args.json.write_text(json.dumps({"store": str(args.store), "load": os.getloadavg(), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
