"""The emulator's own webhooks, as each provider sends them when a job ends, checked by the
providers' official SDKs where they ship a checker (replicate's `webhooks.validate`, openai's
`webhooks.verify_signature`) and by vidpipe's verifiers (fal's Ed25519 over the emulator's JWKS).

The receiver is `http.server` in a thread; each test waits on its queue for the delivery (a
real event, never a sleep). "lost" and "forged" are the emulator's two ways of breaking them.
"""

from __future__ import annotations

import asyncio
import http.server
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from openai import OpenAI
from pydantic import SecretStr
from replicate.client import Client as ReplicateClient
from replicate.webhook import WebhookValidationError

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.dev.emulator.webhooks import JWKS_PATH
from vidpipe.errors import WebhookVerificationError
from vidpipe.providers import FalClient
from vidpipe.providers import ReplicateClient as VidpipeReplicate
from vidpipe.providers.base import VideoSpec
from vidpipe.providers.webhooks import FalHooks, JwksCache, StandardHooks

KEY = "emulator-webhook-test-key-5b7d1"
MODEL = "kwaivgi/kling-v2.1"


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class _Receiver(http.server.BaseHTTPRequestHandler):
    deliveries: queue.Queue[Delivery]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        self.deliveries.put(Delivery(self.path, dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


@dataclass
class Receiver:
    url: str
    deliveries: queue.Queue[Delivery]

    async def next(self, timeout_s: float = 30.0) -> Delivery:
        return await asyncio.to_thread(self.deliveries.get, timeout=timeout_s)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    deliveries: queue.Queue[Delivery] = queue.Queue()
    handler = type("Handler", (_Receiver,), {"deliveries": deliveries})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks", deliveries)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(api_key=KEY, time_scale=50.0, max_concurrent_jobs=None)
    async with EmulatorServer(config) as server:
        yield server


SPEC = VideoSpec(prompt="a heron at dawn", width=1280, height=720, seconds=5)


async def test_replicate_webhooks_are_what_its_sdk_validates(
    emulator: EmulatorServer, receiver: Receiver
) -> None:
    sdk = ReplicateClient(api_token=KEY, base_url=emulator.base_url)
    prediction = await sdk.models.predictions.async_create(
        model=MODEL,
        input={"prompt": "a heron at dawn"},
        webhook=f"{receiver.url}/replicate",
        webhook_events_filter=["completed"],
    )
    delivery = await receiver.next()
    secret = await sdk.webhooks.default.async_secret()  # the SDK fetches it from the emulator
    # Raises (InvalidSignatureError, InvalidTimestampError, ...) unless the webhook is genuine.
    sdk.webhooks.validate(headers=delivery.headers, body=delivery.body.decode(), secret=secret)
    with pytest.raises(WebhookValidationError):
        tampered = delivery.body.decode().replace("succeeded", "failed")
        sdk.webhooks.validate(headers=delivery.headers, body=tampered, secret=secret)
    # vidpipe's own client asks for the webhook the same way, and its verifier agrees.
    hint = await StandardHooks("replicate", SecretStr(secret.key)).verify(
        delivery.headers, delivery.body, {}
    )
    assert (hint.provider_job_id, hint.status) == (prediction.id, "succeeded")
    ours = VidpipeReplicate(
        api_token=KEY, base_url=emulator.base_url, webhook_url=f"{receiver.url}/replicate"
    )
    try:
        job = await ours.create_job(SPEC, idempotency_key="k1")
    finally:
        await ours.aclose()
    again = await StandardHooks("replicate", SecretStr(secret.key)).verify(
        *(lambda d: (d.headers, d.body))(await receiver.next()), {}
    )
    assert again.provider_job_id == job.job_id


async def test_openai_video_events_are_what_its_sdk_verifies(
    emulator: EmulatorServer, receiver: Receiver
) -> None:
    emulator.update_config(openai_webhook_url=f"{receiver.url}/openai")
    sdk = OpenAI(api_key=KEY, base_url=emulator.openai_base_url)
    video = await asyncio.to_thread(
        sdk.videos.create, model="sora-2", prompt="a heron at dawn", seconds="4"
    )
    delivery = await receiver.next()
    secret = emulator.config.webhook_secret.get_secret_value()
    sdk.webhooks.verify_signature(delivery.body, delivery.headers, secret=secret)
    hint = await StandardHooks("openai-videos", SecretStr(secret)).verify(
        delivery.headers, delivery.body, {}
    )
    assert (hint.provider_job_id, hint.status) == (video.id, "completed")


async def test_fal_webhooks_verify_with_the_emulators_jwks(
    emulator: EmulatorServer, receiver: Receiver
) -> None:
    client = FalClient(api_key=KEY, base_url=emulator.base_url, webhook_url=f"{receiver.url}/fal")
    try:
        job = await client.create_job(SPEC, idempotency_key="k1")
    finally:
        await client.aclose()
    delivery = await receiver.next()
    assert delivery.path.startswith("/hooks/fal?app=")
    query = dict(part.split("=", 1) for part in delivery.path.split("?", 1)[1].split("&"))
    query["app"] = query["app"].replace("%2F", "/")
    hooks = FalHooks(JwksCache.from_url(f"{emulator.base_url}{JWKS_PATH}"))
    hint = await hooks.verify(delivery.headers, delivery.body, query)
    assert (hint.provider_job_id, hint.status) == (job.job_id, "OK")


async def test_lost_webhooks_are_never_sent_and_forged_ones_never_verify(
    emulator: EmulatorServer, receiver: Receiver
) -> None:
    emulator.update_config(webhooks="lost")
    client = FalClient(api_key=KEY, base_url=emulator.base_url, webhook_url=f"{receiver.url}/fal")
    try:
        await client.create_job(SPEC, idempotency_key="k1")
        assert emulator.state.stats["fal.webhooks_lost"] == 1
        emulator.update_config(webhooks="forged")
        await client.create_job(SPEC, idempotency_key="k2")
    finally:
        await client.aclose()
    delivery = await receiver.next()  # the forged one: the lost one never comes
    assert receiver.deliveries.empty()
    query = {"app": delivery.path.split("app=", 1)[1].replace("%2F", "/")}
    hooks = FalHooks(JwksCache.from_url(f"{emulator.base_url}{JWKS_PATH}"))
    with pytest.raises(WebhookVerificationError, match="no fal key"):
        await hooks.verify(delivery.headers, delivery.body, query)
