"""Every domain metric of vidpipe, in one place, and how the code that sees a fact records it.

A `Metrics` holds the instruments on one `CollectorRegistry`: each `Stage` builds one on its own
registry (`Stage.metrics`, served with FastStream's metrics on `VIDPIPE_METRICS_PORT`), the
gateway one on its `/metrics` registry. The adapters deep down (the provider HTTP layer, the
download, the timer relay, the dead letters) do not get it passed through every constructor:
they call `current()`, the `Metrics` in a context variable. The stage's broker middleware
(`StageMetricsMiddleware`) sets it around every delivery, and the stage's lifespan sets it
before its broker and timer relay start (their tasks inherit it), so several stages in one
process each count into their own registry. Code running outside any stage (a unit test, a
script) records into a process default that nobody serves.

Labels stay bounded: a provider name, an action, an HTTP status code, a status, a topic, an
error class; never a request id, a URL or a message.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from faststream import BaseMiddleware, ContextRepo
from faststream.message import StreamMessage
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "LATENCY_BUCKETS_S",
    "Metrics",
    "StageMetricsMiddleware",
    "activate",
    "current",
    "recording",
]

#: From a second to a few hours: a video takes minutes, a fallback path can take an hour.
LATENCY_BUCKETS_S = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
#: One HTTP call or handler: milliseconds to a minute.
CALL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: A download: a fraction of a second to the download deadline (600 s by default).
DOWNLOAD_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: A timer fires up to one smallest tier late by design; more says the relay is behind.
FIRE_DELAY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class Metrics:
    """The domain instruments of one stage (or the gateway), on `registry`."""

    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        self.stage = stage
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # --- requests and jobs (sampled from the records and the ledger) ---
        self.requests = Gauge(
            "vidpipe_requests",
            "Requests by their status now (the recorder's projects table)",
            ["status"],
            registry=r,
        )
        self.jobs_in_flight = Gauge(
            "vidpipe_jobs_in_flight",
            "Provider jobs submitted and not ended yet, per provider (the submitter's ledger)",
            ["provider"],
            registry=r,
        )
        self.quota_slots_in_use = Gauge(
            "vidpipe_quota_slots_in_use",
            "Concurrent-job quota slots taken, per provider (the submitter's ledger)",
            ["provider"],
            registry=r,
        )
        self.quota_slots_limit = Gauge(
            "vidpipe_quota_slots_limit",
            "Concurrent-job quota, per provider",
            ["provider"],
            registry=r,
        )
        # --- time ---
        self.stage_seconds = Histogram(
            "vidpipe_stage_seconds",
            "Time in this stage: from the message reaching its topic to its handler finishing",
            ["stage", "topic"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "vidpipe_end_to_end_seconds",
            "From GenerationRequested's occurred_at to VideoStored's, per provider",
            ["provider", "placeholder"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        # --- providers ---
        self.provider_calls = Counter(
            "vidpipe_provider_calls",
            "Provider API calls, by HTTP status code (or transport_error)",
            ["stage", "provider", "action", "code"],
            registry=r,
        )
        self.provider_call_seconds = Histogram(
            "vidpipe_provider_call_duration_seconds",
            "Provider API call time, until the answer's headers",
            ["stage", "provider", "action"],
            buckets=CALL_BUCKETS_S,
            registry=r,
        )
        self.provider_retries = Counter(
            "vidpipe_provider_retries",
            "Provider calls retried in place, by the error that caused the retry",
            ["stage", "error"],
            registry=r,
        )
        # --- downloads ---
        self.download_bytes = Counter(
            "vidpipe_download_bytes",
            "Video bytes downloaded and stored",
            ["stage", "provider"],
            registry=r,
        )
        self.download_seconds = Histogram(
            "vidpipe_download_duration_seconds",
            "One video's download and store, every in-place attempt included, by outcome",
            ["stage", "provider", "outcome"],
            buckets=DOWNLOAD_BUCKETS_S,
            registry=r,
        )
        # --- timers ---
        self.timers_pending = Gauge(
            "vidpipe_timers_pending",
            "Durable timers waiting on the stage's timer topics (its relay group's lag)",
            ["stage"],
            registry=r,
        )
        self.timer_fire_delay = Histogram(
            "vidpipe_timer_fire_delay_seconds",
            "How late a timer fired after its due time",
            ["stage"],
            buckets=FIRE_DELAY_BUCKETS_S,
            registry=r,
        )
        # --- failures and lag ---
        self.dead_letters = Counter(
            "vidpipe_dead_letters",
            "Messages dead-lettered, by reason (poison or attempts_exhausted) and error class",
            ["stage", "topic", "reason", "error_type"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "vidpipe_consumer_lag",
            "Messages not consumed yet by the stage's consumer groups, per topic and partition",
            ["group", "topic", "partition"],
            registry=r,
        )
        # --- the gateway ---
        self.http_requests = Counter(
            "vidpipe_http_requests",
            "Gateway HTTP requests, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "vidpipe_http_request_duration_seconds",
            "Gateway HTTP request time, until the response starts",
            ["route", "method"],
            buckets=CALL_BUCKETS_S,
            registry=r,
        )
        self.generations_accepted = Counter(
            "vidpipe_gateway_generations",
            "POST /v1/generations answered, by outcome (accepted, resent)",
            ["outcome"],
            registry=r,
        )

    # --- recording, one method per fact ---------------------------------------------------

    def provider_call(self, provider: str, action: str, code: int | str, seconds: float) -> None:
        self.provider_calls.labels(self.stage, provider, action, str(code)).inc()
        self.provider_call_seconds.labels(self.stage, provider, action).observe(seconds)

    def provider_retry(self, error: str) -> None:
        self.provider_retries.labels(self.stage, error).inc()

    def download(self, provider: str, outcome: str, seconds: float, size_bytes: int) -> None:
        self.download_seconds.labels(self.stage, provider, outcome).observe(seconds)
        if size_bytes:
            self.download_bytes.labels(self.stage, provider).inc(size_bytes)

    def timer_fired(self, delay_s: float) -> None:
        self.timer_fire_delay.labels(self.stage).observe(max(0.0, delay_s))

    def dead_lettered(self, topic: str, *, poison: bool, error_type: str) -> None:
        reason = "poison" if poison else "attempts_exhausted"
        self.dead_letters.labels(self.stage, topic, reason, error_type).inc()

    def in_stage(self, topic: str, seconds: float) -> None:
        self.stage_seconds.labels(self.stage, topic).observe(max(0.0, seconds))

    def stored_after(self, provider: str | None, *, placeholder: bool, seconds: float) -> None:
        placeholder_label = "true" if placeholder else "false"
        self.end_to_end_seconds.labels(provider or "unknown", placeholder_label).observe(
            max(0.0, seconds)
        )

    def set_requests(self, counts: dict[str, int]) -> None:
        """The whole set of statuses: a status no request has any more drops to zero."""
        for status in _known_labels(self.requests, "status") - set(counts):
            self.requests.labels(status).set(0)
        for status, count in counts.items():
            self.requests.labels(status).set(count)

    def set_quota(self, provider: str, *, in_use: int, in_flight: int, limit: int | None) -> None:
        self.quota_slots_in_use.labels(provider).set(in_use)
        self.jobs_in_flight.labels(provider).set(in_flight)
        if limit is not None:
            self.quota_slots_limit.labels(provider).set(limit)

    def set_lag(self, lag: dict[tuple[str, str, int], int], timer_topics: set[str]) -> None:
        """Every (group, topic, partition) the stage's groups committed; the timer topics'
        sum is what waits as timers."""
        for group, topic, partition in lag:
            self.consumer_lag.labels(group, topic, str(partition)).set(
                lag[(group, topic, partition)]
            )
        if timer_topics:
            waiting = sum(n for (_g, topic, _p), n in lag.items() if topic in timer_topics)
            self.timers_pending.labels(self.stage).set(waiting)


def _known_labels(metric: Gauge, name: str) -> set[str]:
    return {
        sample.labels[name]
        for family in metric.collect()
        for sample in family.samples
        if name in sample.labels
    }


_default = Metrics("process")
_current: ContextVar[Metrics | None] = ContextVar("vidpipe_metrics", default=None)


def current() -> Metrics:
    """The metrics of the stage this code runs in (the process default outside any stage)."""
    return _current.get() or _default


def activate(metrics: Metrics) -> None:
    """Make `metrics` current in this task and every task it starts from now on (a stage's
    lifespan, before its broker starts its consumers)."""
    _current.set(metrics)


@contextlib.contextmanager
def recording(metrics: Metrics) -> Iterator[Metrics]:
    """`metrics` current inside the block (tests)."""
    token = _current.set(metrics)
    try:
        yield metrics
    finally:
        _current.reset(token)


class StageMetricsMiddleware(BaseMiddleware):
    """Every delivery of a stage's subscribers is handled with the stage's `Metrics` current
    (whichever task runs it: a real consumer's, or a test broker's caller), and timed: from the
    record's Kafka timestamp (when it reached its topic) to the end of its handling, failed
    deliveries included. A batch counts each of its records."""

    def __init__(self, msg: Any, /, *, context: ContextRepo, metrics: Metrics) -> None:
        super().__init__(msg, context=context)
        self._metrics = metrics

    @classmethod
    def factory(cls, metrics: Metrics) -> Callable[..., StageMetricsMiddleware]:
        """What a broker's `middlewares` take: FastStream builds one middleware per message."""

        def make(msg: Any, /, *, context: ContextRepo) -> StageMetricsMiddleware:
            return cls(msg, context=context, metrics=metrics)

        return make

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        token = _current.set(self._metrics)
        try:
            return await call_next(msg)
        finally:
            _current.reset(token)
            raw = msg.raw_message
            now = time.time()
            for record in raw if isinstance(raw, tuple) else (raw,):
                stamp = getattr(record, "timestamp", None)
                topic = getattr(record, "topic", None)
                if isinstance(stamp, int) and stamp > 0 and isinstance(topic, str):
                    self._metrics.in_stage(topic, now - stamp / 1000)
