"""Notifier logic: messages in the request's language, policy, webhooks (httpx.MockTransport)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from schemas.events import (
    MESSAGE_MAX_CHARS,
    PROVIDER_ID_MAX_CHARS,
    REQUEST_ID_MAX_CHARS,
    DownloadUnavailable,
    FallbackName,
    RequestSnapshot,
    UserNotified,
    derive_event_id,
)
from services.notifier.handlers import NotifierDeps, handle_download_unavailable
from vidpipe.net.webhooks import MAX_BODY_BYTES, WebhookSender, verify, webhook_id_for
from vidpipe.policy.messages import download_unavailable_message, resolve_language
from vidpipe.testing import MemoryPublisher

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOW = 1_800_000_000
PUBLIC_V4 = "93.184.216.34"
CALLBACK = "https://hooks.example.com/cb?sig=receiver-token"
DEFAULT: list[FallbackName] = ["placeholder", "notify", "retry"]
OCCURRED = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
NOTIFIED_AT = datetime(2026, 11, 2, 10, 5, tzinfo=UTC)


async def public_resolver(host: str, port: int) -> Sequence[str]:
    return {"hooks.example.com": [PUBLIC_V4], "inside.example.com": ["10.1.2.3"]}[host]


def unavailable(
    *,
    callback_url: str | None = None,
    metadata: dict[str, str] | None = None,
    fallbacks: list[FallbackName] | None = None,
    request: bool = True,
) -> DownloadUnavailable:
    snapshot = RequestSnapshot(
        prompt="a red fox in the snow",
        callback_url=callback_url,
        metadata=metadata or {},
        fallbacks=fallbacks,
    )
    return DownloadUnavailable(
        event_id=derive_event_id("req-42", "DownloadUnavailable", "gen_7"),
        occurred_at=OCCURRED,
        request_id="req-42",
        provider="azure-sora",
        provider_job_id="task_01abc",
        generation_id="gen_7",
        reason_code="not_found",
        http_status=404,
        message="content endpoint answered 404",
        attempted_at=OCCURRED,
        expires_at=EXPIRES,
        request=snapshot if request else None,
    )


class Receiver:
    """Answers with a script of statuses (the last one repeats) and keeps every request."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(status)


async def no_sleep(_seconds: float) -> None:
    return None


def deps_with(receiver: Receiver | None) -> tuple[NotifierDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    webhooks = None
    if receiver is not None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
        webhooks = WebhookSender(
            SECRET,
            client=client,
            attempts=3,
            resolver=public_resolver,
            sleep=no_sleep,
            clock=lambda: NOW,
            owns_client=True,
        )
    return NotifierDeps(
        publisher=publisher,
        webhooks=webhooks,
        default_fallbacks=DEFAULT,
        clock=lambda: NOTIFIED_AT,
    ), publisher


def notified(publisher: MemoryPublisher, channel: str) -> UserNotified:
    (event,) = [e for e in publisher.of_type(UserNotified) if getattr(e, "channel", "") == channel]
    assert isinstance(event, UserNotified)
    return event


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "language"),
    [
        ({}, "en"),
        ({"lang": "fr"}, "fr"),
        ({"language": "fr-FR"}, "fr"),
        ({"locale": "fr_CA.UTF-8"}, "fr"),
        ({"Locale": "DE-de"}, "de"),
        ({"lang": "es-419"}, "es"),
        ({"language": "de-DE,de;q=0.9,en;q=0.5"}, "de"),
        ({"lang": "pt-BR"}, "en"),
        ({"lang": "klingon"}, "en"),
        ({"lang": "pt", "locale": "fr-FR"}, "fr"),  # an unsupported key falls through
        ({"lang": "es", "language": "fr"}, "es"),  # lang wins
    ],
)
def test_language_from_metadata(metadata: dict[str, str], language: str) -> None:
    assert resolve_language(metadata) == language


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("en", ["generated", "cannot be downloaded yet", "keep trying"]),
        ("fr", ["générée", "pas encore téléchargeable", "réessayons"]),
        ("es", ["generó", "todavía no se puede descargar"]),
        ("de", ["erstellt", "noch nicht heruntergeladen"]),
    ],
)
def test_messages_name_the_job_and_generation(language: str, words: list[str]) -> None:
    text = download_unavailable_message(language, job_id="task_01abc", generation_id="gen_7")
    assert "task_01abc" in text and "gen_7" in text
    for word in words:
        assert word in text


