"""Reading the records' costs: the `projects` rows a cost report or a lineage total needs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from vidpipe.db.tables import projects
from vidpipe.policy.cost_report import CostRow, lineage_costs

__all__ = ["cost_rows", "lineage_cost"]

_COLUMNS = (
    projects.c.request_id,
    projects.c.parent_request_id,
    projects.c.provider,
    projects.c.created_at,
    projects.c.status,
    projects.c.estimated_cost_usd,
    projects.c.cost_usd,
    projects.c.metadata,
)


async def cost_rows(
    engine: AsyncEngine, *, since: datetime | None = None, until: datetime | None = None
) -> list[CostRow]:
    """Every request created in [since, until), with the failover children of those requests
    (a child may be created after the window its root belongs to)."""
    query = select(*_COLUMNS).order_by(projects.c.created_at)
    if since is not None:
        query = query.where(projects.c.created_at >= since)
    if until is not None:
        query = query.where(projects.c.created_at < until)
    async with engine.connect() as conn:
        rows = [_row(r) for r in (await conn.execute(query)).mappings()]
        ids = {row.request_id for row in rows}
        if (since is not None or until is not None) and ids:
            children = select(*_COLUMNS).where(
                projects.c.parent_request_id.in_(sorted(ids)),
                projects.c.request_id.not_in(sorted(ids)),
            )
            rows += [_row(r) for r in (await conn.execute(children)).mappings()]
    return rows


async def lineage_cost(engine: AsyncEngine, request_id: str) -> float:
    """What `request_id` and its failover children cost so far, in USD."""
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                select(*_COLUMNS).where(
                    or_(
                        projects.c.request_id == request_id,
                        projects.c.parent_request_id == request_id,
                    )
                )
            )
        ).mappings()
        rows = [_row(r) for r in found]
    return lineage_costs(rows).get(request_id, 0.0)


def _row(row: Any) -> CostRow:
    created = row["created_at"]
    if created.tzinfo is None:  # SQLite hands timestamps back naive; they were written in UTC
        created = created.replace(tzinfo=UTC)
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    return CostRow(
        request_id=row["request_id"],
        parent_request_id=row["parent_request_id"],
        provider=row["provider"],
        created_at=created,
        status=row["status"],
        estimated_cost_usd=row["estimated_cost_usd"],
        cost_usd=row["cost_usd"],
        metadata={str(k): str(v) for k, v in metadata.items()},
    )
