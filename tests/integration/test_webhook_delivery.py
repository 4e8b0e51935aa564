"""Webhooks over real TLS: the notifier handler POSTs to an HTTPS server on 127.0.0.1 whose
certificate comes from a throwaway CA (trustme), trusted through VIDPIPE_WEBHOOK_CA_FILE.

The server is `http.server` with ssl in a thread: no framework, nothing to wait for but a bound
socket. Retries do not sleep (an injected no-op), so the module runs in about a second.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from schemas.events import DownloadUnavailable, RequestSnapshot, UserNotified, derive_event_id
from services.notifier.handlers import NotifierDeps, handle_download_unavailable
from vidpipe.net.guard import Resolver
from vidpipe.net.webhooks import WebhookSender, sender_from_settings, verify, webhook_id_for
from vidpipe.settings import Settings
from vidpipe.testing import MemoryPublisher

SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
HOSTNAME = "hooks.vidpipe.test"  # in the certificate; resolved to 127.0.0.1 by the test resolver
MAX_BODY = 64 * 1024


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HookServer:
    port: int
    ca_file: Path
    statuses: list[int] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)

    def answer(self) -> int:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


@pytest.fixture
def hook_server(tls: tuple[trustme.CA, Path]) -> Iterator[HookServer]:
    ca, ca_file = tls
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # The certificate names the test hostname and 127.0.0.1, nothing else.
    ca.issue_cert(HOSTNAME, "127.0.0.1").configure_cert(server_context)
    state = HookServer(port=0, ca_file=ca_file)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length", "0")), MAX_BODY)
            body = self.rfile.read(length)
            state.received.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(state.answer())
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            return None  # keep test output quiet

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def resolver_to_loopback(*names: str) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in names:
            raise OSError(f"no such host {host}")
        return ["127.0.0.1"]

    return resolve


async def no_sleep(_seconds: float) -> None:
    return None


def settings_for(server: HookServer, *, ca: bool = True, allow_private: bool = True) -> Settings:
    return Settings(
        webhook_secret=SecretStr(SECRET),
        webhook_ca_file=server.ca_file if ca else None,
        webhook_attempts=3,
        allow_private_urls=allow_private,
        http_timeout_s=5.0,
    )


def event_for(callback_url: str) -> DownloadUnavailable:
    moment = datetime.now(UTC)
    return DownloadUnavailable(
        event_id=derive_event_id("req-tls", "DownloadUnavailable", "gen_1"),
        request_id="req-tls",
        provider="azure-sora",
        provider_job_id="task_tls",
        generation_id="gen_1",
        reason_code="not_found",
        http_status=404,
        message="no content route",
        attempted_at=moment,
        request=RequestSnapshot(
            prompt="waves", callback_url=callback_url, metadata={"language": "fr-FR"}
        ),
    )


async def run_notifier(
    settings: Settings, callback_url: str, resolver: Resolver | None = None
) -> tuple[MemoryPublisher, UserNotified]:
    webhooks = sender_from_settings(settings, resolver=resolver, sleep=no_sleep)
    assert isinstance(webhooks, WebhookSender)
    publisher = MemoryPublisher()
    deps = NotifierDeps(
        publisher=publisher, webhooks=webhooks, default_fallbacks=settings.fallback_default
    )
    try:
        await handle_download_unavailable(event_for(callback_url), deps)
    finally:
        await webhooks.aclose()
    (outcome,) = [e for e in publisher.of_type(UserNotified) if e.channel == "webhook"]  # type: ignore[attr-defined]
    assert isinstance(outcome, UserNotified)
    return publisher, outcome


async def test_signed_webhook_over_https_after_a_503(hook_server: HookServer) -> None:
    hook_server.statuses = [503, 200]
    url = f"https://127.0.0.1:{hook_server.port}/hooks/vidpipe?tenant=7"
    _publisher, outcome = await run_notifier(settings_for(hook_server), url)

    assert outcome.delivered and outcome.webhook_status == 200
    expected_id = webhook_id_for("req-tls", "video.download_unavailable", "gen_1")
    assert outcome.webhook_id == expected_id
    assert len(hook_server.received) == 2
    for received in hook_server.received:
        assert received.path == "/hooks/vidpipe?tenant=7"
        assert received.headers["webhook-id"] == expected_id
        payload = verify(SECRET, received.headers, received.body)  # real clock, 300 s tolerance
    assert payload["type"] == "video.download_unavailable"
    data = payload["data"]
    assert (data["request_id"], data["provider_job_id"], data["generation_id"]) == (
        "req-tls",
        "task_tls",
        "gen_1",
    )
    assert data["language"] == "fr" and "task_tls" in data["message"]
    assert data["reason_code"] == "not_found" and data["expires_at"] is None


async def test_a_hostname_is_pinned_to_its_vetted_address_and_verified_by_name(
    hook_server: HookServer,
) -> None:
    url = f"https://{HOSTNAME}:{hook_server.port}/cb"
    _publisher, outcome = await run_notifier(
        settings_for(hook_server), url, resolver_to_loopback(HOSTNAME)
    )
    assert outcome.delivered
    (received,) = hook_server.received
    assert received.headers["Host"] == f"{HOSTNAME}:{hook_server.port}"


async def test_a_certificate_for_another_name_fails_once_without_retries(
    hook_server: HookServer,
) -> None:
    # The certificate also covers 127.0.0.1, so this fails only if the name (via SNI) is checked.
    url = f"https://elsewhere.vidpipe.test:{hook_server.port}/cb"
    _publisher, outcome = await run_notifier(
        settings_for(hook_server), url, resolver_to_loopback("elsewhere.vidpipe.test")
    )
    assert not outcome.delivered and outcome.webhook_status is None
    assert "TLS failure" in outcome.message and "1 attempt" in outcome.message
    assert hook_server.received == []


async def test_an_untrusted_ca_is_a_tls_failure(hook_server: HookServer) -> None:
    url = f"https://127.0.0.1:{hook_server.port}/cb"
    _publisher, outcome = await run_notifier(settings_for(hook_server, ca=False), url)
    assert not outcome.delivered and "TLS failure" in outcome.message
    assert hook_server.received == []


async def test_loopback_is_refused_unless_private_urls_are_allowed(
    hook_server: HookServer,
) -> None:
    url = f"https://127.0.0.1:{hook_server.port}/cb"
    publisher, outcome = await run_notifier(settings_for(hook_server, allow_private=False), url)
    assert not outcome.delivered and "refused" in outcome.message
    assert hook_server.received == []
    (record,) = [e for e in publisher.of_type(UserNotified) if e.channel == "record"]  # type: ignore[attr-defined]
    assert isinstance(record, UserNotified) and record.delivered
