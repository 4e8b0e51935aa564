"""Faults the emulator injects in front of both APIs, by share of requests, switchable at runtime.

The prompt directives (`[emulator:rate_limit]`, ...) make one job misbehave; these make the
provider as a whole misbehave for a while, as a real one does during an incident, without the
client's requests saying so. A fault test turns a share on (POST /_emulator/config, e.g.
`{"fault_rate_limit_share": 0.5}`) for a burst, then off again. Each request draws once:

- `fault_rate_limit_share`: answered 429 with Retry-After before it reaches the API;
- `fault_server_error_share`: answered 5xx (`status_error_code`) before it reaches the API;
- `fault_drop_after_create_share`: a create that succeeds has its connection dropped before the
  answer, and its Idempotency-Key forgotten (as a provider that does not honour it): the job
  exists, the client cannot know it;
- `fault_slow_share`: the answer is held `fault_slow_seconds` (real seconds) after the API
  handled it, long enough to be past the client's timeout.

Every fault served is counted in `/_emulator/stats` under `faults.*`.
"""

from __future__ import annotations

import asyncio
import random

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidpipe.dev.emulator.common import error_response, rate_limit_headers
from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.fal import is_fal_api_path, is_fal_submit
from vidpipe.dev.emulator.state import EmulatorState

__all__ = ["FaultMiddleware", "is_api_path", "is_create"]

# What the answer says before the connection breaks: a body short of its announced length.
_PARTIAL_BODY = b'{"id": '


def is_api_path(path: str) -> bool:
    """Provider API paths (every protocol); the emulator's own /_emulator routes are never hit."""
    return path.startswith(("/openai/", "/v1/", "/v1beta/")) or is_fal_api_path(path)


def is_create(method: str, path: str) -> bool:
    """The requests that start a paid job: Azure's job create, /videos create and remix, a
    Replicate prediction, a fal submit, a Veo operation or a Gemini interaction, a Runway task."""
    if path.startswith(("/openai/", "/v1/", "/v1beta/")):
        return method == "POST" and path.rstrip("/").endswith(
            (
                "/jobs",
                "/videos",
                "/remix",
                "/predictions",
                ":predictLongRunning",
                "/v1beta/interactions",
                "/text_to_video",
                "/image_to_video",
            )
        )
    return is_fal_submit(method, path)


class FaultMiddleware:
    """Draws each API request against the configured fault shares (see the module docstring)."""

    def __init__(self, app: ASGIApp, state: EmulatorState, seed: int | None = None) -> None:
        self.app = app
        self.state = state
        # Its own dice, so turning faults on does not shift the status-error draws.
        self._rng = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not is_api_path(path):
            await self.app(scope, receive, send)
            return
        config = self.state.config
        draw = self._rng.random()
        if draw < config.fault_rate_limit_share:
            self.state.stats["faults.rate_limited"] += 1
            await self._answer_429(config, path, scope, receive, send)
            return
        draw -= config.fault_rate_limit_share
        if draw < config.fault_server_error_share:
            self.state.stats["faults.server_errors"] += 1
            status = config.status_error_code
            response = error_response(
                status, "The server had an error processing your request.", code=str(status)
            )
            await response(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        drop = is_create(method, path) and self._rng.random() < config.fault_drop_after_create_share
        slow = self._rng.random() < config.fault_slow_share
        if drop:
            await self._create_then_drop(scope, receive, send)
            return
        if slow:
            self.state.stats["faults.slowed"] += 1
            await self.app(scope, receive, _held(send, config.fault_slow_seconds))
            return
        await self.app(scope, receive, send)

    async def _answer_429(
        self, config: EmulatorConfig, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        azure_style = path.startswith("/openai/")
        response = error_response(
            429,
            "Rate limit is exceeded. Try again later.",
            code="429" if azure_style else "rate_limit_exceeded",
            type_="rate_limit_error",
            headers=rate_limit_headers(
                self.state.real(config.retry_after_seconds), with_ms=not azure_style
            ),
        )
        await response(scope, receive, send)

    async def _create_then_drop(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Let the create happen; if it succeeded, forget its key and break the answer."""
        key = _header(scope, b"idempotency-key")
        answer: list[Message] = []

        async def keep(message: Message) -> None:
            answer.append(message)

        await self.app(scope, receive, keep)
        status = int(answer[0]["status"]) if answer else 500
        if not 200 <= status < 300:
            # Nothing was created: the refusal goes out as the API gave it.
            for message in answer:
                await send(message)
            return
        self.state.stats["faults.creates_dropped"] += 1
        if key is not None:
            for entry in [k for k in self.state.idempotency if k[2] == key]:
                del self.state.idempotency[entry]
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": _PARTIAL_BODY, "more_body": True})
        # Raising here makes uvicorn close the connection with the body short of its length; in
        # process (httpx's ASGITransport) this error is what the client sees.
        raise httpx.RemoteProtocolError("emulator fault: connection dropped after create")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _held(send: Send, seconds: float) -> Send:
    """A `send` that holds the start of the answer for `seconds`: a slow provider."""

    async def send_late(message: Message) -> None:
        if message["type"] == "http.response.start":
            await asyncio.sleep(seconds)
        await send(message)

    return send_late