def test_messages_promise_retries_only_when_there_will_be_some() -> None:
    kwargs: dict[str, Any] = {"job_id": "task_1", "generation_id": "gen_1"}
    retrying = download_unavailable_message("en", will_retry=True, **kwargs)
    waiting = download_unavailable_message("en", will_retry=False, **kwargs)
    assert "keep trying" in retrying and "keep trying" not in waiting
    assert "let you know" in waiting
    assert download_unavailable_message("xx", **kwargs) == retrying  # unknown -> English


# --- the handler ------------------------------------------------------------------------------


async def test_policy_exclusion_publishes_nothing() -> None:
    receiver = Receiver(200)
    deps, publisher = deps_with(receiver)
    event = unavailable(callback_url=CALLBACK, fallbacks=["placeholder", "retry"])
    with capture_logs() as logs:
        await handle_download_unavailable(event, deps)
    assert publisher.events == [] and receiver.requests == []
    assert any(entry["event"] == "policy_excludes" for entry in logs)
    # With no request snapshot the configured default decides.
    deps.default_fallbacks = ["placeholder"]
    await handle_download_unavailable(unavailable(request=False), deps)
    assert publisher.events == []


async def test_the_message_is_recorded_in_the_requests_language() -> None:
    deps, publisher = deps_with(None)
    event = unavailable(metadata={"locale": "fr-FR"})
    await handle_download_unavailable(event, deps)
    (record,) = publisher.events
    assert isinstance(record, UserNotified)
    assert record.channel == "record" and record.delivered and record.language == "fr"
    assert record.event_id == derive_event_id("req-42", "UserNotified", "record")
    assert record.causation_id == event.event_id
    assert record.occurred_at == NOTIFIED_AT  # the stage's clock
    assert "task_01abc" in record.message and "générée" in record.message


async def test_without_a_secret_the_callback_is_reported_not_sent() -> None:
    deps, publisher = deps_with(None)
    with capture_logs() as logs:
        await handle_download_unavailable(unavailable(callback_url=CALLBACK), deps)
    webhook = notified(publisher, "webhook")
    assert not webhook.delivered and webhook.message == "no webhook secret configured"
    assert webhook.webhook_status is None
    assert any(e["event"] == "webhook_not_sent" and e["log_level"] == "warning" for e in logs)
    assert notified(publisher, "record").delivered


async def test_webhook_retried_on_503_then_delivered_and_signed() -> None:
    receiver = Receiver(503, 200)
    deps, publisher = deps_with(receiver)
    with capture_logs() as logs:
        await handle_download_unavailable(
            unavailable(callback_url=CALLBACK, metadata={"lang": "fr"}), deps
        )
    assert len(receiver.requests) == 2
    expected_id = webhook_id_for("req-42", "video.download_unavailable", "gen_7")
    for request in receiver.requests:
        assert request.headers["webhook-id"] == expected_id
        payload = verify(SECRET, request.headers, request.content, now=NOW)
    assert payload["id"] == expected_id and payload["type"] == "video.download_unavailable"
    assert payload["created_at"] == int(OCCURRED.timestamp())
    data = payload["data"]
    assert data["request_id"] == "req-42" and data["provider"] == "azure-sora"
    assert data["provider_job_id"] == "task_01abc" and data["generation_id"] == "gen_7"
    assert data["reason_code"] == "not_found" and data["language"] == "fr"
    assert data["expires_at"] == EXPIRES.isoformat()
    assert data["message"] == notified(publisher, "record").message

    webhook = notified(publisher, "webhook")
    assert webhook.delivered and webhook.webhook_status == 200
    assert webhook.occurred_at == NOTIFIED_AT
    assert webhook.webhook_id == expected_id and webhook.language == "fr"
    assert webhook.event_id == derive_event_id("req-42", "UserNotified", "webhook", "gen_7")
    # Neither the secret nor the receiver's token reaches an event or a log line.
    text = repr(logs) + "".join(e.model_dump_json() for e in publisher.events)
    for secret in (SECRET, SECRET.removeprefix("whsec_"), "receiver-token"):
        assert secret not in text


