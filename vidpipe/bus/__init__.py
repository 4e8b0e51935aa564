"""The bus every stage shares: the broker, the publisher handlers use, dead letters, timers.

Handlers never touch the broker: they receive a `Publisher` (publish an event, schedule a
timer), so tests pass an in-memory one, the way httpx swaps transports.

    broker.py      make_broker: a KafkaBroker with dead letters and metrics on every subscriber
    publisher.py   Publisher (the interface) and KafkaPublisher (one FastStream publisher per
                   declared event type)
    deadletter.py  the failure model: poison and messages out of attempts -> `{prefix}deadletter`
                   (and JobFailed), world errors waited out without bound
    batches.py     handle_keyed_batch: a consumer batch, its requests side by side, one commit
    health.py      StageHealth: /healthz, /readyz and the metrics on one port
    timers.py      durable timers: TimerScheduler writes them, TimerRelay releases them
    admin.py       topic administration
    address.py     where the broker is (the one rule for the CLI and the stages)
    upstream.py    RequestPublisher: how other systems publish requests
"""

from __future__ import annotations

from vidpipe.bus.broker import make_broker
from vidpipe.bus.deadletter import DeadLetterMiddleware, RedeliveryBackoff
from vidpipe.bus.publisher import KafkaPublisher, Publisher
from vidpipe.bus.timers import TimerRelay, TimerScheduler

__all__ = [
    "DeadLetterMiddleware",
    "KafkaPublisher",
    "Publisher",
    "RedeliveryBackoff",
    "TimerRelay",
    "TimerScheduler",
    "make_broker",
]
