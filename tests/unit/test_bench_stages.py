"""The pure parts of the stage-alone benchmark: its preloaded messages, spreads, ratios, offsets."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from aiokafka import TopicPartition

from bench.stage_alone import parse_replay_output, ratio, reached, spread
from bench.stage_preload import (
    JobRef,
    Message,
    generation_requests,
    job_successes,
    poll_checks,
    recorder_messages,
)
from schemas.events import EVENT_TYPES, Event, GenerationRequested, JobSucceeded, PollDue
from schemas.topics import Topics

TOPICS = Topics("tbench.")
JOBS = [JobRef(f"task_emu{i:04d}", f"gen_emu{i:04d}") for i in range(4)]
HOST = "127.0.0.1:8089"


def decode(message: Message) -> Event:
    """The event a stage's subscriber would parse from `message`, by its event-type header."""
    headers = dict(message.headers)
    assert headers["content-type"] == b"application/json"
    model = EVENT_TYPES[headers["event-type"].decode()]
    event = model.model_validate_json(message.value)
    # Keyed like KafkaPublisher keys it: a request's events share a partition, so keep order.
    assert message.key == event.request_id.encode()
    return event


def test_generation_requests_are_valid_requests_on_their_topic() -> None:
    messages = generation_requests(5, "s", TOPICS)
    events = [decode(m) for m in messages]
    assert all(isinstance(e, GenerationRequested) for e in events)
    assert {m.topic for m in messages} == {TOPICS.generation_requested}
    # Distinct request ids: each one is a new provider job for the submitter.
    assert len({e.request_id for e in events}) == 5


def test_poll_checks_point_at_the_given_emulator_jobs() -> None:
    messages = poll_checks(JOBS, "p", TOPICS, HOST)
    events = [decode(m) for m in messages]
    assert {m.topic for m in messages} == {TOPICS.due("poller")}
    assert all(isinstance(e, PollDue) for e in events)
    assert [e.provider_job_id for e in events if isinstance(e, PollDue)] == [j.job_id for j in JOBS]
    assert all(isinstance(e, PollDue) and e.request is not None for e in events)


def test_job_successes_name_the_jobs_generations_and_keep_the_snapshot() -> None:
    messages = job_successes(JOBS, "f", TOPICS, HOST)
    events = [e for e in map(decode, messages) if isinstance(e, JobSucceeded)]
    assert len(events) == len(JOBS)
    assert {m.topic for m in messages} == {TOPICS.job_succeeded}
    for job, event in zip(JOBS, events, strict=True):
        assert event.provider_job_id == job.job_id
        assert event.generation_ids == [job.generation_id]
        assert event.endpoint_host == HOST
        # The fetcher checks the video's duration against the request's.
        assert event.request is not None and event.request.seconds == 5


def test_recorder_messages_are_seven_events_per_request_on_this_prefix() -> None:
    messages = recorder_messages(3, "r", TOPICS)
    events = [decode(m) for m in messages]
    assert len(messages) == 21
    assert all(m.topic == TOPICS.for_event(e) for m, e in zip(messages, events, strict=True))
    assert all(m.topic.startswith("tbench.") for m in messages)
    assert Counter(e.event_type for e in events) == {
        "GenerationRequested": 3,
        "JobSubmitted": 3,
        "JobProgressed": 9,
        "JobSucceeded": 3,
        "VideoStored": 3,
    }
    # The value is the event's own JSON (what the recorder stores), not a wrapper.
    assert json.loads(messages[0].value)["request_id"] == events[0].request_id


def test_spread_is_median_with_min_and_max() -> None:
    result = spread([30.0, 10.0, 20.0])
    assert (result.median, result.low, result.high) == (20.0, 10.0, 30.0)
    assert spread([10.0, 21.0]).text() == "16 (10-21)"  # median 15.5 rounds to even
    with pytest.raises(ValueError):
        spread([])


def test_ratio_is_median_over_median() -> None:
    assert ratio([50.0, 40.0, 1000.0], [100.0, 80.0]) == pytest.approx(50.0 / 90.0)


def test_reached_needs_every_partition_and_counts_empty_ones() -> None:
    a0, a1 = TopicPartition("a", 0), TopicPartition("a", 1)
    assert reached({a0: 5}, {a0: 5, a1: 0})  # a1 is empty: nothing to commit there
    assert not reached({a0: 5}, {a0: 5, a1: 2})
    assert not reached({a0: 4, a1: 2}, {a0: 5, a1: 2})
    assert reached({a0: 6, a1: 2}, {a0: 5, a1: 2})


# What `vidpipe replay records` printed (COLUMNS=200, not a terminal) on 2026-12-02.
REPLAY_OUTPUT = """\
                     replay records
┌────────────────────────────┬──────────────────────────┐
│ from                       │ sqlite:////tmp/rp-src.db │
│ into                       │ sqlite:////tmp/rp-dst.db │
│ events read                │ 14                       │
│ events applied             │ 14                       │
│ projects built             │ 2                        │
│ skipped (unknown types)    │ 0                        │
│ skipped (invalid payloads) │ 0                        │
│ time                       │ 0.03 s                   │
└────────────────────────────┴──────────────────────────┘
"""


def test_parse_replay_output_reads_the_summary_table() -> None:
    assert parse_replay_output(REPLAY_OUTPUT) == {
        "events read": 14.0,
        "events applied": 14.0,
        "time": 0.03,
    }


def test_parse_replay_output_refuses_a_summary_without_its_figures() -> None:
    with pytest.raises(RuntimeError, match="time"):
        parse_replay_output(REPLAY_OUTPUT.replace("│ time ", "│ took "))
