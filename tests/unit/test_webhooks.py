"""Standard Webhooks signing/verification and the delivering client (httpx.MockTransport)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from vidpipe.errors import ConfigurationError
from vidpipe.net.guard import Resolver
from vidpipe.net.webhooks import (
    MAX_BODY_BYTES,
    WebhookSender,
    WebhookVerificationError,
    decode_secret,
    encode_body,
    generate_secret,
    open_client,
    sender_from_settings,
    sign,
    signed_headers,
    verify,
    webhook_id_for,
)
from vidpipe.settings import Settings

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
NOW = 1_800_000_000
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V4_B = "93.184.216.35"
HOOK = "https://hooks.example.com/vidpipe?token=callback-token-xyz"
BODY = encode_body({"id": "msg_1", "type": "t", "data": {"n": 1, "text": "vidéo"}})


def resolver_for(table: dict[str, Sequence[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


PUBLIC = resolver_for({"hooks.example.com": [PUBLIC_V4]})


class Recorder:
    """An httpx handler answering from a script of responses (or exceptions), recording requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        # A fresh copy each time: a response object cannot be sent twice.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def sender(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    attempts: int = 5,
    resolver: Resolver = PUBLIC,
    sleep: Sleeps | None = None,
    allow_private: bool = False,
) -> WebhookSender:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)
    return WebhookSender(
        SECRET,
        client=client,
        attempts=attempts,
        resolver=resolver,
        sleep=sleep or Sleeps(),
        allow_private=allow_private,
        clock=lambda: NOW,
        owns_client=True,
    )


# --- signing ----------------------------------------------------------------------------------


def test_signature_matches_a_hand_computed_hmac() -> None:
    webhook_id, timestamp, body = "msg_abc", 1_700_000_000, b'{"hello":"world"}'
    mac = hmac.new(KEY, b"msg_abc.1700000000." + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    assert sign(SECRET, webhook_id, timestamp, body) == expected
    assert signed_headers(SecretStr(SECRET), webhook_id, timestamp, body) == {
        "webhook-id": "msg_abc",
        "webhook-timestamp": "1700000000",
        "webhook-signature": expected,
    }


def test_signature_matches_the_standard_webhooks_example() -> None:
    # The example published with the Standard Webhooks specification: interop, not just symmetry.
    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_verify_accepts_a_signed_body_and_returns_the_payload() -> None:
    headers = signed_headers(SECRET, "msg_1", NOW, BODY)
    assert verify(SECRET, headers, BODY, now=NOW)["data"] == {"n": 1, "text": "vidéo"}
    # Any header case, str bodies, and one good signature among several (secret rotation).
    shouted = {k.upper(): v for k, v in headers.items()}
    shouted["WEBHOOK-SIGNATURE"] = "v1,bm9wZQ== v1a,whatever " + headers["webhook-signature"]
    assert verify(SECRET, shouted, BODY.decode(), now=NOW + 299)["id"] == "msg_1"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda h, b: (h, b.replace(b'"n":1', b'"n":2')), "no matching"),
        (lambda h, b: ({**h, "webhook-id": "msg_2"}, b), "no matching"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b), "no matching"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW - 301)}, b), "too old"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW + 301)}, b), "future"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "not an integer"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, b), "no"),
    ],
)
def test_verify_rejects(
    change: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], match: str
) -> None:
    headers, body = change(signed_headers(SECRET, "msg_1", NOW, BODY), BODY)
    with pytest.raises(WebhookVerificationError, match=match):
        verify(SECRET, headers, body, now=NOW)


