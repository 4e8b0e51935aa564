"""Standard Webhooks (https://www.standardwebhooks.com): signing, verification, delivery.

A webhook is a POST of a JSON body with three headers:

    webhook-id         a message id; the same on every retry, so receivers can dedupe
    webhook-timestamp  unix seconds of this attempt
    webhook-signature  "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>" (space-separated
                       when several signatures are sent, e.g. during a secret rotation)

The key is the base64-decoded secret after its "whsec_" prefix, as OpenAI's video webhooks use.
`verify()` is the receiving side, for our tests and for users' receivers.

`WebhookSender` delivers to user-supplied callback URLs, which makes it an SSRF vector, so every
delivery goes through `vidpipe.net.guard`: the URL is vetted (no loopback, private, link-local or
metadata addresses unless `allow_private`, meant for tests and local development) and the
connection is pinned to the vetted address. Redirects are never followed (a redirect is a failed
delivery). Bodies sent and responses read are bounded. Retries (`vidpipe.net.retry`, the policy
the provider clients use too) cover 5xx, 429 (honouring Retry-After), timeouts and connection
errors; other 4xx, redirects and certificate failures are final.
The secret never appears in a log line, an error, a repr or an event.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
from pydantic import SecretStr

from schemas.events import derive_event_id
from vidpipe.errors import (
    ConfigurationError,
    UnsafeURLError,
    WebhookVerificationError,
)
from vidpipe.net.guard import Resolver, SafeTarget, resolve_safe
from vidpipe.net.retry import RetryPolicy, Sleep, parse_retry_after

if TYPE_CHECKING:
    from vidpipe.settings import Settings

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "MAX_BODY_BYTES",
    "SECRET_PREFIX",
    "DeliveryResult",
    "WebhookSender",
    "WebhookVerificationError",
    "decode_secret",
    "encode_body",
    "generate_secret",
    "open_client",
    "sender_from_settings",
    "sign",
    "signed_headers",
    "verify",
    "webhook_id_for",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret
DEFAULT_TOLERANCE_S: Final = 300
#: A notice is a few hundred bytes; anything near this is a bug, not a payload to send.
MAX_BODY_BYTES: Final = 64 * 1024
#: How much of a receiver's answer is read (then discarded): only the status matters.
MAX_RESPONSE_BYTES: Final = 16 * 1024
USER_AGENT: Final = "vidpipe-notifier/0.1 (Standard Webhooks)"
# Standard Webhooks recommends 24-64 byte keys; shorter ones are refused as too weak to sign with.
_MIN_KEY_BYTES: Final = 16
_DRAIN_TIMEOUT_S: Final = 2.0

Clock = Callable[[], float]
SecretLike = str | SecretStr


# --- signing and verification -----------------------------------------------------------------


def decode_secret(secret: SecretLike) -> bytes:
    """The HMAC key of a "whsec_<base64>" secret (the prefix is optional, as in other libraries)."""
    text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    text = text.strip()
    text = text.removeprefix(SECRET_PREFIX)
    try:
        # Tolerate missing padding; refuse anything that is not base64 at all.
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        # The message must not quote the secret, even a malformed one.
        raise ConfigurationError("webhook secret must be 'whsec_' followed by base64") from None
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigurationError(
            f"webhook secret is too short: its key must be at least {_MIN_KEY_BYTES} bytes"
        )
    return key


def generate_secret(n_bytes: int = 32) -> str:
    """A fresh "whsec_<base64>" secret (for VIDPIPE_WEBHOOK_SECRET and the receiver)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(n_bytes)).decode("ascii")


