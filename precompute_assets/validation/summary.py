"""The whole store at a glance, and a markdown data-quality report with the worst stocks and columns.

Everything comes from the per-stock `_stock.json` files and the manifest, so the summary costs a
directory walk, not a read of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from precompute_assets.build.freshness import store_status
from precompute_assets.indicators.catalog import load_registry
from precompute_assets.indicators.registry import FAMILIES
from precompute_assets.settings import Settings
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.manifest import read_json, stock_metas

NAN_ALERT = 0.05  # a column with more NaN than this past its warm-up counts against the quality score


@dataclass
class StoreSummary:
    """What a user of the data-management page looks at first."""

    metadata: dict[str, object]
    report_markdown: str


def summarize(settings: Settings, worst: int = 10) -> StoreSummary:
    layout = StoreLayout(settings.qlib_data_path)
    registry = load_registry()
    metas = stock_metas(layout)
    version = read_json(layout.data_version_path)
    status = store_status(settings)
    names = {i.name for i in registry.all()}
    problems: dict[str, dict[str, str]] = {}
    for code, meta in metas.items():
        stored = set(meta.get("indicators", {}))
        for name in names:
            if name.lower() not in stored:
                problems.setdefault(code, {})[name] = "missing"
        for name, share in meta.get("quality", {}).get("nan_share", {}).items():
            if share > NAN_ALERT:
                problems.setdefault(code, {})[name] = f"{share:.0%} NaN after warm-up"
    cells = len(metas) * len(names)
    score = round(100 * (1 - sum(len(p) for p in problems.values()) / cells), 2) if cells else None
    size = sum(size for meta in metas.values() for size, _crc in meta.get("files", {}).values())
    metadata = {
        "stocks": len(metas),
        "first_date": (version.get("date_range") or [None])[0],
        "last_date": (version.get("date_range") or [None, None])[1],
        "columns_total": len(names),
        **{f"columns_{family}": len(registry.all(family)) for family in FAMILIES},
        "size_on_disk_mb": round(size / 2**20, 1),
        "data_quality_score": score,
        "last_update": version.get("precompute_date"),
        "data_version": version.get("version"),
        "store_current": status.current,
        "stocks_behind_input": len(status.behind) + len(status.missing),
        "stocks_delisted": len(status.delisted),
    }
    return StoreSummary(metadata, _report(metas, problems, status, score, worst))


def _report(metas: dict, problems: dict[str, dict[str, str]], status, score, worst: int) -> str:
    lines = [f"# Data quality: score {score} / 100", ""]
    lines.append(f"{len(metas)} stocks; {len(problems)} with a missing column or more than {NAN_ALERT:.0%} NaN.")
    if status.behind or status.missing:
        lines += ["", f"**Behind their input:** {', '.join((status.behind + status.missing)[:worst])}"]
    lines += ["", "## Worst stocks", "", "| stock | problems | examples |", "| --- | --- | --- |"]
    for code, found in sorted(problems.items(), key=lambda kv: -len(kv[1]))[:worst]:
        examples = "; ".join(f"{k}: {v}" for k, v in list(found.items())[:3])
        lines.append(f"| {code} | {len(found)} | {examples} |")
    by_column: dict[str, int] = {}
    for found in problems.values():
        for name in found:
            by_column[name] = by_column.get(name, 0) + 1
    lines += ["", "## Worst columns", "", "| column | stocks affected |", "| --- | --- |"]
    lines += [f"| {name} | {n} |" for name, n in sorted(by_column.items(), key=lambda kv: -kv[1])[:worst]]
    cleaning = {}
    for meta in metas.values():
        for rule, n in meta.get("quality", {}).get("input", {}).items():
            cleaning[rule] = cleaning.get(rule, 0) + n
    lines += ["", "## Input cleaning (rows, all stocks)", "", "| rule | count |", "| --- | --- |"]
    lines += [f"| {rule} | {n} |" for rule, n in sorted(cleaning.items()) if n]
    return "\n".join(lines) + "\n"
