"""Every way out of "generated but not downloadable", end to end: each fallback its own process.

The emulator's directives drive the paths: `download=missing` (never), `download=delayed` (after a
while), `retention` (the asset expires). Timers and intervals are shortened by settings only.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import Pipeline, make_request
from vidpipe.media.sample import probe_mp4
from vidpipe.net.webhooks import generate_secret, verify

FAST_FALLBACKS = {
    "VIDPIPE_DOWNLOAD_ATTEMPTS": "1",
    "VIDPIPE_REDOWNLOAD_INITIAL_S": "0.5",
    "VIDPIPE_REDOWNLOAD_MAX_INTERVAL_S": "1.5",
}
CORE = ("submitter", "poller", "fetcher", "recorder")


async def _start(pipeline: Pipeline, *names: str) -> None:
    for name in (*CORE, *names):
        pipeline.start(name)


async def _event_count(pipeline: Pipeline, request_id: str, event_type: str) -> int:
    return await pipeline.count_events(request_id, event_type)


async def test_placeholder_first_then_the_real_video_replaces_it(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = await make_pipeline(FAST_FALLBACKS)
    await _start(pipeline, "placeholder", "redownloader")
    prefix = pipeline.settings.topic_prefix
    request = make_request(
        prefix,
        "ph",
        prompt="a heron [emulator:download=delayed] [emulator:download_delay=20]",
        fallbacks=["placeholder", "retry"],
    )
    await pipeline.publish(request)
    rid = request.request_id
    seen = await pipeline.wait_for([rid], until=lambda v: v.status in ("placeholder", "stored"))
    placeholder_url = seen[rid].output_image_url
    views = await pipeline.wait_for([rid], until=lambda v: v.status == "stored")
    view = views[rid]
    assert view.placeholder is False
    assert view.output_image_url and view.output_image_url != placeholder_url
    assert probe_mp4(Path(view.output_image_url.removeprefix("file://")))["frames"] > 0
    # Both videos are in the story: the placeholder first, then the real one.
    assert await _event_count(pipeline, rid, "VideoStored") == 2
    assert await _event_count(pipeline, rid, "DownloadUnavailable") == 1
    placeholder_file = Path(pipeline.env["VIDPIPE_STORAGE_URL"].removeprefix("file://"))
    assert probe_mp4(placeholder_file / rid / "placeholder.mp4")["frames"] > 0


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def https_receiver(tmp_path: Path) -> Iterator[tuple[str, Path, type[_Receiver]]]:
    """A real HTTPS server on loopback with a certificate from a throwaway CA."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = type("Receiver", (_Receiver,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/hooks/video", ca_file, handler
    finally:
        server.shutdown()
        server.server_close()


async def test_the_requester_gets_a_signed_webhook_and_a_message_in_french(
    make_pipeline: MakePipeline, https_receiver: tuple[str, Path, type[_Receiver]]
) -> None:
    url, ca_file, receiver = https_receiver
    secret = generate_secret()
    pipeline = await make_pipeline(
        {
            **FAST_FALLBACKS,
            "VIDPIPE_WEBHOOK_SECRET": secret,
            "VIDPIPE_WEBHOOK_CA_FILE": str(ca_file),
            # The receiver is on loopback, which the notifier refuses unless told otherwise.
            "VIDPIPE_ALLOW_PRIVATE_URLS": "true",
        }
    )
    await _start(pipeline, "notifier")
    request = make_request(
        pipeline.settings.topic_prefix,
        "hook",
        prompt="an owl [emulator:download=missing]",
        fallbacks=["notify"],
        callback_url=url,
        metadata={"lang": "fr"},
    )
    await pipeline.publish(request)
    rid = request.request_id
    # Two notices: the message for the record, then the webhook's delivery report.
    await pipeline.wait_for_events(rid, "UserNotified", 2)
    views = await pipeline.wait_for([rid], until=lambda v: v.user_message is not None)
    assert len(receiver.received) == 1, "one webhook, not retried after a 2xx"
    headers, body = receiver.received[0]
    payload = verify(secret, headers, body)
    assert payload["data"]["request_id"] == rid
    job_id = views[rid].sora_job_id
    assert job_id and payload["data"]["provider_job_id"] == job_id
    message = views[rid].user_message or ""
    assert job_id in message
    assert "vidéo" in message.lower(), message
    assert views[rid].status == "download_unavailable"


