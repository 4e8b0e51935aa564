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

from sqlalchemy import desc, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.events import (
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    UserNotified,
    VideoStored,
)
from vidpipe.db.tables import events, projects

__all__ = [
    "STATUS_RANK",
    "TERMINAL_STATUSES",
    "ProjectView",
    "Records",
    "project",
    "project_parent",
]

# Higher ranks win, so a redelivered or replayed event never moves a request backwards. The
# fallback states sit between "the provider is done" and "the video is stored".
STATUS_RANK: dict[str, int] = {
    "requested": 0,
    "submitted": 1,
    "queued": 2,
    "running": 3,
    "generated": 4,
    "download_unavailable": 5,
    "retrying": 6,
    "placeholder": 7,
    "expired": 8,
    "gave_up": 8,
    "failed_over": 9,
    "stored": 10,
    "failed": 10,
}
TERMINAL_STATUSES = frozenset({"stored", "failed", "expired", "gave_up"})
_FINAL = frozenset({"stored", "failed"})


def _rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "requested", 0)


def project(current: dict[str, Any], event: Event) -> dict[str, Any]:
    """The column changes `event` makes to its own request's row (`current`)."""
    changes: dict[str, Any] = {}

    def advance(status: str) -> None:
        if current.get("status") not in _FINAL and _rank(status) >= _rank(current.get("status")):
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
            _later(changes, current, "attempted_download_at", event.attempted_at)
            fill("sora_generation_id", event.generation_id)
            fill("expires_at", event.expires_at)
            if current.get("status") != "stored":
                changes["error_message"] = (
                    f"Video generated (job: {event.provider_job_id}, gen: {event.generation_id})"
                    f" but not downloadable: {event.reason_code}: {event.message}"
                )
        case DownloadRetryScheduled():
            advance("retrying")
            if event.attempt >= (current.get("retry_attempts") or 0):
                changes["retry_attempts"] = event.attempt
                changes["next_retry_at"] = event.next_attempt_at
            if event.attempted_at is not None:
                _later(changes, current, "attempted_download_at", event.attempted_at)
        case DownloadGaveUp():
            advance("expired" if event.reason_code == "expired" else "gave_up")
            changes["next_retry_at"] = None
            if current.get("status") not in _FINAL:
                changes["error_message"] = f"{event.reason_code}: {event.message}"
        case UserNotified():
            if event.channel == "record":
                changes["user_message"] = event.message
        case VideoStored():
            if event.variant_index == 0:
                if event.placeholder:
                    # A placeholder never replaces a real video.
                    if current.get("status") not in _FINAL and _rank("placeholder") >= _rank(
                        current.get("status")
                    ):
                        changes.update(_video_columns(event), status="placeholder")
                else:
                    changes.update(_video_columns(event), status="stored", next_retry_at=None)
                    changes["error_message"] = None
                fill("sora_generation_id", event.generation_id)
                fill("sora_job_id", event.provider_job_id)
    return {k: v for k, v in changes.items() if current.get(k) != v}


def project_parent(
    parent: dict[str, Any], child_row: dict[str, Any], event: Event
) -> dict[str, Any]:
    """The changes a failover child's event makes to its parent's row."""
    changes: dict[str, Any] = {}
    if isinstance(event, GenerationRequested) and parent.get("status") not in _FINAL:
        if _rank("failed_over") >= _rank(parent.get("status")):
            changes["status"] = "failed_over"
        changes["failover_request_id"] = child_row["request_id"]
    elif (
        isinstance(event, VideoStored)
        and not event.placeholder
        and event.variant_index == 0
        and (parent.get("status") != "stored" or parent.get("placeholder"))
    ):
        # The parent's record links to the child's video: a UI reading the parent shows it.
        changes.update(_video_columns(event), status="stored", next_retry_at=None)
        changes["failover_request_id"] = child_row["request_id"]
    return {k: v for k, v in changes.items() if parent.get(k) != v}


def _video_columns(event: VideoStored) -> dict[str, Any]:
    return {
        "output_image_url": event.storage_url,
        "placeholder": event.placeholder,
        "video_size_bytes": event.size_bytes,
        "video_sha256": event.sha256,
        "progress": 100,
    }


def _later(changes: dict[str, Any], current: dict[str, Any], column: str, value: datetime) -> None:
    known = current.get(column)
    if known is not None and known.tzinfo is None:
        known = known.replace(tzinfo=UTC)
    if known is None or value > known:
        changes[column] = value


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

    @staticmethod
    async def _insert_ignore(
        conn: AsyncConnection, table: Any, values: dict[str, Any], key: str
    ) -> bool:
        """Insert unless `key` exists; True when a row was inserted.

        RETURNING tells for sure: drivers disagree on rowcount after ON CONFLICT DO NOTHING
        (psycopg may report -1)."""
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = (
            insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[key])
            .returning(table.c[key])
        )
        return (await conn.execute(stmt)).first() is not None

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
