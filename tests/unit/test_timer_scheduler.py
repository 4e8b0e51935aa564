"""Timer decisions with time as a parameter: the scheduler's due time and tier, and what the relay
does with the record at the head of a tier."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import Timer
from schemas.topics import TIMER_TIERS_S, Topics, timer_tier_topic, timer_topics
from vidpipe.bus.timers import Release, TimerScheduler, next_release, tier_for, wake_at

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_due_time_comes_from_the_clock_and_the_tier_from_the_delay() -> None:
    sent: list[tuple[str, str, bytes]] = []

    async def publish_raw(topic: str, key: str, value: bytes) -> None:
        sent.append((topic, key, value))

    scheduler = TimerScheduler("t.timers.poller", publish_raw, clock=lambda: NOON)
    later = await scheduler.schedule(delay_s=90, target_topic="t.poller.due", key="r1", payload={})
    now = await scheduler.schedule(delay_s=-5, target_topic="t.poller.due", key="r2", payload={})
    hour = await scheduler.schedule(delay_s=7200, target_topic="t.poller.due", key="r3", payload={})

    assert later.due_at == NOON + timedelta(seconds=90)
    assert now.due_at == NOON
    assert hour.due_at == NOON + timedelta(hours=2)
    assert [(topic, key) for topic, key, _ in sent] == [
        ("t.timers.poller.30s", "r1"),
        ("t.timers.poller", "r2"),
        ("t.timers.poller.1h", "r3"),
    ]
    assert Timer.model_validate(json.loads(sent[0][2])).due_at == later.due_at


@pytest.mark.parametrize(
    ("delay_s", "tier"),
    [(0, 0), (0.99, 0), (1, 1), (4.9, 1), (5, 5), (59, 30), (120, 120), (3599, 600), (86400, 3600)],
)
def test_a_timer_goes_to_the_longest_tier_that_does_not_overshoot(
    delay_s: float, tier: int
) -> None:
    assert tier_for(delay_s) == tier


def test_every_tier_has_a_topic_and_every_stage_creates_them() -> None:
    assert timer_topics("p.timers.poller") == [
        "p.timers.poller",
        "p.timers.poller.1s",
        "p.timers.poller.5s",
        "p.timers.poller.30s",
        "p.timers.poller.2m",
        "p.timers.poller.10m",
        "p.timers.poller.1h",
    ]
    assert timer_tier_topic("p.timers.poller", 3600) == "p.timers.poller.1h"
    topics = Topics("p.")
    assert set(topics.timer_tiers("submitter")) <= set(topics.all())
    assert len(TIMER_TIERS_S) == len(set(TIMER_TIERS_S))


def test_a_record_comes_out_one_tier_after_it_went_in_never_after_its_due_time() -> None:
    assert wake_at(100.0, 30, 200.0) == 130.0
    assert wake_at(100.0, 30, 120.0) == 120.0  # a producer clock ahead: the due time wins
    assert wake_at(100.0, 0, 100.5) == 100.0


@pytest.mark.parametrize(
    ("due", "wake", "now", "expected"),
    [
        (200.0, 130.0, 129.0, Release("wait", at=130.0)),  # not out yet
        (200.0, 130.0, 130.0, Release("forward", tier_s=30)),  # 70 s left: the 30 s tier
        (135.0, 130.0, 130.0, Release("forward", tier_s=5)),
        (130.4, 130.0, 130.0, Release("wait", at=130.4)),  # under a tier left: wait at the head
        (130.4, 130.0, 130.4, Release("fire")),
        (130.0, 130.0, 131.0, Release("fire")),  # late (the relay was down): fire at once
    ],
)
def test_what_the_relay_does_with_the_head_of_a_tier(
    due: float, wake: float, now: float, expected: Release
) -> None:
    assert next_release(due_s=due, wake_s=wake, now_s=now) == expected
