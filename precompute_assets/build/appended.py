"""What each bucket's latest appending store step appended, byte for byte, so the backup after it need
not read the appended files again.

One record per bucket (`<work>/<bucket>/appended.json`, replaced by each store step of the bucket that
appended), outside the store: per stock, the version folder appended to and, per field, the file's
size before the append, its modification time right after it and the appended bytes. The backup uses
a field's bytes only where the store's file is the same file as at the previous backup, that size
then and those bytes longer now, with that modification time (nothing wrote it since), and where the
crc32 chained over them equals the one `_stock.json` records; anything else it reads from the store.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import numpy as np

from precompute_assets.build import intermediates
from precompute_assets.store.stock_commit import Appended

RECORD = "appended.json"


def record_appended(work_path: Path, bucket: str, stocks: dict[str, Appended]) -> None:
    """Replace the bucket's record with this store step's appends (`update_stock`'s results).

    Per stock, the fields' names joined and their numbers and bytes as base64 of packed arrays: the
    backup holds every bucket's record at once, and a JSON value per field cost ten times the memory.
    """
    data = {}
    for code, appended in stocks.items():
        if not appended.fields:
            continue
        before, mtimes, payloads = zip(*appended.fields.values(), strict=True)
        data[code] = {
            "directory": appended.directory,
            "fields": ",".join(appended.fields),
            "before": _pack(np.array(before, dtype="<i8")),
            "mtimes": _pack(np.array(mtimes, dtype="<i8")),
            "lengths": _pack(np.array([len(p) for p in payloads], dtype="<i8")),
            "bytes": base64.b64encode(b"".join(payloads)).decode(),
        }
    path = intermediates.bucket_dir(work_path, bucket) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


class AppendedRecords:
    """Every bucket's latest record, each stock's entry unpacked only when it is taken (`pop`)."""

    def __init__(self, work_path: Path) -> None:
        self._entries: dict[str, dict] = {}
        for path in sorted(Path(work_path).glob(f"*/{RECORD}")) if Path(work_path).is_dir() else []:
            try:
                self._entries.update(json.loads(path.read_text()))
            except (OSError, ValueError):  # unreadable: the backup reads those files from the store
                continue

    def pop(self, code: str) -> Appended | None:
        """The stock's appends (None when no record has them), removed from the records."""
        entry = self._entries.pop(code, None)
        if entry is None:
            return None
        names = entry["fields"].split(",")
        before, mtimes, lengths = (_unpack(entry[key]).tolist() for key in ("before", "mtimes", "lengths"))
        data = base64.b64decode(entry["bytes"])
        ends = np.cumsum(lengths).tolist()
        fields = {
            name: (size, mtime, data[end - length : end])
            for name, size, mtime, length, end in zip(names, before, mtimes, lengths, ends, strict=True)
        }
        return Appended(entry["directory"], fields)


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(values.tobytes()).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<i8")
