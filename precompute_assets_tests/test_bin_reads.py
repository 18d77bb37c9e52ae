"""Reading the store's files leaves their access time as it was (`bin_file.READ_FLAGS`)."""

import os
from pathlib import Path

import numpy as np

from precompute_assets.store.bin_checksums import check_files
from precompute_assets.store.bin_columns import Paths
from precompute_assets.store.bin_file import encode, open_for_reading, read_raw


def test_the_python_and_compiled_reads_do_not_touch_the_access_time(tmp_path):
    path = tmp_path / "close.day.bin"
    payload = encode(3, np.arange(10, dtype=np.float32))
    path.write_bytes(payload)
    old = 1_000_000_000_000_000_000  # an access time before the modification: relatime would update it
    os.utime(path, ns=(old, path.stat().st_mtime_ns))
    assert read_raw(path).tolist() == [3.0, *range(10)]
    fd = open_for_reading(path)
    assert os.read(fd, 4) == payload[:4]
    os.close(fd)
    checked = check_files(Paths.of([str(path)]), np.array([len(payload)]), np.array([0]), np.array([0]))
    assert checked.size.tolist() == [len(payload)]
    assert path.stat().st_atime_ns == old
    with open(path, "rb") as handle:  # a plain read on this file system does update it: the test can fail
        handle.read()
    assert path.stat().st_atime_ns != old or "noatime" in _mount_options(path)


def _mount_options(path) -> str:
    best, options = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _device, point, _kind, flags, *_ = line.split()
        if str(path).startswith(point) and len(point) > len(best):
            best, options = point, flags
    return options
