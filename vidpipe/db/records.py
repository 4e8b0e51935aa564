"""The records: the append-only `events` log and the `projects` table projected from it.

This module is the SQL: it logs each event once (by event_id), reads the request's row, and
writes the changes the pure projection (`vidpipe.policy.projection`) says the event makes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Text,
    any_,
    bindparam,
    cast,
    desc,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.events import Event, GenerationRequested, utcnow
from vidpipe.db.bulk import insert_new, update_rows
from vidpipe.db.tables import JSONText, events, projects
from vidpipe.policy.projection import TERMINAL_STATUSES, project, project_parent

__all__ = ["ProjectView", "Records"]


@dataclass(frozen=True)
class ProjectView:
    request_id: str
    status: str
    progress: int | None
    output_image_url: str | None
    error_message: str | None
    provider: str | None
    sora_job_id: str | None
    prompt: str | None
    placeholder: bool
    updated_at: datetime
    parent_request_id: str | None = None
    failover_request_id: str | None = None
    user_message: str | None = None
    retry_attempts: int | None = None
    #: docs/costs.md: the estimate at submission, the final cost, the price table's version.
    estimated_cost_usd: float | None = None
    cost_usd: float | None = None
    price_version: str | None = None
    #: The providers the lineage went through, in order ("azure-sora,gemini,fal").
    failover_path: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "progress": self.progress,
            "output_image_url": self.output_image_url,
            "error_message": self.error_message,
            "provider": self.provider,
            "sora_job_id": self.sora_job_id,
            "placeholder": self.placeholder,
            "parent_request_id": self.parent_request_id,
            "failover_request_id": self.failover_request_id,
            "user_message": self.user_message,
            "retry_attempts": self.retry_attempts,
            "estimated_cost_usd": self.estimated_cost_usd,
            "cost_usd": self.cost_usd,
            "price_version": self.price_version,
            "failover_path": self.failover_path,
            "updated_at": self.updated_at.isoformat(),
        }


class Records:
    """Writes the event log and the projects table; reads them back for the CLI."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        #: Stamps `recorded_at` / `created_at` / `updated_at`; tests pass a fixed one.
        self.clock = clock

    async def record(self, event: Event, topic: str) -> bool:
        """Log `event` and apply it to its project. False when it was already recorded."""
        return (await self.record_many([(event, topic)]))[0]

    async def record_many(self, batch: Sequence[tuple[Event, str]]) -> list[bool]:
        """Log a batch of (event, topic) in one transaction and apply each to its project, in
        the batch's order; for each, whether it was new (False: recorded before, or earlier in
        the batch).

        The rows are what recording the events one by one would write: the projection runs
        in memory over the rows read once, in order, and only the rows it changed are written.
        """
        if not batch:
            return []
        now = self.clock()
        ids = [str(event.event_id) for event, _topic in batch]  # UUID.__str__ is Python: once
        first_seen: dict[str, int] = {}
        for index, event_id in enumerate(ids):
            first_seen.setdefault(event_id, index)
        async with self.engine.begin() as conn:
            new_ids = await insert_new(
                conn,
                events.c.event_id,
                [_event_row(ids[index], *batch[index], now) for index in first_seen.values()],
            )
            fresh = [
                index == first_seen[event_id] and event_id in new_ids
                for index, event_id in enumerate(ids)
            ]
            if any(fresh):
                applied = [event for (event, _topic), new in zip(batch, fresh, strict=True) if new]
                await _project_all(conn, applied, now)
        return fresh

    async def get(self, request_id: str) -> ProjectView | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(projects).where(projects.c.request_id == request_id)))
                .mappings()
                .first()
            )
        return _view(row) if row else None

    async def recent(self, limit: int = 20) -> list[ProjectView]:
        async with self.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(projects).order_by(desc(projects.c.updated_at)).limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        return [_view(r) for r in rows]

    async def many(self, request_ids: list[str]) -> dict[str, ProjectView]:
        async with self.engine.connect() as conn:
            rows = (
                (await conn.execute(select(projects).where(projects.c.request_id.in_(request_ids))))
                .mappings()
                .all()
            )
        return {r["request_id"]: _view(r) for r in rows}

    async def status_counts(self) -> dict[str, int]:
        """How many requests are in each status now (the `vidpipe_requests` gauge)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(projects.c.status, func.count()).group_by(projects.c.status)
            )
            return {str(status): int(count) for status, count in rows}

    async def requested_at(self, request_ids: Sequence[str]) -> dict[str, datetime]:
        """When each request's GenerationRequested occurred (those the log holds)."""
        if not request_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(events.c.request_id, func.min(events.c.occurred_at))
                .where(
                    events.c.request_id.in_(list(request_ids)),
                    events.c.event_type == "GenerationRequested",
                )
                .group_by(events.c.request_id)
            )
            return {str(rid): _utc(when) for rid, when in rows if when is not None}

    async def event_types(self, request_id: str) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(events.c.event_type)
                .where(events.c.request_id == request_id)
                .order_by(events.c.seq)
            )
            return [r[0] for r in rows]


def _event_row(event_id: str, event: Event, topic: str, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "request_id": event.request_id,
        "event_type": event.event_type,
        "topic": topic,
        "occurred_at": event.occurred_at,
        "recorded_at": now,
        "payload": JSONText(event.model_dump_json()),
    }


