"""Topic names. Every name is `{prefix}{suffix}`; the prefix comes from VIDPIPE_TOPIC_PREFIX."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import (
    CancelRequested,
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobCancelled,
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    UserNotified,
    VideoStored,
)

__all__ = [
    "DEFAULT_PREFIX",
    "TIMER_STAGES",
    "TIMER_TIERS_S",
    "Topics",
    "timer_tier_topic",
    "timer_topics",
]

DEFAULT_PREFIX = "vidpipe."

# The stages that keep durable timers: each owns `timers.<stage>` and `<stage>.due`.
TIMER_STAGES: tuple[str, ...] = ("poller", "submitter", "redownloader")

# The fixed delays of the timer tiers, in seconds: a timer waits in `timers.<stage>.<tier>` topics
# whose every message comes out exactly `tier` seconds after it went in, so log order is release
# order (docs/architecture.md#durable-timers). Shorter delays go to `timers.<stage>` itself.
TIMER_TIERS_S: tuple[int, ...] = (1, 5, 30, 120, 600, 3600)


def _tier_label(seconds: int) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def timer_tier_topic(timer_topic: str, tier_s: int) -> str:
    """The topic of one delay tier of a timer topic: `timers.poller` + 30 -> `timers.poller.30s`."""
    return f"{timer_topic}.{_tier_label(tier_s)}"


def timer_topics(timer_topic: str) -> list[str]:
    """A timer topic and its tier topics: everything a stage's timer relay reads."""
    return [timer_topic, *(timer_tier_topic(timer_topic, tier) for tier in TIMER_TIERS_S)]


@dataclass(frozen=True)
class Topics:
    prefix: str = DEFAULT_PREFIX

    def _t(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    @property
    def generation_requested(self) -> str:
        return self._t("generation.requested")

    @property
    def job_submitted(self) -> str:
        return self._t("job.submitted")

    @property
    def job_progressed(self) -> str:
        return self._t("job.progressed")

    @property
    def job_succeeded(self) -> str:
        return self._t("job.succeeded")

    @property
    def job_failed(self) -> str:
        return self._t("job.failed")

    @property
    def download_unavailable(self) -> str:
        return self._t("download.unavailable")

    @property
    def video_stored(self) -> str:
        return self._t("video.stored")

    @property
    def download_retry(self) -> str:
        return self._t("download.retry")

    @property
    def download_gaveup(self) -> str:
        return self._t("download.gaveup")

    @property
    def user_notified(self) -> str:
        return self._t("user.notified")

    @property
    def cancel_requested(self) -> str:
        return self._t("cancel.requested")

    @property
    def job_cancelled(self) -> str:
        return self._t("job.cancelled")

    @property
    def deadletter(self) -> str:
        return self._t("deadletter")

    # Internal topics: a stage's durable timers (`timers.<stage>` and its tiers
    # `timers.<stage>.<tier>`) and where its relay releases them (`<stage>.due`, read by the
    # same stage).
    def timers(self, stage: str) -> str:
        """A stage's timer topic: its timers of less than a second, the base of its tier topics."""
        return self._t(f"timers.{stage}")

    def timer_tiers(self, stage: str) -> list[str]:
        """The stage's timer topic and its tier topics (its timer relay reads them all)."""
        return timer_topics(self.timers(stage))

    def due(self, stage: str) -> str:
        """Where a stage's timers are released to, when due (the stage subscribes to it)."""
        return self._t(f"{stage}.due")

    @property
    def poll_hinted(self) -> str:
        """Where the gateway puts providers' webhooks, as "check this job now" (the poller)."""
        return self._t("poller.hinted")

    def for_event(self, event: Event | type[Event]) -> str:
        """The topic an event of this type is published to."""
        cls = event if isinstance(event, type) else type(event)
        return {
            GenerationRequested: self.generation_requested,
            JobSubmitted: self.job_submitted,
            JobProgressed: self.job_progressed,
            JobSucceeded: self.job_succeeded,
            JobFailed: self.job_failed,
            DownloadUnavailable: self.download_unavailable,
            VideoStored: self.video_stored,
            DownloadRetryScheduled: self.download_retry,
            DownloadGaveUp: self.download_gaveup,
            UserNotified: self.user_notified,
            CancelRequested: self.cancel_requested,
            JobCancelled: self.job_cancelled,
        }[cls]

    def public(self) -> list[str]:
        return [
            self.generation_requested,
            self.job_submitted,
            self.job_progressed,
            self.job_succeeded,
            self.job_failed,
            self.download_unavailable,
            self.video_stored,
            self.download_retry,
            self.download_gaveup,
            self.user_notified,
            self.cancel_requested,
            self.job_cancelled,
            self.deadletter,
        ]

    def internal(self) -> list[str]:
        return [
            *(
                topic
                for stage in TIMER_STAGES
                for topic in (*self.timer_tiers(stage), self.due(stage))
            ),
            self.poll_hinted,
        ]

    def all(self) -> list[str]:
        return self.public() + self.internal()
