"""Rebuild the `projects` table from the `events` log, into an empty database.

The `events` log is the truth and `projects` is derived from it: re-applying the log in `seq`
order rebuilds `projects` after a bad migration or a lost database, or checks that the live table
is what the log says.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Text, cast, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import EVENT_TYPES, Event, read_json
from vidpipe.db.records import Records
from vidpipe.db.tables import events, projects
from vidpipe.ops import OpsError, ProgressHook, RefusedError

__all__ = ["RecordsReplay", "replay_records"]


@dataclass
class RecordsReplay:
    events_read: int = 0
    applied: int = 0
    projects_built: int = 0
    skipped_unknown: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    elapsed_s: float = 0.0

    @property
    def skipped(self) -> int:
        return sum(self.skipped_unknown.values())


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _has_events_table(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: inspect(sync).has_table(events.name))


async def replay_records(
    source: AsyncEngine,
    target: AsyncEngine,
    *,
    batch: int = 500,
    progress: ProgressHook | None = None,
) -> RecordsReplay:
    """Rebuild `projects` on `target` (which must be empty) from `source`'s `events` log.

    `target` must already have its tables (open_engine(create=True)). Each page of `batch`
    events goes through `Records.record_many`, the recorder's own code path, so the rebuilt rows
    are what the recorder would have written had it seen the log in this order."""
    if batch < 1:
        raise OpsError("--batch must be at least 1")
    if not await _has_events_table(source):
        raise OpsError("the source database has no `events` table")
    held = {t.name: await _count(target, t) for t in (projects, events)}
    if any(held.values()):
        held_rows = ", ".join(f"{name}: {n} rows" for name, n in held.items() if n)
        raise RefusedError(f"the target database is not empty ({held_rows}); give an empty one")
    started = time.monotonic()
    result = RecordsReplay()
    total = await _count(source, events)
    records = Records(target)
    last_seq = -1
    while True:
        # Keyset pages by seq: stable order, constant memory, no OFFSET scans.
        async with source.connect() as conn:
            rows = (
                await conn.execute(
                    # The payload as the text stored: pydantic reads it in one pass, without
                    # the dict the JSON column would build first.
                    select(
                        events.c.seq,
                        events.c.event_type,
                        events.c.topic,
                        cast(events.c.payload, Text),
                    )
                    .where(events.c.seq > last_seq)
                    .order_by(events.c.seq)
                    .limit(batch)
                )
            ).all()
        if not rows:
            break
        page: list[tuple[Event, str]] = []
        for seq, event_type, topic, payload in rows:
            last_seq = seq
            result.events_read += 1
            model = EVENT_TYPES.get(event_type)
            if model is None:
                result.skipped_unknown[event_type] += 1
                continue
            try:
                page.append((read_json(model, payload), topic))
            except ValidationError:
                result.invalid += 1
        # One transaction per page, in seq order: what recording them one by one would write.
        result.applied += sum(await records.record_many(page))
        if progress is not None:
            progress(result.events_read, max(total, result.events_read))
    result.projects_built = await _count(target, projects)
    result.elapsed_s = time.monotonic() - started
    return result