#: The columns an event may change: every one but the keys and the creation time.
_MUTABLE = tuple(
    c.name for c in projects.columns if c.name not in ("id", "request_id", "created_at")
)


async def _lock_rows(
    conn: AsyncConnection, request_ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The rows of `request_ids` that exist, locked on PostgreSQL (two recorder replicas may
    hold events of one request from different topics), in key order so that replicas locking
    overlapping rows cannot deadlock each other."""
    wanted = sorted(set(request_ids))
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":
        # One array parameter, not one per key (see `_insert_new`).
        keys = cast(bindparam("keys", wanted, type_=ARRAY(Text)), ARRAY(Text))
        query = select(projects).where(projects.c.request_id == any_(keys)).with_for_update()
    else:
        query = select(projects).where(projects.c.request_id.in_(wanted))
    query = query.order_by(projects.c.request_id)
    return {row["request_id"]: dict(row) for row in (await conn.execute(query)).mappings()}


async def _project_all(conn: AsyncConnection, applied: list[Event], now: datetime) -> None:
    """Apply `applied` (new events, in order) to their rows and their parents' rows."""
    request_ids = sorted({event.request_id for event in applied})
    # A row made just now for a later event of the batch does not exist yet for the events
    # before it (a parent's row made by its own request, recorded after its child's event).
    unborn = await insert_new(
        conn,
        projects.c.request_id,
        [
            {"request_id": rid, "status": "requested", "created_at": now, "updated_at": now}
            for rid in request_ids
        ],
    )
    rows = await _lock_rows(conn, request_ids)
    parent_ids = {row["parent_request_id"] for row in rows.values() if row["parent_request_id"]}
    parent_ids |= {p for e in applied if (p := _parent_of(e))}
    rows |= await _lock_rows(conn, parent_ids - rows.keys())
    # The columns each row's events moved: only those are written back.
    changed: dict[str, set[str]] = {}
    for event in applied:
        unborn.discard(event.request_id)
        row = rows[event.request_id]
        seen = dict(row)
        if seen["status"] == "requested" and not isinstance(event, GenerationRequested):
            seen["status"] = None
        changes = project(seen, event)
        owner = _owner_of(event)
        if owner is not None and seen.get("owner_id") is None:
            changes = {**changes, "owner_id": owner}
        if changes:
            row.update(changes, updated_at=now)
            changed.setdefault(event.request_id, {"updated_at"}).update(changes)
        parent_id = seen.get("parent_request_id") or _parent_of(event)
        parent = rows.get(parent_id) if parent_id and parent_id not in unborn else None
        if parent is not None:
            parent_changes = project_parent(parent, {**seen, **changes}, event)
            if parent_changes:
                parent.update(parent_changes, updated_at=now)
                changed.setdefault(parent["request_id"], {"updated_at"}).update(parent_changes)
    await _write_back(conn, rows, changed)


async def _write_back(
    conn: AsyncConnection, rows: dict[str, dict[str, Any]], changed: dict[str, set[str]]
) -> None:
    """The changed columns of `rows`: one UPDATE per set of columns, for every row whose events
    moved exactly those (a batch holds a few such sets). Writing every column of every row
    would bind 28 values a row and rewrite every index the table has."""
    by_columns: dict[tuple[str, ...], list[str]] = {}
    for rid in sorted(changed):
        columns = tuple(name for name in _MUTABLE if name in changed[rid])
        by_columns.setdefault(columns, []).append(rid)
    for columns, rids in by_columns.items():
        await update_rows(conn, projects.c.request_id, columns, (rows[rid] for rid in rids))


def _parent_of(event: Event) -> str | None:
    """The request a failover child was made from; only a request can name one.

    An isinstance test, not `getattr(event, ..., None)`: a pydantic model answers a missing
    attribute by raising inside its own `__getattr__`, which cost 6 % of a batch's time."""
    return event.parent_request_id if isinstance(event, GenerationRequested) else None


def _owner_of(event: Event) -> str | None:
    """The front end's user a request belongs to: its `metadata.user_id` (docs/supabase.md).

    Row-level security compares it with Supabase's `auth.uid()`; a failover child carries its
    parent's metadata, so it has the same owner."""
    if isinstance(event, GenerationRequested):
        return event.metadata.get("user_id") or None
    return None


def _view(row: Any) -> ProjectView:
    updated = row["updated_at"]
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    return ProjectView(
        request_id=row["request_id"],
        status=row["status"],
        progress=row["progress"],
        output_image_url=row["output_image_url"],
        error_message=row["error_message"],
        provider=row["provider"],
        sora_job_id=row["sora_job_id"],
        prompt=row["prompt"],
        placeholder=bool(row["placeholder"]),
        updated_at=updated,
        parent_request_id=row["parent_request_id"],
        failover_request_id=row["failover_request_id"],
        user_message=row["user_message"],
        retry_attempts=row["retry_attempts"],
        estimated_cost_usd=row["estimated_cost_usd"],
        cost_usd=row["cost_usd"],
        price_version=row["price_version"],
        failover_path=row["failover_path"],
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
