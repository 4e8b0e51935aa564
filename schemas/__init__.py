"""vidpipe's event contract: the event models, topic names and exported JSON Schemas."""

from schemas.events import (
    EVENT_TYPES,
    PUBLIC_EVENTS,
    DeadLetter,
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobFailed,
    JobProgressed,
    JobState,
    JobSubmitted,
    JobSucceeded,
    PollDue,
    Timer,
    VideoStored,
    derive_event_id,
    utcnow,
)
from schemas.topics import DEFAULT_PREFIX, Topics

__all__ = [
    "DEFAULT_PREFIX",
    "EVENT_TYPES",
    "PUBLIC_EVENTS",
    "DeadLetter",
    "DownloadUnavailable",
    "Event",
    "GenerationRequested",
    "JobFailed",
    "JobProgressed",
    "JobState",
    "JobSubmitted",
    "JobSucceeded",
    "PollDue",
    "Timer",
    "Topics",
    "VideoStored",
    "derive_event_id",
    "utcnow",
]
