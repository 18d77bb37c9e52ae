"""`make run` asks for the files its imports read before they start (`cli.import_prefetch`)."""

import ctypes
import json
import mmap
import os
import subprocess
import sys
import time
import zlib
from importlib.util import cache_from_source

from precompute_assets.cli import import_prefetch


def test_the_record_names_the_compiled_modules_and_shared_libraries_the_process_loaded(tmp_path):
    listing = tmp_path / "files.txt"
    import_prefetch.record(listing)
    files = set(listing.read_text().splitlines())
    assert cache_from_source(json.__file__) in files  # a module's compiled file, what an import reads
    assert zlib.__file__ in files or not zlib.__file__.endswith(".so")  # an extension module
    assert any(".so" in os.path.basename(f) for f in files)  # the shared libraries the process maps
    assert all(os.path.isfile(f) for f in files)


def test_prefetch_reads_every_recorded_file_into_the_page_cache_and_skips_missing_ones(tmp_path):
    listing, data = tmp_path / "files.txt", tmp_path / "data.bin"
    data.write_bytes(os.urandom(1 << 20))
    fd = os.open(data, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache
    os.close(fd)
    listing.write_text(f"{tmp_path / 'gone.pyc'}\n{data}\n")
    thread = import_prefetch.prefetch(listing)
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive()
    deadline = time.monotonic() + 30  # the reads it asked for complete on their own
    while _cached_share(data) < 1.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cached_share(data) == 1.0


def test_without_a_record_nothing_is_asked_for(tmp_path):
    assert import_prefetch.prefetch(tmp_path / "none.txt") is None


def test_a_make_run_worker_records_what_the_next_make_run_asks_for(tmp_path):
    """The worker's start (`make_run._warm_worker`) writes the list after its imports."""
    listing = tmp_path / "files.txt"
    code = (
        "from pathlib import Path; from precompute_assets.cli import import_prefetch, make_run;"
        f"import_prefetch.LIST_FILE = Path({str(listing)!r});"
        "make_run._warm_worker()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    files = listing.read_text().splitlines()
    assert any(f.endswith("precompute_assets/definitions.py") for f in files)
    assert any("great_expectations" in f for f in files)


def _cached_share(path) -> float:
    """The share of the file's pages in the page cache (`mincore` over a mapping of it)."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    resident = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        first = ctypes.c_char.from_buffer(mapped)
        found = ctypes.CDLL(None).mincore(ctypes.c_void_p(ctypes.addressof(first)), ctypes.c_size_t(size), resident)
        del first  # the mapping closes only once nothing points into it
    assert found == 0
    return sum(v & 1 for v in resident) / pages
