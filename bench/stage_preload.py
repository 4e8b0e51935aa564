"""Preloaded messages for the stage-alone benchmark: what each stage finds on its input topic.

Every message is built from `bench.recorder_throughput.build_stream` (the events a request's real
stages produce, with their request snapshots, derived ids and hashes) and encoded exactly as
`vidpipe.bus.publisher.KafkaPublisher` sends it: the event's JSON, keyed by request id, with the
JSON content-type and event-type headers. Provider stages get events naming jobs that really
exist at the emulator (`JobRef`), so every status check and download is a real HTTP call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.recorder_throughput import build_stream
from schemas.events import (
    Event,
    GenerationRequested,
    JobSubmitted,
    JobSucceeded,
    PollDue,
    derive_event_id,
)
from schemas.topics import Topics

__all__ = [
    "JobRef",
    "Message",
    "encode",
    "generation_requests",
    "job_successes",
    "poll_checks",
    "recorder_messages",
]

# What vidpipe.bus.publisher sends with every event (content type + event type).
_CONTENT_TYPE = ("content-type", b"application/json")


@dataclass(frozen=True)
class Message:
    """One Kafka record to preload: topic, key, value and headers."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class JobRef:
    """A job that exists at the emulator: its id and its (first) generation's id."""

    job_id: str
    generation_id: str


def encode(event: Event, topic: str) -> Message:
    """The record a stage's publisher (or its timer relay, for PollDue) writes for `event`."""
    headers = (_CONTENT_TYPE, ("event-type", event.event_type.encode()))
    return Message(topic, event.request_id.encode(), event.model_dump_json().encode(), headers)


def _of_type(events: Iterable[tuple[Event, str]], cls: type[Event]) -> list[Any]:
    return [event for event, _topic in events if isinstance(event, cls)]


def generation_requests(count: int, tag: str, topics: Topics) -> list[Message]:
    """The submitter's input: `count` GenerationRequested on `generation.requested`."""
    requests: list[GenerationRequested] = _of_type(build_stream(count, tag), GenerationRequested)
    return [encode(request, topics.generation_requested) for request in requests]


def _with_job(event: Event, job: JobRef, endpoint_host: str, **extra: Any) -> dict[str, Any]:
    """`event`'s fields pointed at a real emulator job (validated again by the caller)."""
    fields = event.model_dump(mode="json")
    fields.update(provider_job_id=job.job_id, endpoint_host=endpoint_host, **extra)
    return fields


def poll_checks(
    jobs: Sequence[JobRef], tag: str, topics: Topics, endpoint_host: str
) -> list[Message]:
    """The poller's input: one due status check (PollDue) per job on `poller.due`, as the
    poller's timer relay releases a job's first check."""
    submitted: list[JobSubmitted] = _of_type(build_stream(len(jobs), tag), JobSubmitted)
    now = datetime.now(UTC)
    messages = []
    for job, event in zip(jobs, submitted, strict=True):
        due = PollDue(
            event_id=derive_event_id(event.request_id, "PollDue", job.job_id, 0),
            occurred_at=now,
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=job.job_id,
            endpoint_host=endpoint_host,
            last_status=event.status,
            request=event.request,
        )
        messages.append(encode(due, topics.due("poller")))
    return messages


def job_successes(
    jobs: Sequence[JobRef], tag: str, topics: Topics, endpoint_host: str
) -> list[Message]:
    """The fetcher's input: one JobSucceeded per finished emulator job on `job.succeeded`."""
    succeeded: list[JobSucceeded] = _of_type(build_stream(len(jobs), tag), JobSucceeded)
    return [
        encode(
            JobSucceeded.model_validate(
                _with_job(event, job, endpoint_host, generation_ids=[job.generation_id])
            ),
            topics.job_succeeded,
        )
        for job, event in zip(jobs, succeeded, strict=True)
    ]


def recorder_messages(requests: int, tag: str, topics: Topics) -> list[Message]:
    """The recorder's input: every event of `requests` requests (7 each), on its own topic."""
    stream = build_stream(requests, tag)
    # build_stream names the default-prefix topics; re-derive them for this run's prefix.
    return [encode(event, topics.for_event(event)) for event, _default_topic in stream]
