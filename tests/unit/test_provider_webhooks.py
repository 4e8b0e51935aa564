"""Providers' own webhooks: only a genuine one becomes a hint, and a hint can only end a job the
provider itself reports ended (vidpipe.providers.webhooks, decide_hinted_check, the poller)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

from schemas.events import GenerationRequested, JobFailed, JobSubmitted, JobSucceeded, PollHinted
from schemas.topics import Topics
from services.gateway.handlers import GatewayDeps, receive_provider_hook
from services.poller.handlers import PollerDeps, handle_poll_hinted
from vidpipe.db.records import Records
from vidpipe.db.tables import open_engine
from vidpipe.errors import (
    GatewayRefusal,
    ProviderUnavailable,
    WebhookKeysUnavailable,
    WebhookVerificationError,
)
from vidpipe.net.webhooks import generate_secret, signed_headers
from vidpipe.policy.polling import (
    CANCELLED,
    PollSchedule,
    decide_check,
    decide_hinted_check,
    hinted_check,
)
from vidpipe.providers.base import ProviderJob
from vidpipe.providers.webhooks import (
    FalHooks,
    JwksCache,
    StandardHooks,
    ed25519_keys_from_jwks,
    fal_message,
)
from vidpipe.testing import FakeProvider, MemoryPublisher

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
SECRET = generate_secret()


# --- Standard Webhooks: replicate and openai-videos -------------------------------------------


def _standard(
    secret: str, body: Mapping[str, object], at: int | None = None
) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    return signed_headers(secret, "msg_1", at or int(time.time()), raw), raw


async def test_a_signed_replicate_prediction_names_its_job() -> None:
    headers, body = _standard(SECRET, {"id": "abc123", "status": "succeeded"})
    hint = await StandardHooks("replicate", SecretStr(SECRET)).verify(headers, body, {})
    assert (hint.provider, hint.provider_job_id, hint.status) == (
        "replicate",
        "abc123",
        "succeeded",
    )
    assert hint.delivery_id == "msg_1"


async def test_an_openai_video_event_names_its_video() -> None:
    event = {"id": "evt_1", "type": "video.completed", "data": {"id": "video_9"}}
    headers, body = _standard(SECRET, event)
    hint = await StandardHooks("openai-videos", SecretStr(SECRET)).verify(headers, body, {})
    assert (hint.provider_job_id, hint.status) == ("video_9", "completed")


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        ("other-secret", "no matching"),
        ("body", "no matching"),
        ("stale", "too old"),
        ("no-headers", "missing"),
    ],
)
async def test_anything_not_genuine_is_refused(tamper: str, match: str) -> None:
    secret = generate_secret() if tamper == "other-secret" else SECRET
    at = int(time.time()) - 3600 if tamper == "stale" else None
    headers, body = _standard(secret, {"id": "abc123", "status": "succeeded"}, at)
    if tamper == "body":
        body = body.replace(b"abc123", b"zzz999")
    if tamper == "no-headers":
        headers = {}
    with pytest.raises(WebhookVerificationError, match=match):
        await StandardHooks("replicate", SecretStr(SECRET)).verify(headers, body, {})


async def test_a_genuine_webhook_naming_no_usable_job_is_refused() -> None:
    headers, body = _standard(SECRET, {"id": "../../etc", "status": "succeeded"})
    with pytest.raises(WebhookVerificationError, match="names no"):
        await StandardHooks("replicate", SecretStr(SECRET)).verify(headers, body, {})
    headers, body = _standard(SECRET, {"type": "batch.completed", "data": {"id": "b"}})
    with pytest.raises(WebhookVerificationError, match="not about a video"):
        await StandardHooks("openai-videos", SecretStr(SECRET)).verify(headers, body, {})


def test_no_secret_in_the_repr() -> None:
    assert SECRET not in repr(StandardHooks("replicate", SecretStr(SECRET)))


# --- fal: Ed25519 over the request, the user, the time and the body's digest -------------------


def _jwks(*keys: Ed25519PrivateKey) -> bytes:
    entries = [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64.urlsafe_b64encode(
                k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            )
            .rstrip(b"=")
            .decode(),
        }
        for k in keys
    ]
    return json.dumps({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, *entries]}).encode()


class _Jwks:
    def __init__(self, document: bytes) -> None:
        self.document = document
        self.fetches = 0

    async def __call__(self) -> bytes:
        self.fetches += 1
        return self.document


def _fal(
    key: Ed25519PrivateKey, request_id: str = "0b1d", at: int | None = None
) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"request_id": request_id, "status": "OK", "payload": {}}).encode()
    stamp = str(at or int(time.time()))
    signature = key.sign(fal_message(request_id, "user-1", stamp, body)).hex()
    headers = {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": "user-1",
        "X-Fal-Webhook-Timestamp": stamp,
        "X-Fal-Webhook-Signature": signature,
    }
    return headers, body


def test_only_ed25519_keys_are_read_from_a_jwks() -> None:
    assert len(ed25519_keys_from_jwks(_jwks(Ed25519PrivateKey.generate()))) == 1
    with pytest.raises(WebhookVerificationError):
        ed25519_keys_from_jwks(b"not json")


async def test_a_signed_fal_webhook_names_the_app_and_request() -> None:
    key = Ed25519PrivateKey.generate()
    hooks = FalHooks(JwksCache(_Jwks(_jwks(key))))
    headers, body = _fal(key)
    hint = await hooks.verify(headers, body, {"app": "fal-ai/kling-video"})
    assert (hint.provider, hint.provider_job_id, hint.status) == (
        "fal",
        "fal-ai/kling-video/0b1d",
        "OK",
    )


async def test_fal_forgeries_and_replays_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    source = _Jwks(_jwks(key))
    clock = [0.0]
    hooks = FalHooks(JwksCache(source, min_refresh_s=60, clock=lambda: clock[0]))
    forged_headers, forged_body = _fal(Ed25519PrivateKey.generate())
    with pytest.raises(WebhookVerificationError, match="no fal key"):
        await hooks.verify(forged_headers, forged_body, {"app": "a/b"})
    # A forgery may make it look for a rotated key once, not on every forgery.
    fetched = source.fetches
    clock[0] += 1
    with pytest.raises(WebhookVerificationError, match="no fal key"):
        await hooks.verify(forged_headers, forged_body, {"app": "a/b"})
    assert source.fetches == fetched
    stale_headers, stale_body = _fal(key, at=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError, match="five minutes"):
        await hooks.verify(stale_headers, stale_body, {"app": "a/b"})
    headers, body = _fal(key)
    with pytest.raises(WebhookVerificationError, match="no app"):
        await hooks.verify(headers, body, {})
    with pytest.raises(WebhookVerificationError, match="no fal key"):
        await hooks.verify(headers, body.replace(b"OK", b"ERROR"), {"app": "a/b"})


async def test_a_rotated_fal_key_is_fetched_again() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    source = _Jwks(_jwks(old))
    clock = [0.0]
    hooks = FalHooks(JwksCache(source, min_refresh_s=60, clock=lambda: clock[0]))
    await hooks.verify(*_fal(old)[:2], {"app": "a/b"})
    source.document = _jwks(new)
    clock[0] += 120
    hint = await hooks.verify(*_fal(new, "r2")[:2], {"app": "a/b"})
    assert hint.provider_job_id == "a/b/r2"
    assert source.fetches == 2


# --- the hint's check: only the provider's own answer can end the job ---------------------------


def _hint(provider: str = "azure-sora", job_id: str = "task_1") -> PollHinted:
    submitted = JobSubmitted(
        event_id=uuid.uuid4(),
        request_id="r",
        provider=provider,
        provider_job_id=job_id,
        occurred_at=NOW,
        cost_usd=0.5,
        price_version="2026-12",
    )
    return PollHinted(
        event_id=uuid.uuid4(),
        request_id="r",
        provider=provider,
        provider_job_id=job_id,
        hinted_status="succeeded",
        submitted=submitted,
    )


def test_a_hint_announces_what_the_timed_check_would_and_schedules_nothing() -> None:
    hint = _hint()
    due = hinted_check(hint, NOW)
    done = ProviderJob("task_1", "succeeded", "succeeded", generation_ids=["gen_1"])
    hinted = decide_hinted_check(due, done, PollSchedule(), NOW)
    assert hinted.next_check is None
    (event,) = hinted.events
    assert isinstance(event, JobSucceeded) and event.cost_usd == 0.5
    # The timed chain's own check of the same job announces the very same event id: one copy
    # is dropped downstream, whichever comes second.
    timed = decide_check(due.model_copy(update={"attempt": 7}), done, PollSchedule(), NOW)
    assert [e.event_id for e in timed.events] == [event.event_id]


@pytest.mark.parametrize(
    "seen",
    [
        ProviderJob("task_1", "running", "running", progress=40),
        ProviderUnavailable("503", status_code=503),
        CANCELLED,
    ],
)
def test_a_hint_the_provider_does_not_confirm_changes_nothing(seen: object) -> None:
    due = hinted_check(_hint(), NOW)
    outcome = decide_hinted_check(due, seen, PollSchedule(), NOW)  # type: ignore[arg-type]
    assert outcome.events == () and outcome.next_check is None


async def test_the_poller_asks_the_provider_before_announcing() -> None:
    publisher = MemoryPublisher()
    provider = FakeProvider(
        statuses=[
            ProviderJob("task_1", "running", "running", progress=40),
            ProviderJob(
                "task_1", "failed", "failed", failure_code="output_moderation", failure_message="x"
            ),
        ]
    )
    deps = PollerDeps(
        providers={provider.name: provider},
        publisher=publisher,
        topics=Topics("t."),
        clock=lambda: NOW,
    )
    await handle_poll_hinted(_hint(), deps)  # the webhook claimed success; the provider did not
    assert publisher.events == [] and publisher.scheduled == []
    await handle_poll_hinted(_hint(), deps)
    (failed,) = publisher.of_type(JobFailed)
    assert failed.reason_code == "output_moderation"  # type: ignore[attr-defined]
    assert publisher.scheduled == []


async def test_a_hint_whose_job_is_not_the_submitted_one_is_dropped() -> None:
    publisher = MemoryPublisher()
    provider = FakeProvider(statuses=[ProviderJob("task_1", "succeeded", "succeeded")])
    deps = PollerDeps(providers={provider.name: provider}, publisher=publisher, topics=Topics("t."))
    hint = _hint().model_copy(update={"provider_job_id": "task_other"})
    await handle_poll_hinted(hint, deps)
    assert publisher.events == [] and provider.statuses  # never asked


# --- the gateway's receiving end: 404, 401, acknowledged and dropped, or relayed ----------------


async def _no_request(_request: object) -> None:
    raise AssertionError("nothing is published as a request")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[GatewayDeps, list[PollHinted]]]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'records.db'}")
    records = Records(engine)
    submitted = JobSubmitted(
        event_id=uuid.uuid4(), request_id="r1", provider="replicate", provider_job_id="p1"
    )
    await records.record(
        GenerationRequested.model_validate({"request_id": "r1", "prompt": "x"}), "t"
    )
    await records.record(submitted, "t")
    hints: list[PollHinted] = []

    async def publish_hint(hint: PollHinted) -> None:
        hints.append(hint)

    deps = GatewayDeps(
        engine=engine,
        topics=Topics("t."),
        publish=_no_request,
        bootstrap_servers="unused:9092",
        group_id=lambda stage: stage,
        hook_verifiers={"replicate": StandardHooks("replicate", SecretStr(SECRET))},
        publish_hint=publish_hint,
    )
    yield deps, hints
    await engine.dispose()


async def test_the_gateway_relays_a_genuine_webhook_for_a_job_in_flight(
    gateway: tuple[GatewayDeps, list[PollHinted]],
) -> None:
    deps, hints = gateway
    headers, body = _standard(SECRET, {"id": "p1", "status": "succeeded"})
    receipt = await receive_provider_hook(deps, "replicate", headers, body, {})
    assert receipt.hinted
    (hint,) = hints
    assert (hint.request_id, hint.provider_job_id, hint.hinted_status) == ("r1", "p1", "succeeded")
    assert hint.submitted.provider_job_id == "p1"
    # The provider's retry of the same delivery is the same hint.
    await receive_provider_hook(deps, "replicate", headers, body, {})
    assert hints[1].event_id == hint.event_id


async def test_the_gateway_refuses_forgeries_and_drops_what_is_not_ours(
    gateway: tuple[GatewayDeps, list[PollHinted]],
) -> None:
    deps, hints = gateway
    with pytest.raises(GatewayRefusal) as unknown:
        await receive_provider_hook(deps, "fal", {}, b"{}", {})
    assert unknown.value.status == 404
    forged_headers, forged_body = _standard(generate_secret(), {"id": "p1", "status": "succeeded"})
    with pytest.raises(GatewayRefusal) as forged:
        await receive_provider_hook(deps, "replicate", forged_headers, forged_body, {})
    assert forged.value.status == 401
    headers, body = _standard(SECRET, {"id": "not-ours", "status": "succeeded"})
    assert not (await receive_provider_hook(deps, "replicate", headers, body, {})).hinted
    assert hints == []


async def test_a_jwks_that_is_down_is_ours_to_fix_and_is_not_asked_on_every_webhook(
    gateway: tuple[GatewayDeps, list[PollHinted]],
) -> None:
    deps, hints = gateway
    fetches = 0

    async def down() -> bytes:
        nonlocal fetches
        fetches += 1
        raise httpx.ConnectError("no route")

    clock = [0.0]
    hooks = FalHooks(JwksCache(down, min_refresh_s=60, clock=lambda: clock[0]))
    deps.hook_verifiers = {**deps.hook_verifiers, "fal": hooks}
    headers, body = _fal(Ed25519PrivateKey.generate())
    for _ in range(3):
        with pytest.raises(GatewayRefusal) as refused:
            await receive_provider_hook(deps, "fal", headers, body, {"app": "a/b"})
        assert refused.value.status == 503  # the provider sends it again
    assert fetches == 1
    clock[0] += 61
    with pytest.raises(WebhookKeysUnavailable):
        await hooks.verify(headers, body, {"app": "a/b"})
    assert fetches == 2 and hints == []
