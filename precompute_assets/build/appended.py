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

import json
import os
import uuid
from pathlib import Path

from precompute_assets.build import intermediates
from precompute_assets.store.stock_commit import Appended

RECORD = "appended.json"


def record_appended(work_path: Path, bucket: str, stocks: dict[str, Appended]) -> None:
    """Replace the bucket's record with this store step's appends (`update_stock`'s results)."""
    data = {
        code: {"directory": s.directory, "fields": {f: [b, m, p.hex()] for f, (b, m, p) in s.fields.items()}}
        for code, s in stocks.items()
        if s.fields
    }
    path = intermediates.bucket_dir(work_path, bucket) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def read_appended(work_path: Path) -> dict[str, Appended]:
    """Every bucket's latest appends by stock code (an unreadable record counts as none)."""
    stocks: dict[str, Appended] = {}
    if not Path(work_path).is_dir():
        return stocks
    for path in sorted(Path(work_path).glob(f"*/{RECORD}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for code, entry in data.items():
            fields = {f: (int(b), int(m), bytes.fromhex(p)) for f, (b, m, p) in entry["fields"].items()}
            stocks[code] = Appended(entry["directory"], fields)
    return stocks
