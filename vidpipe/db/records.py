"""The records: the append-only `events` log and the `projects` table projected from it.

This module is the SQL: it logs each event once (by event_id), reads the request's row, and
writes the changes the pure projection (`vidpipe.policy.projection`) says the event makes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import desc, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.events import Event, GenerationRequested, utcnow
from vidpipe.db.tables import events, insert_ignore, projects
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
        now = self.clock()
        async with self.engine.begin() as conn:
            inserted = await insert_ignore(
                conn,
                events,
                {
                    "event_id": str(event.event_id),
                    "request_id": event.request_id,
                    "event_type": event.event_type,
                    "topic": topic,
                    "occurred_at": event.occurred_at,
                    "recorded_at": now,
                    "payload": json.loads(event.model_dump_json()),
                },
                "event_id",
            )
            if not inserted:
                return False
            await insert_ignore(
                conn,
                projects,
                {
                    "request_id": event.request_id,
                    "status": "requested",
                    "created_at": now,
                    "updated_at": now,
                },
                "request_id",
            )
            query = select(projects).where(projects.c.request_id == event.request_id)
            if conn.dialect.name == "postgresql":
                # Two recorder replicas may hold events of one request from different topics.
                query = query.with_for_update()
            row = (await conn.execute(query)).mappings().one()
            current = dict(row)
            if current["status"] == "requested" and not isinstance(event, GenerationRequested):
                current["status"] = None
            changes = project(current, event)
            if changes:
                changes["updated_at"] = now
                await conn.execute(
                    update(projects)
                    .where(projects.c.request_id == event.request_id)
                    .values(**changes)
                )
            parent_id = current.get("parent_request_id") or getattr(
                event, "parent_request_id", None
            )
            if parent_id:
                await self._apply_to_parent(conn, parent_id, {**current, **changes}, event, now)
            return True

    async def _apply_to_parent(
        self,
        conn: AsyncConnection,
        parent_id: str,
        child_row: dict[str, Any],
        event: Event,
        now: datetime,
    ) -> None:
        query = select(projects).where(projects.c.request_id == parent_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        parent = (await conn.execute(query)).mappings().first()
        if parent is None:
            return
        changes = project_parent(dict(parent), child_row, event)
        if changes:
            changes["updated_at"] = now
            await conn.execute(
                update(projects).where(projects.c.request_id == parent_id).values(**changes)
            )

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

    async def event_types(self, request_id: str) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(events.c.event_type)
                .where(events.c.request_id == request_id)
                .order_by(events.c.seq)
            )
            return [r[0] for r in rows]


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
    )
