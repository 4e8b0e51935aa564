"""A timer's due time is the scheduler's clock plus the delay (time is a parameter here too)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from schemas.events import Timer
from vidpipe.bus.timers import TimerScheduler

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_due_time_comes_from_the_clock_and_never_lies_in_the_past() -> None:
    sent: list[tuple[str, str, bytes]] = []

    async def publish_raw(topic: str, key: str, value: bytes) -> None:
        sent.append((topic, key, value))

    scheduler = TimerScheduler("t.timers.poller", publish_raw, clock=lambda: NOON)
    later = await scheduler.schedule(delay_s=90, target_topic="t.poller.due", key="r1", payload={})
    now = await scheduler.schedule(delay_s=-5, target_topic="t.poller.due", key="r2", payload={})

    assert later.due_at == NOON + timedelta(seconds=90)
    assert now.due_at == NOON
    assert [(topic, key) for topic, key, _ in sent] == [
        ("t.timers.poller", "r1"),
        ("t.timers.poller", "r2"),
    ]
    assert Timer.model_validate(json.loads(sent[0][2])).due_at == later.due_at