def test_verify_rejects_an_old_timestamp_with_a_valid_signature() -> None:
    headers = signed_headers(SECRET, "msg_1", NOW - 301, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(SECRET, headers, BODY, now=NOW)
    assert verify(SECRET, headers, BODY, now=NOW, tolerance_s=600)["id"] == "msg_1"


def test_verify_rejects_the_wrong_secret() -> None:
    headers = signed_headers(SECRET, "msg_1", NOW, BODY)
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(generate_secret(), headers, BODY, now=NOW)


def test_secrets_decode_and_bad_ones_are_refused_without_being_quoted() -> None:
    fresh = generate_secret()
    assert fresh.startswith("whsec_") and len(decode_secret(fresh)) == 32
    assert decode_secret(SECRET.removeprefix("whsec_")) == KEY  # prefix optional
    for bad in ("whsec_not base64!!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ConfigurationError) as info:
            decode_secret(bad)
        assert bad.removeprefix("whsec_") not in str(info.value)


def test_webhook_ids_are_deterministic() -> None:
    one = webhook_id_for("req-1", "video.download_unavailable", "gen_1")
    assert one == webhook_id_for("req-1", "video.download_unavailable", "gen_1")
    assert one != webhook_id_for("req-1", "video.download_unavailable", "gen_2")
    assert one.startswith("msg_") and "." not in one


# --- delivery ---------------------------------------------------------------------------------


async def test_retried_on_503_then_delivered_with_the_same_id() -> None:
    handler = Recorder(httpx.Response(503), httpx.Response(204))
    sleeps = Sleeps()
    webhooks = sender(handler, sleep=sleeps)
    result = await webhooks.deliver(HOOK, BODY, webhook_id="msg_x")
    await webhooks.aclose()
    assert (result.delivered, result.status, result.attempts) == (True, 204, 2)
    assert len(sleeps.calls) == 1
    for request in handler.requests:
        # Pinned to the vetted address, addressed to the original host.
        assert request.url.host == PUBLIC_V4
        assert request.url.query == b"token=callback-token-xyz"
        assert request.headers["host"] == "hooks.example.com"
        assert request.headers["content-type"] == "application/json"
        assert request.content == BODY
        assert verify(SECRET, request.headers, request.content, now=NOW)["id"] == "msg_1"
    assert {r.headers["webhook-id"] for r in handler.requests} == {"msg_x"}


async def test_not_retried_on_400() -> None:
    handler = Recorder(httpx.Response(400), httpx.Response(200))
    result = await sender(handler).deliver(HOOK, BODY, webhook_id="msg_x")
    assert (result.delivered, result.status, result.attempts) == (False, 400, 1)
    assert len(handler.requests) == 1
    assert result.error is not None and "HTTP 400" in result.error


async def test_redirects_are_failures_not_followed() -> None:
    handler = Recorder(httpx.Response(307, headers={"location": "https://169.254.169.254/"}))
    result = await sender(handler).deliver(HOOK, BODY, webhook_id="msg_x")
    assert (result.delivered, result.status, result.attempts) == (False, 307, 1)
    assert len(handler.requests) == 1


async def test_attempts_are_bounded_and_the_last_status_kept() -> None:
    handler = Recorder(httpx.Response(502))
    result = await sender(handler, attempts=3).deliver(HOOK, BODY, webhook_id="msg_x")
    assert (result.delivered, result.status, result.attempts) == (False, 502, 3)
    assert len(handler.requests) == 3
    # Errors never carry the callback's path or query (they may hold the receiver's tokens).
    assert result.error is not None and "callback-token-xyz" not in result.error


async def test_429_honours_retry_after() -> None:
    handler = Recorder(httpx.Response(429, headers={"retry-after": "7"}), httpx.Response(200))
    sleeps = Sleeps()
    result = await sender(handler, sleep=sleeps).deliver(HOOK, BODY, webhook_id="msg_x")
    assert (result.delivered, result.attempts) == (True, 2)
    assert sleeps.calls == [7.0]


async def test_503_honours_retry_after_ms_as_the_provider_clients_do() -> None:
    # One Retry-After reading for every sender (vidpipe.net.retry): the millisecond hint wins.
    answer = httpx.Response(503, headers={"retry-after-ms": "1500", "retry-after": "9"})
    handler = Recorder(answer, httpx.Response(200))
    sleeps = Sleeps()
    result = await sender(handler, sleep=sleeps).deliver(HOOK, BODY, webhook_id="msg_x")
    assert (result.delivered, result.attempts) == (True, 2)
    assert sleeps.calls == [1.5]


async def test_a_retry_after_longer_than_the_stage_waits_ends_the_delivery() -> None:
    handler = Recorder(httpx.Response(429, headers={"retry-after": "3600"}))
    sleeps = Sleeps()
    result = await sender(handler, sleep=sleeps).deliver(HOOK, BODY, webhook_id="msg_x")
    assert (result.delivered, result.status, result.attempts) == (False, 429, 1)
    assert sleeps.calls == []
    assert result.error is not None and "3600" in result.error


async def test_timeouts_and_connection_errors_are_retried_across_addresses() -> None:
    handler = Recorder(
        httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(200)
    )
    resolver = resolver_for({"hooks.example.com": [PUBLIC_V4, PUBLIC_V4_B]})
    result = await sender(handler, resolver=resolver).deliver(HOOK, BODY, webhook_id="msg_x")
    assert (result.delivered, result.status, result.attempts) == (True, 200, 3)
    # A dead address is not tried forever: attempts rotate over the vetted addresses.
    assert [r.url.host for r in handler.requests] == [PUBLIC_V4, PUBLIC_V4_B, PUBLIC_V4]


@pytest.mark.parametrize(
    ("url", "table"),
    [
        ("https://127.0.0.1/hook", {}),
        ("https://[::1]/hook", {}),
        ("https://localhost/hook", {}),
        ("https://169.254.169.254/latest/meta-data", {}),
        ("https://metadata.google.internal/", {}),
        ("https://hooks.example.com/hook", {"hooks.example.com": ["10.0.0.7"]}),
        ("https://hooks.example.com/hook", {"hooks.example.com": [PUBLIC_V4, "192.168.1.1"]}),
        ("http://hooks.example.com/hook", {"hooks.example.com": [PUBLIC_V4]}),
    ],
)
async def test_unsafe_callbacks_are_refused_before_any_request(
    url: str, table: dict[str, Sequence[str]]
) -> None:
    handler = Recorder(httpx.Response(200))
    result = await sender(handler, resolver=resolver_for(table)).deliver(
        url, BODY, webhook_id="msg_x"
    )
    assert (result.delivered, result.status, result.attempts) == (False, None, 0)
    assert result.error is not None and result.error.startswith("callback URL refused")
    assert handler.requests == []


async def test_oversized_bodies_are_a_failed_delivery_not_an_error() -> None:
    recorder = Recorder(httpx.Response(200))
    result = await sender(recorder).deliver(HOOK, b"x" * (64 * 1024 + 1), webhook_id="msg_x")
    assert (result.delivered, result.attempts, recorder.requests) == (False, 0, [])
    assert result.error is not None and "limit" in result.error


def test_the_sender_never_shows_its_secret() -> None:
    webhooks = sender(Recorder(httpx.Response(200)))
    assert SECRET not in repr(webhooks) and SECRET.removeprefix("whsec_") not in repr(webhooks)


async def test_settings_build_the_sender(tmp_path: Path) -> None:
    assert sender_from_settings(Settings(webhook_secret=None)) is None
    with pytest.raises(ConfigurationError):
        sender_from_settings(Settings(webhook_secret=SecretStr("whsec_@@@")))
    built = sender_from_settings(Settings(webhook_secret=SecretStr(SECRET), webhook_attempts=2))
    assert built is not None and built.attempts == 2 and not built.allow_private
    await built.aclose()
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match="CA file"):
        open_client(ca_file=missing)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="CA file"):
        open_client(ca_file=tmp_path / "junk.pem")


def test_encoded_bodies_are_compact_utf8_json() -> None:
    assert encode_body({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
    assert json.loads(encode_body({"x": None})) == {"x": None}


@pytest.mark.parametrize(
    "payload",
    [
        {"message": "x" * 200_000},
        {"message": "\x01" * 50_000},  # JSON escapes each as 6 bytes
        {"message": "é" * 40_000, "other": "😀" * 40_000, "n": 7},
        {"data": {"items": ["a" * 30_000, "b" * 30_000, "c" * 30_000]}, "id": "msg_1"},
    ],
)
def test_bodies_are_cut_to_fit_their_bound_and_stay_json(payload: dict[str, object]) -> None:
    body = encode_body(payload)
    assert len(body) <= MAX_BODY_BYTES
    decoded = json.loads(body)
    assert set(decoded) == set(payload)  # shortened, never dropped
    assert encode_body({"small": "é"}, max_bytes=100) == '{"small":"é"}'.encode()


def test_a_body_whose_structure_alone_is_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be cut"):
        encode_body({f"key-{i}": i for i in range(100)}, max_bytes=64)
