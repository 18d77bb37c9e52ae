"""The compiled `statx` pass (`store.file_stats`) against `os.stat`."""

import os

from precompute_assets.store.file_stats import MISSING, stat_files


def test_sizes_inodes_and_modification_times_are_those_os_stat_gives(tmp_path):
    paths = []
    for i in range(50):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(i * 7))
        paths.append(str(path))
    (tmp_path / "link.bin").symlink_to(paths[3])  # followed, as os.stat does
    paths += [str(tmp_path / "link.bin"), str(tmp_path / "gone.bin")]
    found = stat_files(paths)
    for i, path in enumerate(paths[:-1]):
        expected = os.stat(path)
        assert (found.size[i], found.ino[i], found.mtime_ns[i]) == (
            expected.st_size,
            expected.st_ino,
            expected.st_mtime_ns,
        )
    assert found.size[-1] == MISSING
