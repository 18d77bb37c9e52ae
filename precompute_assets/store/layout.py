"""Where everything lives inside a Qlib data directory written by this project."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FREQ = "day"
BIN_SUFFIX = f".{FREQ}.bin"  # a field's file: `<field>.day.bin`
META_FILE = "_stock.json"  # a stock's record: span, files with sizes and checksums, indicator fingerprints
PENDING = ".pending"  # in `.stock_versions/<code>/`: a link to a version not yet made current


@dataclass(frozen=True)
class StoreLayout:
    """Paths of Qlib's own layout plus the project's version folders and manifest files."""

    root: Path
    pending: bool = False
    """Look at stocks as the next calendar publication will show them: a stock with a pending version
    (rebuilt onto a calendar with inserted history, not yet visible) is read from that version. The
    store's checks use this view; readers and writers never do."""

    @property
    def calendar_path(self) -> Path:
        return self.root / "calendars" / f"{FREQ}.txt"

    @property
    def working_calendar_path(self) -> Path:
        return self.root / ".calendar" / f"{FREQ}.txt"

    @property
    def instruments_path(self) -> Path:
        return self.root / "instruments" / "all.txt"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def versions_dir(self) -> Path:
        """Immutable per-stock versions; `features/<code>` is a symlink to the current one."""
        return self.root / ".stock_versions"

    @property
    def data_version_path(self) -> Path:
        return self.root / "data_version.json"

    @property
    def indicator_versions_path(self) -> Path:
        return self.root / "indicator_versions.json"

    def bucket_state_path(self, bucket: str) -> Path:
        return self.root / ".buckets" / f"{bucket}.json"

    def input_problems_path(self, bucket: str) -> Path:
        """What the bucket's last build found wrong in its input files (kept until the input changes)."""
        return self.root / ".buckets" / f"{bucket}.input.json"

    def repair_path(self, bucket: str) -> Path:
        """Stocks a check found damaged, to be rebuilt by the bucket's next run."""
        return self.root / ".buckets" / f"{bucket}.repair.json"

    def stock_dir(self, code: str) -> Path:
        if self.pending:
            pending = self.pending_link(code)
            if pending.is_symlink():
                return pending.resolve()
        return self.features_dir / code.lower()

    def pending_link(self, code: str) -> Path:
        """The stock's version waiting for the calendar it was built on to be published."""
        return self.versions_dir / code.lower() / PENDING

    def bin_path(self, code: str, field: str) -> Path:
        return self.stock_dir(code) / f"{field.lower()}{BIN_SUFFIX}"

    def stock_meta_path(self, code: str) -> Path:
        return self.stock_dir(code) / META_FILE


def instrument_line(code: str, first_date: str, last_date: str) -> str:
    """One line of `instruments/all.txt`: code, first and last date (`YYYY-MM-DD`), tab-separated."""
    return f"{code}\t{first_date}\t{last_date}\n"
