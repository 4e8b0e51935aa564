"""Providers' own webhooks: whether one is genuine, and which job it names.

A webhook is only ever a hint ("this job may have ended, check it now"); the poller asks the
provider itself before anything is announced, so this module decides nothing but authenticity:

- `replicate`: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature` =
  "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>"), keyed by the account's signing secret
  (`GET /v1/webhooks/default/secret`); the body is the prediction (`id`, `status`).
- `openai-videos`: the same scheme, keyed by the endpoint's secret from OpenAI's dashboard; the
  body is an event (`type` "video.completed" / "video.failed", `data.id` the video).
- `fal`: Ed25519 over "{request id}\\n{user id}\\n{timestamp}\\n{hex SHA-256 of the body}", in
  `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` and `-Signature` (hex), verified with the
  keys fal publishes as a JWKS; the body names the request (`request_id`, `status` OK/ERROR).
  fal's job ids are "{owner}/{alias}/{request id}", so the URL vidpipe gives fal carries the
  app (`?app=owner/alias`); a forged app only names a job that does not exist.
- `azure-sora`, `gemini` and `runway` send none that vidpipe could receive: polling alone.

Every check is bounded (body size, a timestamp within five minutes either way) and its errors
never quote a secret or a signature.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import SecretStr

from vidpipe.errors import ConfigurationError, WebhookKeysUnavailable, WebhookVerificationError
from vidpipe.net.webhooks import DEFAULT_TOLERANCE_S, verify

__all__ = [
    "FAL_JWKS_URL",
    "MAX_HOOK_BYTES",
    "FalHooks",
    "HookVerifier",
    "JobHint",
    "JwksCache",
    "StandardHooks",
    "ed25519_keys_from_jwks",
    "fal_message",
]

FAL_JWKS_URL: Final = "https://rest.alpha.fal.ai/.well-known/jwks.json"
#: A webhook body is a job's status (fal adds the model's output: URLs, not bytes).
MAX_HOOK_BYTES: Final = 256 * 1024
_MAX_JWKS_BYTES: Final = 64 * 1024
_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
_APP = re.compile(r"^[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class JobHint:
    """What a genuine webhook says: this provider's job may have ended (`status`, as claimed)."""

    provider: str
    provider_job_id: str
    status: str | None
    #: The provider's id for this delivery (the same on its retries), when it sends one.
    delivery_id: str | None = None


