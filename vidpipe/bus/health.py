"""A stage's liveness and readiness: what it knows of itself, and the HTTP endpoints saying it.

`StageHealth` is fed from two sides: the dead-letter middleware marks a delivery waiting on a
world error (and clears it when that delivery ends), the stage's probe loop records whether the
broker and the database answered. `readiness` is a pure function of that state and the time.
The endpoints share the metrics port: `/healthz` (live: the event loop still ticks), `/readyz`
(ready: broker connected, database reachable, no delivery waiting on the world), anything else
the Prometheus metrics.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["HealthServer", "Readiness", "StageHealth", "readiness"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]


def readiness(
    *,
    now: float,
    last_probe: float | None,
    probe_window_s: float,
    broker_ok: bool,
    database_ok: bool | None,
    waiting: Iterable[tuple[str, float]],
) -> Readiness:
    """Whether the stage should get traffic, and why not; `waiting` is (error, since) pairs."""
    reasons: list[str] = []
    if last_probe is None or now - last_probe > probe_window_s:
        reasons.append("no recent health probe")
    if not broker_ok:
        reasons.append("broker not connected")
    if database_ok is False:
        reasons.append("database unreachable")
    for error, since in waiting:
        reasons.append(f"retrying a world error ({error}) for {now - since:.0f}s")
    return Readiness(not reasons, tuple(reasons))


class StageHealth:
    """What one stage knows of its own health; its gauges live in the stage's registry."""

    def __init__(
        self,
        stage: str,
        *,
        registry: CollectorRegistry | None = None,
        probe_interval_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.stage = stage
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self._lock = threading.Lock()  # read by the HTTP thread, written by the event loop
        self._waiting: dict[tuple[str, int, int], tuple[str, float]] = {}
        self._last_probe: float | None = None
        self._broker_ok = False
        self._database_ok: bool | None = None
        self._ready_gauge: Gauge | None = None
        self._waiting_gauge: Gauge | None = None
        if registry is not None:
            self._ready_gauge = Gauge(
                "vidpipe_stage_ready", "1 when the stage is ready (see /readyz)", registry=registry
            )
            self._waiting_gauge = Gauge(
                "vidpipe_world_error_waiting",
                "Deliveries waiting on an error of the world (database, broker, provider down)",
                registry=registry,
            )

    def waiting(self, where: tuple[str, int, int], error: str) -> None:
        """A delivery failed for a reason of the world and will be retried."""
        with self._lock:
            since = self._waiting.get(where, (error, self._clock()))[1]
            self._waiting[where] = (error, since)
        self._publish()

    def resolved(self, where: tuple[str, int, int]) -> None:
        """That delivery ended (processed, dead-lettered, or failing for its own reason)."""
        with self._lock:
            if self._waiting.pop(where, None) is None:
                return
        self._publish()

    def probed(self, *, broker_ok: bool, database_ok: bool | None) -> None:
        with self._lock:
            self._last_probe = self._clock()
            self._broker_ok = broker_ok
            self._database_ok = database_ok
        self._publish()

    @property
    def probe_window_s(self) -> float:
        """How old the last probe may be: a few intervals, plus two probes timing out (broker and
        database, each given at least a second)."""
        return 3 * self.probe_interval_s + 2 * max(1.0, self.probe_interval_s)

    def live(self) -> bool:
        """The event loop still runs the probe loop (a wedged loop stops it)."""
        with self._lock:
            last = self._last_probe
        return last is not None and self._clock() - last <= self.probe_window_s

    def readiness(self) -> Readiness:
        with self._lock:
            return readiness(
                now=self._clock(),
                last_probe=self._last_probe,
                probe_window_s=self.probe_window_s,
                broker_ok=self._broker_ok,
                database_ok=self._database_ok,
                waiting=list(self._waiting.values()),
            )

    def _publish(self) -> None:
        if self._ready_gauge is not None and self._waiting_gauge is not None:
            self._ready_gauge.set(1 if self.readiness().ready else 0)
            with self._lock:
                self._waiting_gauge.set(len(self._waiting))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


class HealthServer:
    """`/healthz`, `/readyz` and the metrics on one port, served from a daemon thread."""

    def __init__(self, health: StageHealth, registry: CollectorRegistry, port: int) -> None:
        self._health = health
        self._metrics = make_wsgi_app(registry)
        self._server = make_server(
            "0.0.0.0",  # noqa: S104 - probes come from the orchestrator, outside the container
            port,
            self._app,
            ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="vidpipe-health", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Blocks until the serving thread stops: call it off the event loop."""
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            live = self._health.live()
            return _answer(start_response, live, {"live": live})
        if path == "/readyz":
            state = self._health.readiness()
            return _answer(
                start_response, state.ready, {"ready": state.ready, "reasons": list(state.reasons)}
            )
        result: Iterable[bytes] = self._metrics(environ, start_response)
        return result


def _answer(start_response: Callable[..., Any], ok: bool, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps({"stage_ok": ok, **body}).encode()
    start_response(
        "200 OK" if ok else "503 Service Unavailable",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]
