"""The cost report: the records' costs grouped by day, provider and a metadata key.

Pure: rows in, report lines out. Every request is accounted to its lineage: a failover child
(`parent_request_id` set) counts in its root's day and metadata value, under the provider that
ran it, and adds a job, not a request. A row's cost is its final cost (`cost_usd`) when its job
ended; while it is in flight its estimate counts as `open_usd`, not as spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["CostRow", "ReportLine", "cost_report", "lineage_costs"]


@dataclass(frozen=True)
class CostRow:
    request_id: str
    parent_request_id: str | None
    provider: str | None
    created_at: datetime
    status: str
    estimated_cost_usd: float | None
    cost_usd: float | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ReportLine:
    day: str
    provider: str
    value: str | None
    requests: int = 0
    jobs: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    open_usd: float = 0.0

    def as_json(self, key: str | None) -> dict[str, Any]:
        line: dict[str, Any] = {"day": self.day, "provider": self.provider}
        if key is not None:
            line[key] = self.value
        line.update(
            requests=self.requests,
            jobs=self.jobs,
            failed=self.failed,
            cost_usd=round(self.cost_usd, 6),
            open_usd=round(self.open_usd, 6),
        )
        return line


def _spent(row: CostRow) -> float | None:
    """What the row's job cost, None while it runs. A cancelled job the provider had counts at
    its estimate, as the budgets count it."""
    if row.cost_usd is not None:
        return row.cost_usd
    if row.status == "cancelled":
        return row.estimated_cost_usd
    return None


def _root(row: CostRow, by_id: Mapping[str, CostRow]) -> CostRow:
    seen = {row.request_id}
    while row.parent_request_id and row.parent_request_id in by_id:
        row = by_id[row.parent_request_id]
        if row.request_id in seen:  # a cycle cannot come from vidpipe; never loop on one
            break
        seen.add(row.request_id)
    return row


def cost_report(rows: Iterable[CostRow], key: str | None = None) -> list[ReportLine]:
    """One line per (day, provider[, metadata[key]]), days and providers in order."""
    listed = list(rows)
    by_id = {row.request_id: row for row in listed}
    lines: dict[tuple[str, str, str | None], ReportLine] = {}
    for row in listed:
        root = _root(row, by_id)
        day = root.created_at.astimezone(UTC).strftime("%Y-%m-%d")
        value = None if key is None else (root.metadata.get(key) or row.metadata.get(key))
        provider = row.provider or "-"
        line = lines.setdefault((day, provider, value), ReportLine(day, provider, value))
        if root is row:
            line.requests += 1
        if row.estimated_cost_usd is not None:  # a job was submitted (and estimated)
            line.jobs += 1
        if row.status == "failed":
            line.failed += 1
        spent = _spent(row)
        if spent is not None:
            line.cost_usd += spent
        elif row.estimated_cost_usd is not None and row.status != "failed":
            line.open_usd += row.estimated_cost_usd
    return [lines[k] for k in sorted(lines, key=lambda k: (k[0], k[1], k[2] or ""))]


def lineage_costs(rows: Iterable[CostRow]) -> dict[str, float]:
    """Per root request, what its lineage (itself and its failover children) cost so far."""
    listed = list(rows)
    by_id = {row.request_id: row for row in listed}
    totals: dict[str, float] = {}
    for row in listed:
        root = _root(row, by_id).request_id
        totals[root] = totals.get(root, 0.0) + (_spent(row) or 0.0)
    return {root: round(total, 6) for root, total in totals.items()}