class HookVerifier(Protocol):
    """Checks one provider's webhooks; raises WebhookVerificationError for anything not genuine."""

    provider: str

    async def verify(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> JobHint: ...


def _job_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _JOB_ID.match(value):
        raise WebhookVerificationError(f"the webhook names no {what}")
    return value


def _status(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) and value else None


def _replicate_hint(payload: Any) -> tuple[str, str | None]:
    if not isinstance(payload, dict):
        raise WebhookVerificationError("the webhook body is not a prediction")
    return _job_id(payload.get("id"), "prediction id"), _status(payload.get("status"))


def _openai_hint(payload: Any) -> tuple[str, str | None]:
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise WebhookVerificationError("the webhook body is not an event")
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind.startswith("video."):
        raise WebhookVerificationError("the webhook is not about a video")
    return _job_id(payload["data"].get("id"), "video id"), _status(kind.removeprefix("video."))


_STANDARD_PARSERS: Final[dict[str, Callable[[Any], tuple[str, str | None]]]] = {
    "replicate": _replicate_hint,
    "openai-videos": _openai_hint,
}


class StandardHooks:
    """Standard Webhooks signed with a shared "whsec_" secret (Replicate, OpenAI's videos)."""

    def __init__(
        self,
        provider: str,
        secret: SecretStr,
        *,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if provider not in _STANDARD_PARSERS:
            raise ConfigurationError(f"{provider}: no Standard Webhooks parser")
        self.provider = provider
        self._secret = secret
        self._parse = _STANDARD_PARSERS[provider]
        self._tolerance_s = tolerance_s
        self._clock = clock

    def __repr__(self) -> str:  # never the secret
        return f"StandardHooks({self.provider!r})"

    async def verify(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> JobHint:
        payload = verify(
            self._secret, headers, body, tolerance_s=self._tolerance_s, now=self._clock()
        )
        job_id, status = self._parse(payload)
        delivery = {k.lower(): v for k, v in headers.items()}.get("webhook-id")
        return JobHint(self.provider, job_id, status, delivery_id=delivery)


# --- fal: Ed25519 with keys from a JWKS --------------------------------------------------------


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ed25519_keys_from_jwks(document: bytes) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys of a JWKS document (RFC 8037 OKP keys; others are skipped)."""
    try:
        parsed = json.loads(document)
    except ValueError:
        raise WebhookVerificationError("the JWKS is not JSON") from None
    entries = parsed.get("keys") if isinstance(parsed, dict) else None
    keys: list[Ed25519PublicKey] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or (entry.get("kty"), entry.get("crv")) != (
            "OKP",
            "Ed25519",
        ):
            continue
        try:
            keys.append(Ed25519PublicKey.from_public_bytes(_b64url(str(entry.get("x", "")))))
        except (ValueError, binascii.Error):
            continue
    return keys


class JwksCache:
    """The keys at a JWKS URL, fetched when first needed, kept `max_age_s`, and fetched again
    (at most every `min_refresh_s`) when a signature matches none of them: a rotated key is
    picked up, and forged signatures cannot make vidpipe hammer the JWKS."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[bytes]],
        *,
        max_age_s: float = 24 * 3600,
        min_refresh_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 10.0) -> JwksCache:
        async def fetch() -> bytes:
            async with (
                httpx.AsyncClient(
                    timeout=timeout_s, follow_redirects=False, trust_env=False
                ) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise WebhookVerificationError(f"the JWKS answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise WebhookVerificationError("the JWKS is too large")
                return bytes(body)

        return cls(fetch)

    async def keys(self, *, refresh: bool = False) -> list[Ed25519PublicKey]:
        """The keys; WebhookKeysUnavailable while none could ever be fetched (tried again at
        most every `min_refresh_s`, so a JWKS that is down is not asked on every webhook)."""
        async with self._lock:
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            tried = None if self._tried_at is None else now - self._tried_at
            due = age is None or age > self._max_age_s or refresh
            if due and (tried is None or tried >= self._min_refresh_s):
                self._tried_at = now
                try:
                    self._keys = ed25519_keys_from_jwks(await self._fetch())
                    self._fetched_at = now
                except (httpx.HTTPError, WebhookVerificationError):
                    pass  # the keys fetched before, if any, stay in use
            if not self._keys:
                raise WebhookKeysUnavailable("fal's signing keys are unavailable")
            return list(self._keys)


def fal_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs for one delivery."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((request_id, user_id, timestamp, digest)).encode()


class FalHooks:
    """fal's webhooks, verified with the keys of its JWKS (`FAL_JWKS_URL`)."""

    provider = "fal"

    def __init__(
        self,
        jwks: JwksCache,
        *,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jwks = jwks
        self._tolerance_s = tolerance_s
        self._clock = clock

    async def verify(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> JobHint:
        lowered = {k.lower(): v for k, v in headers.items()}
        request_id = lowered.get("x-fal-webhook-request-id", "")
        user_id = lowered.get("x-fal-webhook-user-id", "")
        timestamp = lowered.get("x-fal-webhook-timestamp", "")
        signature_hex = lowered.get("x-fal-webhook-signature", "")
        if not (request_id and user_id and timestamp and signature_hex):
            raise WebhookVerificationError("missing X-Fal-Webhook-* headers")
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > self._tolerance_s:
            raise WebhookVerificationError("X-Fal-Webhook-Timestamp is not within five minutes")
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise WebhookVerificationError("X-Fal-Webhook-Signature is not hex") from None
        message = fal_message(request_id, user_id, timestamp, body)
        if not await self._matches(signature, message):
            raise WebhookVerificationError("no fal key matches the signature")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise WebhookVerificationError("the webhook body is not JSON") from None
        if not isinstance(payload, dict) or payload.get("request_id") != request_id:
            raise WebhookVerificationError("the webhook body names another request")
        app = query.get("app", "")
        if not _APP.match(app):
            raise WebhookVerificationError("the webhook URL names no app (?app=owner/alias)")
        job_id = f"{app}/{_job_id(request_id, 'request id')}"
        return JobHint("fal", job_id, _status(payload.get("status")), delivery_id=request_id)

    async def _matches(self, signature: bytes, message: bytes) -> bool:
        for refresh in (False, True):
            for key in await self._jwks.keys(refresh=refresh):
                try:
                    key.verify(signature, message)
                    return True
                except InvalidSignature:
                    continue
        return False