def _signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign(secret: SecretLike, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: "v1,<base64 HMAC-SHA256>"."""
    return f"v1,{_signature(decode_secret(secret), webhook_id, timestamp, body)}"


def signed_headers(
    secret: SecretLike, webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return _headers(decode_secret(secret), webhook_id, timestamp, body)


def _headers(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{_signature(key, webhook_id, timestamp, body)}",
    }


def verify(
    secret: SecretLike,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> Any:
    """Check a received webhook and return its decoded JSON payload.

    Raises WebhookVerificationError when a header is missing, the timestamp is further than
    `tolerance_s` from now (either way: replays and clock games), or no v1 signature matches.
    `headers` may be any mapping (httpx, Starlette, a dict); names are matched case-insensitively.
    """
    key = decode_secret(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    raw_signatures = lowered.get("webhook-signature")
    if not webhook_id or not raw_timestamp or not raw_signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")
    data = body.encode() if isinstance(body, str) else body
    expected = _signature(key, webhook_id, timestamp, data).encode("ascii")
    for entry in raw_signatures.split():
        version, _, value = entry.partition(",")
        # Other versions (v1a: asymmetric) are not ours to check; skip them, as the spec says.
        if version == "v1" and hmac.compare_digest(value.encode("ascii", "replace"), expected):
            break
    else:
        raise WebhookVerificationError("no matching v1 signature")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise WebhookVerificationError("webhook body is not JSON") from None


def webhook_id_for(request_id: str, *parts: object) -> str:
    """A deterministic webhook id: the same notice always has the same id, on every retry and
    every redelivery of the event behind it, so receivers can dedupe on it."""
    return f"msg_{derive_event_id(request_id, 'webhook', *parts).hex}"


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _longest_string(value: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    """The path to, and the value of, the longest string among `value`'s values (not keys)."""
    if isinstance(value, str):
        return path, value
    children: Any = ()
    if isinstance(value, Mapping):
        children = value.items()
    elif isinstance(value, list | tuple):
        children = enumerate(value)
    best: tuple[tuple[Any, ...], str] | None = None
    for key, child in children:
        found = _longest_string(child, (*path, key))
        if found is not None and (best is None or len(found[1]) > len(best[1])):
            best = found
    return best


def _replaced(value: Any, path: tuple[Any, ...], new: str) -> Any:
    """A copy of `value` with the string at `path` replaced by `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, Mapping):
        return {k: (_replaced(v, rest, new) if k == head else v) for k, v in value.items()}
    return [(_replaced(v, rest, new) if i == head else v) for i, v in enumerate(value)]


def encode_body(payload: Mapping[str, Any], *, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed and sent, at most `max_bytes`.

    A payload that would be longer has its longest string values cut (ending in "…"), one at a
    time, until it fits: a notice is always sent, shortened, never refused for its size.
    ValueError only when even its structure (keys, numbers, empty strings) is too long.
    """
    current: Any = payload
    body = _dumps(current)
    while len(body) > max_bytes:
        found = _longest_string(current)
        if found is None or not found[1]:
            raise ValueError(f"webhook body cannot be cut below {len(body)} bytes")
        path, text = found
        # Every character is at least one byte, so dropping `excess` of them (and one for the
        # marker's room) always shortens the body; the loop ends.
        keep = max(len(text) - (len(body) - max_bytes) - 1, 0)
        current = _replaced(current, path, text[:keep] + "…" if keep else "")
        body = _dumps(current)
    return body


# --- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    webhook_id: str
    delivered: bool
    #: The last HTTP status the receiver answered, or None if it never answered.
    status: int | None
    #: HTTP attempts made (0 when the URL was refused before any connection).
    attempts: int
    #: Why it failed; never the URL's path or query (they may hold tokens), never the secret.
    error: str | None = None


class _AttemptFailed(Exception):
    """One failed attempt; `retryable` and `retry_after` are what the retry policy reads."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


def _is_tls_failure(exc: BaseException) -> bool:
    """httpx reports certificate errors as ConnectError; retrying those cannot help. Other TLS
    errors (a handshake cut short) may be transient, so they are retried like any connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class WebhookSender:
    """Delivers signed webhooks to user-supplied URLs, safely and with bounded retries.

    `client` should come from `open_client()` (no redirects, no proxies from the environment,
    optional CA bundle); tests pass one with an httpx.MockTransport. `sleep` and `resolver` are
    injectable so tests neither wait nor touch DNS.
    """

    def __init__(
        self,
        secret: SecretLike,
        *,
        client: httpx.AsyncClient,
        attempts: int = 5,
        timeout_s: float = 30.0,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        sleep: Sleep = asyncio.sleep,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 60.0,
        max_total_wait_s: float = 120.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        clock: Clock = time.time,
        owns_client: bool = False,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._key = decode_secret(secret)  # only the key is kept; validated once, at startup
        self._client = client
        self._owns_client = owns_client
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self._resolver = resolver
        # Waiting happens inside a Kafka handler, so it is bounded: a receiver that asks for a
        # longer pause than we are willing to hold a partition for gets a failed delivery instead.
        self._retry = RetryPolicy(
            attempts=attempts,
            base_delay_s=backoff_initial_s,
            max_delay_s=backoff_max_s,
            max_total_wait_s=max_total_wait_s,
            max_retry_after_s=max_retry_after_s,
            sleep=sleep,
        )
        self.max_retry_after_s = max_retry_after_s
        self.max_total_wait_s = max_total_wait_s
        self.max_body_bytes = max_body_bytes
        self._clock = clock

    def __repr__(self) -> str:  # never the key
        return f"WebhookSender(attempts={self.attempts}, allow_private={self.allow_private})"

    @property
    def worst_case_s(self) -> float:
        """An upper bound on one delivery's duration (for the consumer's max poll interval)."""
        return self.attempts * (self.timeout_s + _DRAIN_TIMEOUT_S) + self.max_total_wait_s

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def deliver(self, url: str, body: bytes, *, webhook_id: str) -> DeliveryResult:
        """POST `body` to `url`, signed; never raises for what the receiver or network does.
        A body over `max_bytes` (`encode_body` never makes one) is a failed delivery."""
        if len(body) > self.max_body_bytes:
            error = f"webhook body is {len(body)} bytes; the limit is {self.max_body_bytes}"
            return DeliveryResult(webhook_id, False, None, 0, error)
        try:
            target = await resolve_safe(
                url, allow_private=self.allow_private, resolver=self._resolver
            )
        except UnsafeURLError as exc:
            return DeliveryResult(webhook_id, False, None, 0, f"callback URL refused: {exc}")

        made = 0

        async def attempt() -> int:
            nonlocal made
            made += 1
            return await self._attempt(target, made - 1, body, webhook_id)

        try:
            status = await self._retry.call(attempt)
        except _AttemptFailed as exc:
            reason = exc.reason
            if exc.retry_after is not None and exc.retry_after > self.max_retry_after_s:
                reason += f" (asked to wait {exc.retry_after:g}s; longer than this stage waits)"
            return DeliveryResult(
                webhook_id, False, exc.status, made, f"{reason} after {made} attempt(s)"
            )
        return DeliveryResult(webhook_id, True, status, made)

    async def _attempt(self, target: SafeTarget, index: int, body: bytes, webhook_id: str) -> int:
        # Each attempt pins the next vetted address, so one dead address does not sink them all.
        shift = index % len(target.addresses)
        pinned = replace(target, addresses=target.addresses[shift:] + target.addresses[:shift])
        # A fresh timestamp (and signature) per attempt, as the spec asks; the id stays the same.
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **_headers(self._key, webhook_id, int(self._clock()), body),
        }
        request = pinned.build_request(
            self._client, "POST", headers=headers, content=body, timeout=self.timeout_s
        )
        try:
            # httpx timeouts are per operation; this bounds the whole exchange up to the headers.
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.send(request, stream=True, follow_redirects=False)
        except (TimeoutError, httpx.TimeoutException):
            raise _AttemptFailed("timed out", retryable=True) from None
        except httpx.TransportError as exc:
            # Class names only: httpx messages can carry the URL, whose query may hold tokens.
            if _is_tls_failure(exc):
                raise _AttemptFailed(
                    "TLS failure: the certificate did not verify", retryable=False
                ) from None
            raise _AttemptFailed(
                f"connection failed ({type(exc).__name__})", retryable=True
            ) from None
        try:
            await self._drain(response)
        finally:
            await response.aclose()
        return self._judge(response)

    @staticmethod
    async def _drain(response: httpx.Response) -> None:
        """Read (and drop) a little of the answer so well-behaved receivers finish cleanly; the
        status is already known, so errors and slowness here do not matter."""
        with contextlib.suppress(httpx.HTTPError, httpx.StreamError, TimeoutError):
            async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break

    @staticmethod
    def _judge(response: httpx.Response) -> int:
        status = response.status_code
        if 200 <= status < 300:
            return status
        if 300 <= status < 400:
            raise _AttemptFailed(
                f"HTTP {status}: redirects are not followed for webhooks",
                retryable=False,
                status=status,
            )
        if status == 429 or status >= 500:
            raise _AttemptFailed(
                f"HTTP {status}",
                retryable=True,
                status=status,
                retry_after=parse_retry_after(response.headers),
            )
        raise _AttemptFailed(f"HTTP {status}", retryable=False, status=status)


def open_client(*, timeout_s: float = 30.0, ca_file: Path | None = None) -> httpx.AsyncClient:
    """The HTTP client for webhook deliveries.

    `ca_file` replaces the default trust store (a private PKI, or a test CA). The environment's
    proxy settings are ignored: through a proxy the SSRF pin would protect only as far as the
    proxy does (see vidpipe.net.guard).
    """
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"webhook CA file {str(ca_file)!r} cannot be loaded: {type(exc).__name__}"
            ) from None
    return httpx.AsyncClient(
        verify=verify, timeout=timeout_s, follow_redirects=False, trust_env=False
    )


def sender_from_settings(
    settings: Settings,
    *,
    client: httpx.AsyncClient | None = None,
    resolver: Resolver | None = None,
    sleep: Sleep | None = None,
) -> WebhookSender | None:
    """The notifier's sender, or None when no webhook secret is configured."""
    secret = settings.webhook_secret
    if secret is None or not secret.get_secret_value().strip():
        return None
    decode_secret(secret)  # fail at startup on a malformed secret, before opening a client
    owns = client is None
    http = client or open_client(
        timeout_s=settings.http_timeout_s, ca_file=settings.webhook_ca_file
    )
    return WebhookSender(
        secret,
        client=http,
        attempts=settings.webhook_attempts,
        timeout_s=settings.http_timeout_s,
        allow_private=settings.allow_private_urls,
        resolver=resolver,
        sleep=sleep or asyncio.sleep,
        owns_client=owns,
    )
