"""The records: the append-only `events` log and the `projects` table projected from it.

`project()` is a pure function (current row, event) -> changes, so replaying the log rebuilds the
table, and redelivered or out-of-order events never move a status backwards: each status has a
rank and an update only applies when it does not lower it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import desc, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.events import (
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    VideoStored,
)
from vidpipe.db import events, projects

__all__ = ["STATUS_RANK", "TERMINAL_STATUSES", "ProjectView", "Records", "project"]

# Higher ranks win. Terminal states share the top rank so neither overwrites the other.
STATUS_RANK: dict[str, int] = {
    "requested": 0,
    "submitted": 1,
    "queued": 2,
    "running": 3,
    "generated": 4,
    "download_unavailable": 5,
    "stored": 9,
    "failed": 9,
}
TERMINAL_STATUSES = frozenset({"stored", "failed", "download_unavailable"})


def _rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "requested", 0)


def project(current: dict[str, Any], event: Event) -> dict[str, Any]:
    """The column changes `event` makes to a project row whose columns are `current`."""
    changes: dict[str, Any] = {}

    def advance(status: str) -> None:
        if _rank(status) >= _rank(current.get("status")) and current.get("status") not in (
            "stored",
            "failed",
        ):
            changes["status"] = status

    def fill(column: str, value: Any) -> None:
        if value is not None and current.get(column) is None:
            changes[column] = value

    match event:
        case GenerationRequested():
            for column, value in (
                ("prompt", event.prompt),
                ("input_image_url", str(event.input_image_url) if event.input_image_url else None),
                ("provider", event.provider),
                ("model", event.model),
                ("parent_request_id", event.parent_request_id),
                ("metadata", dict(event.metadata) or None),
            ):
                fill(column, value)
            if current.get("status") is None:
                changes["status"] = "requested"
        case JobSubmitted():
            advance("submitted")
            changes["provider"] = event.provider
            fill("model", event.model)
            changes["sora_job_id"] = event.provider_job_id
            changes["azure_endpoint"] = event.endpoint_host
            fill("expires_at", event.expires_at)
        case JobProgressed():
            before = _rank(current.get("status"))
            advance(event.status)
            if event.progress is not None and (
                "status" in changes or _rank(event.status) == before
            ):
                changes["progress"] = max(event.progress, current.get("progress") or 0)
            fill("sora_job_id", event.provider_job_id)
        case JobSucceeded():
            advance("generated")
            changes["progress"] = 100
            changes["sora_generation_id"] = event.generation_ids[0]
            fill("sora_job_id", event.provider_job_id)
            if event.expires_at is not None:
                changes["expires_at"] = event.expires_at
        case JobFailed():
            if current.get("status") != "stored":
                changes["status"] = "failed"
                changes["error_message"] = f"{event.reason_code}: {event.message}"
        case DownloadUnavailable():
            advance("download_unavailable")
            changes["attempted_download_at"] = event.attempted_at
            fill("sora_generation_id", event.generation_id)
            if current.get("status") != "stored":
                changes["error_message"] = (
                    f"Video generated (job: {event.provider_job_id}, gen: {event.generation_id})"
                    f" but not downloadable: {event.reason_code}: {event.message}"
                )
        case VideoStored():
            # Variant 0 is the project's video; a real video replaces a placeholder, never the
            # other way round.
            if event.variant_index == 0 and not (
                event.placeholder
                and current.get("status") == "stored"
                and not current.get("placeholder")
            ):
                changes.update(
                    status="stored",
                    output_image_url=event.storage_url,
                    placeholder=event.placeholder,
                    video_size_bytes=event.size_bytes,
                    video_sha256=event.sha256,
                    progress=100,
                )
                if not event.placeholder:
                    changes["error_message"] = None
                fill("sora_generation_id", event.generation_id)
                fill("sora_job_id", event.provider_job_id)
    return {k: v for k, v in changes.items() if current.get(k) != v}


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
            "updated_at": self.updated_at.isoformat(),
        }


class Records:
    """Writes the event log and the projects table; reads them back for the CLI."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def record(self, event: Event, topic: str) -> bool:
        """Log `event` and apply it to its project. False when it was already recorded."""
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            inserted = await self._insert_ignore(
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
            await self._insert_ignore(
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
            return True

    @staticmethod
    async def _insert_ignore(
        conn: AsyncConnection, table: Any, values: dict[str, Any], key: str
    ) -> bool:
        stmt: Any
        if conn.dialect.name == "postgresql":
            stmt = pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
        elif conn.dialect.name == "sqlite":
            stmt = (
                sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
            )
        else:
            stmt = insert(table).values(**values)
        result = await conn.execute(stmt)
        return bool(result.rowcount)

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
    )
