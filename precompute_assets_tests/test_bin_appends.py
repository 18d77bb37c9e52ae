"""The compiled daily append (`store.bin_appends`) against Python's own file calls and zlib."""

import os
import zlib

import numpy as np

from precompute_assets.store.bin_appends import APPENDED, MISSING, NOT_AS_RECORDED, OPEN_AT_ONCE, append_files


def test_each_file_gets_its_row_and_reports_its_crc32_and_modification_time(tmp_path):
    rng = np.random.default_rng(7)
    originals = [rng.bytes(4 * int(n)) for n in rng.integers(1, 3000, size=OPEN_AT_ONCE * 2 + 5)]  # several batches
    paths = []
    for i, data in enumerate(originals):
        paths.append(str(tmp_path / f"f{i}.day.bin"))
        with open(paths[-1], "wb") as handle:
            handle.write(data)
    rows = rng.standard_normal((len(paths), 3)).astype("<f4")
    done = append_files(paths, rows.view(np.uint8), [len(d) for d in originals], [zlib.crc32(d) for d in originals])
    assert (done.status == APPENDED).all()
    for i, (path, data) in enumerate(zip(paths, originals, strict=True)):
        with open(path, "rb") as handle:
            assert handle.read() == data + rows[i].tobytes()
        assert done.crc[i] == zlib.crc32(data + rows[i].tobytes())
        assert done.mtime_ns[i] == os.stat(path).st_mtime_ns


def test_a_missing_file_or_one_of_another_size_is_reported_not_hidden(tmp_path):
    short, longer, whole = (tmp_path / name for name in ("short.bin", "longer.bin", "whole.bin"))
    for path in (short, longer, whole):
        path.write_bytes(b"\0" * 16)
    row = np.ones((4, 1), dtype="<f4").view(np.uint8)
    done = append_files(
        [str(short), str(longer), str(tmp_path / "gone.bin"), str(whole)], row, [20, 12, 16, 16], [0] * 4
    )
    assert done.status.tolist() == [NOT_AS_RECORDED, NOT_AS_RECORDED, MISSING, APPENDED]
    assert not (tmp_path / "gone.bin").exists()  # an append never creates a file
    assert whole.read_bytes() == b"\0" * 16 + np.float32(1).tobytes()