async def test_the_download_appears_after_several_retries(make_pipeline: MakePipeline) -> None:
    pipeline = await make_pipeline(FAST_FALLBACKS)
    await _start(pipeline, "redownloader")
    request = make_request(
        pipeline.settings.topic_prefix,
        "late",
        prompt="a lynx [emulator:download=delayed] [emulator:download_delay=40]",
        fallbacks=["retry"],
    )
    await pipeline.publish(request)
    rid = request.request_id
    views = await pipeline.wait_for([rid], until=lambda v: v.status == "stored")
    retries = await _event_count(pipeline, rid, "DownloadRetryScheduled")
    # 40 emulated seconds are 8 real ones; retries come 0.5, 1, 1.5, 1.5 s apart: five or so,
    # and at least three even when the first fetch comes seconds late on a loaded machine.
    assert retries >= 3, retries
    assert views[rid].retry_attempts == retries
    assert views[rid].placeholder is False


async def test_expiry_ends_in_failover_that_completes_on_the_second_provider(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = await make_pipeline({**FAST_FALLBACKS, "VIDPIPE_FAILOVER_WHEN": "after_retry"})
    await _start(pipeline, "redownloader", "failover")
    request = make_request(
        pipeline.settings.topic_prefix,
        "exp",
        # Azure never hands it over and the asset expires 40 emulated (8 real) seconds in;
        # the second provider has no such trouble.
        prompt="a stag [emulator:azure.download=missing] [emulator:retention=40]",
        provider="azure-sora",
        seconds=4,
        fallbacks=["retry", "failover"],
    )
    await pipeline.publish(request)
    rid = request.request_id
    child = f"{rid}.failover"
    views = await pipeline.wait_for(
        [rid, child], until=lambda v: v.status == "stored", timeout_s=90
    )
    assert views[child].provider == "openai-videos"
    assert views[rid].failover_request_id == child
    assert views[rid].output_image_url == views[child].output_image_url
    assert await _event_count(pipeline, rid, "DownloadGaveUp") == 1
    assert await _event_count(pipeline, child, "GenerationRequested") == 1


async def test_a_policy_that_excludes_fallbacks_is_obeyed(make_pipeline: MakePipeline) -> None:
    pipeline = await make_pipeline(FAST_FALLBACKS)
    await _start(pipeline, "placeholder", "notifier", "redownloader", "failover")
    request = make_request(
        pipeline.settings.topic_prefix,
        "policy",
        prompt="a wolf [emulator:download=missing]",
        fallbacks=["notify"],
    )
    await pipeline.publish(request)
    rid = request.request_id
    await pipeline.wait_for([rid], until=lambda v: v.user_message is not None)
    # The excluded subscribers saw the event and said why they did nothing.
    for stage in ("placeholder", "redownloader"):
        await pipeline.wait_for_log(stage, "policy_excludes", rid)
    assert await _event_count(pipeline, rid, "VideoStored") == 0
    assert await _event_count(pipeline, rid, "DownloadRetryScheduled") == 0
    # Nothing pursues the real video (no retry, no failover): it is given up at once.
    views = await pipeline.wait_for([rid], until=lambda v: v.status == "gave_up")
    assert views[rid].retry_attempts in (None, 0)


async def test_a_killed_redownloader_loses_no_scheduled_retry(make_pipeline: MakePipeline) -> None:
    pipeline = await make_pipeline({**FAST_FALLBACKS, "VIDPIPE_REDOWNLOAD_INITIAL_S": "2"})
    await _start(pipeline)
    redownloader = pipeline.start("redownloader")
    request = make_request(
        pipeline.settings.topic_prefix,
        "kill",
        prompt="a crane [emulator:download=delayed] [emulator:download_delay=15]",
        fallbacks=["retry"],
    )
    await pipeline.publish(request)
    rid = request.request_id
    await pipeline.wait_for([rid], until=lambda v: v.status == "retrying")
    redownloader.kill()  # the first retry is scheduled, and only Kafka knows about it now
    assert (await pipeline.records.many([rid]))[rid].status == "retrying"
    pipeline.start("redownloader", instance=1)
    views = await pipeline.wait_for([rid], until=lambda v: v.status == "stored")
    assert views[rid].placeholder is False
    assert await _event_count(pipeline, rid, "VideoStored") == 1