async def test_webhook_not_retried_on_400() -> None:
    receiver = Receiver(400, 200)
    deps, publisher = deps_with(receiver)
    await handle_download_unavailable(unavailable(callback_url=CALLBACK), deps)
    assert len(receiver.requests) == 1
    webhook = notified(publisher, "webhook")
    assert not webhook.delivered and webhook.webhook_status == 400
    assert "HTTP 400" in webhook.message


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/cb", "https://[::1]:8443/cb", "https://inside.example.com/cb"],
)
async def test_loopback_or_private_callbacks_are_refused_without_a_request(url: str) -> None:
    receiver = Receiver(200)
    deps, publisher = deps_with(receiver)
    await handle_download_unavailable(unavailable(callback_url=url), deps)
    assert receiver.requests == []
    webhook = notified(publisher, "webhook")
    assert not webhook.delivered and webhook.webhook_status is None
    assert "refused" in webhook.message
    assert notified(publisher, "record").delivered  # the user is still told, on the record


async def test_a_redelivered_event_sends_the_same_notice_again() -> None:
    receiver = Receiver(200)
    deps, publisher = deps_with(receiver)
    event = unavailable(callback_url=CALLBACK)
    await handle_download_unavailable(event, deps)
    await handle_download_unavailable(event, deps)
    first, second = receiver.requests
    assert first.content == second.content
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    ids = [e.event_id for e in publisher.events]
    assert ids[:2] == ids[2:]  # the recorder dedupes the second pair


def maximal_unavailable() -> DownloadUnavailable:
    """Every text of the event at its schema bound, in the characters that cost most in JSON."""
    widest = "😀"  # 4 bytes in UTF-8 (the body is not ASCII-escaped)
    return DownloadUnavailable(
        event_id=derive_event_id("r", "DownloadUnavailable"),
        occurred_at=OCCURRED,
        request_id="r" * REQUEST_ID_MAX_CHARS,
        provider=widest * 64,
        provider_job_id=widest * PROVIDER_ID_MAX_CHARS,
        generation_id=widest * PROVIDER_ID_MAX_CHARS,
        reason_code="\x01" * 256,  # JSON escapes each as 6 bytes
        http_status=404,
        message="\x01" * MESSAGE_MAX_CHARS,
        attempted_at=OCCURRED,
        expires_at=EXPIRES,
        request=RequestSnapshot(
            prompt=widest * 4000,
            callback_url=CALLBACK + "&pad=" + "p" * 1900,
            metadata={f"k{i:02d}" + "k" * 60: widest * 512 for i in range(31)} | {"lang": "fr"},
        ),
    )


async def test_a_maximal_event_makes_a_whole_notice_under_the_body_bound() -> None:
    receiver = Receiver(200)
    deps, publisher = deps_with(receiver)
    event = maximal_unavailable()
    await handle_download_unavailable(event, deps)
    (request,) = receiver.requests
    assert len(request.content) <= MAX_BODY_BYTES
    data = verify(SECRET, request.headers, request.content, now=NOW)["data"]
    # Under the bound, nothing needed cutting: every id arrives whole.
    assert (data["provider_job_id"], data["generation_id"], data["reason_code"]) == (
        event.provider_job_id,
        event.generation_id,
        event.reason_code,
    )
    assert notified(publisher, "webhook").delivered


async def test_a_sender_with_a_smaller_bound_still_sends_the_notice_cut_to_fit() -> None:
    receiver = Receiver(200)
    deps, publisher = deps_with(receiver)
    assert deps.webhooks is not None
    deps.webhooks.max_body_bytes = 4096
    await handle_download_unavailable(maximal_unavailable(), deps)
    (request,) = receiver.requests
    assert len(request.content) <= 4096
    payload = verify(SECRET, request.headers, request.content, now=NOW)
    assert payload["type"] == "video.download_unavailable"
    assert payload["data"]["request_id"] == "r" * REQUEST_ID_MAX_CHARS
    assert notified(publisher, "webhook").delivered
