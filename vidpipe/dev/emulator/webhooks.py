"""The providers' own webhooks, sent as each provider sends them when a job ends.

The one thing the emulator does in the background: a job asked to notify (Replicate's `webhook`,
fal's `fal_webhook`, or every /v1/videos job once `openai_webhook_url` is set, as OpenAI's
dashboard endpoint would be) gets one POST when its schedule ends, retried a few times on a
connection error or a 5xx, as the providers do.

- replicate and openai: Standard Webhooks signed with `EmulatorConfig.webhook_secret` (Replicate
  also serves it at `GET /v1/webhooks/default/secret`); the body is the prediction, or a
  `video.completed` / `video.failed` event naming the video.
- fal: Ed25519 with a key made at start, its public half served as a JWKS at
  `/.well-known/jwks.json`; the body is `{request_id, gateway_request_id, status, payload}`.

`EmulatorConfig.webhooks` breaks them on purpose: "lost" sends none, "forged" sends each with a
signature that does not verify (a receiver must refuse it and change nothing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

from vidpipe.dev.emulator.state import EmulatorState, Job, Protocol
from vidpipe.net.webhooks import signed_headers

__all__ = ["FAL_USER_ID", "JWKS_PATH", "HookSender"]

log = logging.getLogger("vidpipe.dev.emulator")

JWKS_PATH = "/.well-known/jwks.json"
FAL_USER_ID = "emulator-user"
_ATTEMPTS = 4
_TIMEOUT_S = 10.0

Body = Callable[[Job, float], dict[str, Any]]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class HookSender:
    """Schedules and sends the webhooks of one emulator (`app.state.hooks`)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._fal_key = Ed25519PrivateKey.generate()
        self._tasks: set[asyncio.Task[None]] = set()

    def jwks(self) -> dict[str, Any]:
        public = self._fal_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(public),
                    "kid": hashlib.sha256(public).hexdigest()[:16],
                    "use": "sig",
                    "alg": "EdDSA",
                }
            ]
        }

    def send_when_done(self, job: Job, url: str, body: Body) -> None:
        """POST `body(job, now)` to `url` once the job ends (unless webhooks are "lost")."""
        if self.state.config.webhooks == "lost":
            self.state.stats[f"{job.protocol}.webhooks_lost"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._deliver(job, url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _signed(self, protocol: Protocol, job: Job, body: bytes) -> dict[str, str]:
        now = int(time.time())
        forged = self.state.config.webhooks == "forged"
        if protocol == "fal":
            message = "\n".join(
                (job.id, FAL_USER_ID, str(now), hashlib.sha256(body).hexdigest())
            ).encode()
            signature = self._fal_key.sign(message)
            if forged:
                signature = Ed25519PrivateKey.generate().sign(message)
            return {
                "X-Fal-Webhook-Request-Id": job.id,
                "X-Fal-Webhook-User-Id": FAL_USER_ID,
                "X-Fal-Webhook-Timestamp": str(now),
                "X-Fal-Webhook-Signature": signature.hex(),
            }
        secret: SecretStr | str = self.state.config.webhook_secret
        if forged:
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        webhook_id = f"msg_{hashlib.sha256(f'{job.id}:done'.encode()).hexdigest()[:24]}"
        return signed_headers(secret, webhook_id, now, body)

    async def _deliver(self, job: Job, url: str, body: Body) -> None:
        state = self.state
        await asyncio.sleep(max(0.0, job.end - state.clock()))
        payload = json.dumps(body(job, state.clock()), separators=(",", ":")).encode()
        name = f"{job.protocol}.webhooks"
        async with httpx.AsyncClient(timeout=_TIMEOUT_S, follow_redirects=False) as client:
            for attempt in range(_ATTEMPTS):
                headers = {
                    "content-type": "application/json",
                    **self._signed(job.protocol, job, payload),
                }
                try:
                    response = await client.post(url, content=payload, headers=headers)
                except httpx.HTTPError as exc:
                    log.info("webhook for %s not delivered: %s", job.id, type(exc).__name__)
                else:
                    state.stats[f"{name}_sent"] += 1
                    if response.status_code < 500:
                        state.stats[f"{name}_answered_{response.status_code}"] += 1
                        return
                await asyncio.sleep(0.5 * 2**attempt)
        state.stats[f"{name}_failed"] += 1
