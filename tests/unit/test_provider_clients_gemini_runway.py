"""Wire-contract tests for the gemini and runway clients, against httpx.MockTransport."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from vidpipe.errors import (
    AuthenticationFailed,
    ContentPolicyViolation,
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    RateLimited,
    TerminalProviderError,
)
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers import (
    GeminiClient,
    GeminiConfig,
    InputImage,
    RunwayClient,
    RunwayConfig,
    VideoSpec,
    build_provider,
    configured_providers,
)

KEY = "AIza-TEST-very-secret-key-0123456789"
BASE = "https://generativelanguage.example"
RUNWAY = "https://api.runway.example"
# A public address literal: a hop there is vetted without DNS, and served by the MockTransport.
CDN = "https://93.184.216.34"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
OPERATION = "models/veo-3.0-generate-001/operations/op123"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Answers from a list (the last repeats) and keeps the requests."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request) if callable(answer) else answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


async def _no_wait(_seconds: float) -> None:
    return None


def gemini(rec: Recorder, model: str = "veo-3.0-generate-001") -> GeminiClient:
    return GeminiClient(
        api_key=KEY,
        base_url=BASE,
        model=model,
        transport=rec.transport,
        retry=RetryPolicy(sleep=_no_wait),
    )


def runway(rec: Recorder) -> RunwayClient:
    return RunwayClient(
        api_key=KEY, base_url=RUNWAY, transport=rec.transport, retry=RetryPolicy(sleep=_no_wait)
    )


def body(request: httpx.Request) -> dict[str, Any]:
    data = json.loads(request.content)
    assert isinstance(data, dict)
    return data


def google_error(http_status: int, message: str, **extra: Any) -> httpx.Response:
    error = {"code": http_status, "message": message, **extra}
    return httpx.Response(http_status, json={"error": error})


@pytest.fixture(autouse=True)
def _no_provider_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("VIDPIPE_GEMINI_", "VIDPIPE_RUNWAY_", "RUNWAYML_")) or name in (
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
        ):
            monkeypatch.delenv(name)
    yield


# --- gemini: Veo -----------------------------------------------------------------------------


async def test_veo_create_posts_predict_long_running_with_the_key_in_a_header() -> None:
    rec = Recorder(httpx.Response(200, json={"name": OPERATION}))
    image = InputImage(data=b"\x89PNG fake", content_type="image/png")
    client = gemini(rec)
    job = await client.create_job(
        VideoSpec(prompt="a fox", width=1080, height=1920, seconds=8, variants=2, image=image),
        idempotency_key="req-1",
    )
    (sent,) = rec.requests
    assert sent.url.path == "/v1beta/models/veo-3.0-generate-001:predictLongRunning"
    assert sent.headers["x-goog-api-key"] == KEY and KEY not in str(sent.url)
    assert "idempotency-key" not in sent.headers
    assert body(sent) == {
        "instances": [
            {
                "prompt": "a fox",
                "image": {
                    "bytesBase64Encoded": base64.b64encode(image.data).decode(),
                    "mimeType": "image/png",
                },
            }
        ],
        "parameters": {
            "aspectRatio": "9:16",
            "durationSeconds": 8,
            "sampleCount": 2,
            "resolution": "1080p",
        },
    }
    assert (job.job_id, job.status, job.terminal) == (OPERATION, "running", False)


@pytest.mark.parametrize(
    ("answer", "status", "code", "generations"),
    [
        ({"name": OPERATION}, "running", None, []),
        (
            {
                "name": OPERATION,
                "done": True,
                "response": {
                    "generateVideoResponse": {
                        "generatedSamples": [
                            {"video": {"uri": f"{BASE}/v1beta/files/a:download?alt=media"}},
                            {"video": {"uri": f"{BASE}/v1beta/files/b:download?alt=media"}},
                        ]
                    }
                },
            },
            "succeeded",
            None,
            ["0", "1"],
        ),
        (
            {
                "name": OPERATION,
                "done": True,
                "response": {
                    "generateVideoResponse": {
                        "raiMediaFilteredCount": 1,
                        "raiMediaFilteredReasons": ["violates the usage guidelines"],
                    }
                },
            },
            "failed",
            "content_policy_violation",
            [],
        ),
        (
            {"name": OPERATION, "done": True, "error": {"code": 13, "message": "boom"}},
            "failed",
            "internal_error",
            [],
        ),
        ({"name": OPERATION, "done": True, "response": {}}, "failed", "no_video", []),
    ],
)
async def test_veo_operations_are_normalised(
    answer: dict[str, Any], status: str, code: str | None, generations: list[str]
) -> None:
    rec = Recorder(httpx.Response(200, json=answer))
    job = await gemini(rec).get_job(OPERATION)
    assert rec.requests[0].url.path == f"/v1beta/{OPERATION}"
    assert (job.status, job.failure_code, job.generation_ids) == (status, code, generations)


async def test_a_wrong_key_is_authentication_failed_and_a_refused_prompt_content_policy() -> None:
    wrong = google_error(
        400,
        "API key not valid. Please pass a valid API key.",
        status="INVALID_ARGUMENT",
        details=[
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ],
    )
    with pytest.raises(AuthenticationFailed) as denied:
        await gemini(Recorder(wrong)).get_job(OPERATION)
    assert KEY not in str(denied.value)
    refused = google_error(400, "This prompt violates the usage guidelines.")
    with pytest.raises(ContentPolicyViolation):
        await gemini(Recorder(refused)).create_job(VideoSpec(prompt="x"), idempotency_key="k")


async def test_a_429_takes_its_wait_from_retry_info_and_a_5xx_create_is_not_resent() -> None:
    limited = google_error(
        429,
        "Resource has been exhausted",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}],
    )
    rec = Recorder(limited)
    client = GeminiClient(
        api_key=KEY, base_url=BASE, transport=rec.transport, retry=RetryPolicy(attempts=1)
    )
    with pytest.raises(RateLimited) as info:
        await client.create_job(VideoSpec(prompt="x"), idempotency_key="k")
    assert info.value.retry_after == 7.0
    rec = Recorder(google_error(500, "Internal error"))
    with pytest.raises(CreateOutcomeUnknown):
        await gemini(rec).create_job(VideoSpec(prompt="x"), idempotency_key="k")
    assert len(rec.requests) == 1
    with pytest.raises(TerminalProviderError):
        await gemini(rec).list_jobs(datetime.now(UTC))


async def test_a_video_on_another_origin_is_fetched_without_the_key() -> None:
    done = {
        "name": OPERATION,
        "done": True,
        "response": {
            "generateVideoResponse": {
                "generatedSamples": [{"video": {"uri": f"{CDN}/files/a:download?alt=media"}}]
            }
        },
    }
    video = httpx.Response(200, content=MP4, headers={"content-type": "video/mp4"})
    rec = Recorder(httpx.Response(200, json=done), video)
    async with gemini(rec).download(OPERATION, "0") as stream:
        data = b"".join([chunk async for chunk in stream.chunks])
    assert data == MP4
    assert rec.requests[0].headers["x-goog-api-key"] == KEY
    assert "x-goog-api-key" not in rec.requests[1].headers
    with pytest.raises(DownloadNotAvailable):
        async with gemini(Recorder(httpx.Response(200, json=done))).download(OPERATION, "3"):
            pytest.fail("there is no fourth sample")


async def test_a_veo_operation_has_no_cancel() -> None:
    rec = Recorder(httpx.Response(500))
    assert await gemini(rec).cancel_job(OPERATION) is False
    assert rec.requests == []


# --- gemini: the Interactions API ------------------------------------------------------------


def interaction(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "int1", "status": status, "model": "gemini-omni-1.1-flash", **extra}


def with_video(video: dict[str, Any]) -> dict[str, Any]:
    steps = [{"type": "model_output", "content": [{"type": "video", **video}]}]
    return interaction("completed", steps=steps)


async def test_omni_creates_a_background_interaction_and_reads_the_inline_video() -> None:
    inline = with_video({"data": base64.b64encode(MP4).decode(), "mime_type": "video/mp4"})
    rec = Recorder(
        httpx.Response(200, json=interaction("in_progress")),
        httpx.Response(200, json=inline),
    )
    client = gemini(rec, model="gemini-omni-1.1-flash")
    created = await client.create_job(VideoSpec(prompt="a fox"), idempotency_key="k")
    sent = rec.requests[0]
    assert sent.url.path == "/v1beta/interactions"
    assert body(sent) == {
        "model": "gemini-omni-1.1-flash",
        "input": "a fox",
        "response_modalities": ["video"],
        "background": True,
    }
    assert (created.job_id, created.status) == ("interactions/int1", "running")
    done = await client.get_job(created.job_id)
    assert rec.requests[1].url.path == "/v1beta/interactions/int1"
    assert (done.status, done.generation_ids) == ("succeeded", ["0"])
    async with client.download(done.job_id, "0") as stream:
        assert stream.content_type == "video/mp4" and stream.content_length == len(MP4)
        assert b"".join([c async for c in stream.chunks]) == MP4


async def test_omni_video_by_uri_is_streamed_and_failures_are_normalised() -> None:
    by_uri = with_video({"uri": f"{BASE}/v1beta/files/x:download?alt=media"})
    video = httpx.Response(200, content=MP4, headers={"content-type": "video/mp4"})
    rec = Recorder(httpx.Response(200, json=by_uri), video)
    async with gemini(rec).download("interactions/int1", "0") as stream:
        assert b"".join([c async for c in stream.chunks]) == MP4
    assert rec.requests[1].headers["x-goog-api-key"] == KEY  # the API's own origin
    flagged = interaction("failed", errors=[{"code": "SAFETY", "message": "blocked"}])
    job = await gemini(Recorder(httpx.Response(200, json=flagged))).get_job("interactions/int1")
    assert (job.status, job.failure_code) == ("failed", "content_policy_violation")
    empty = await gemini(Recorder(httpx.Response(200, json=interaction("completed")))).get_job(
        "interactions/int1"
    )
    assert (empty.status, empty.failure_code) == ("failed", "no_video")


async def test_omni_cancel_is_true_when_the_interaction_ends_cancelled() -> None:
    rec = Recorder(httpx.Response(200, json=interaction("cancelled")))
    assert await gemini(rec).cancel_job("interactions/int1") is True
    assert rec.requests[0].method == "POST"
    assert rec.requests[0].url.path == "/v1beta/interactions/int1/cancel"
    ended = Recorder(httpx.Response(200, json=interaction("completed")))
    assert await gemini(ended).cancel_job("interactions/int1") is False


async def test_ids_that_would_change_the_route_are_refused() -> None:
    rec = Recorder(httpx.Response(500))
    for job_id in ("interactions/../x", "models/a/operations/b?x", "models/../operations/x"):
        with pytest.raises(Exception):  # noqa: B017 - InvalidRequest, before any call
            await gemini(rec).get_job(job_id)
    assert rec.requests == []


# --- runway ----------------------------------------------------------------------------------


def task(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "t-1", "status": status, "createdAt": "2026-12-01T10:00:00.000Z", **extra}


async def test_runway_create_picks_the_route_and_sends_the_version() -> None:
    rec = Recorder(httpx.Response(200, json={"id": "t-1"}))
    client = runway(rec)
    job = await client.create_job(
        VideoSpec(prompt="a fox", width=1280, height=720, seconds=5), idempotency_key="k"
    )
    sent = rec.requests[0]
    assert sent.url.path == "/v1/text_to_video"
    assert sent.headers["x-runway-version"] == "2024-11-06"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert body(sent) == {
        "model": "gen4.5",
        "promptText": "a fox",
        "ratio": "1280:720",
        "duration": 5,
    }
    assert (job.job_id, job.status) == ("t-1", "queued")
    image = InputImage(data=b"\xff\xd8 fake", content_type="image/jpeg")
    await client.create_job(VideoSpec(prompt="a fox", image=image), idempotency_key="k")
    sent = rec.requests[1]
    assert sent.url.path == "/v1/image_to_video"
    assert body(sent)["promptImage"] == "data:image/jpeg;base64," + base64.b64encode(
        image.data
    ).decode("ascii")


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (task("PENDING"), "queued", None),
        (task("THROTTLED"), "queued", None),
        (task("RUNNING", progress=0.42), "running", None),
        (task("SUCCEEDED", output=[f"{CDN}/v.mp4"]), "succeeded", None),
        (task("SUCCEEDED", output=[]), "failed", "no_output"),
        (task("FAILED", failure="flagged", failureCode="SAFETY.INPUT.TEXT"), "failed",
         "content_policy_violation"),
        (task("FAILED", failure="oops", failureCode="INTERNAL"), "failed", "INTERNAL"),
        (task("CANCELLED"), "cancelled", "cancelled"),
    ],
)  # fmt: skip
async def test_runway_tasks_are_normalised(
    answer: dict[str, Any], status: str, code: str | None
) -> None:
    job = await runway(Recorder(httpx.Response(200, json=answer))).get_job("t-1")
    assert (job.status, job.failure_code) == (status, code)
    if answer["status"] == "RUNNING":
        assert job.progress == 42
    if status == "succeeded":
        created = datetime(2026, 12, 1, 10, tzinfo=UTC)
        assert job.expires_at == created + timedelta(hours=24)


async def test_runway_errors_map_onto_the_hierarchy() -> None:
    moderated = httpx.Response(400, json={"error": "flagged", "code": "SAFETY.INPUT.TEXT"})
    with pytest.raises(ContentPolicyViolation):
        await runway(Recorder(moderated)).create_job(VideoSpec(prompt="x"), idempotency_key="k")
    rec = Recorder(httpx.Response(502, json={"error": "bad gateway"}))
    with pytest.raises(CreateOutcomeUnknown):
        await runway(rec).create_job(VideoSpec(prompt="x"), idempotency_key="k")
    assert len(rec.requests) == 1
    denied = httpx.Response(401, json={"error": "Incorrect or missing API key."})
    with pytest.raises(AuthenticationFailed) as info:
        await runway(Recorder(denied)).get_job("t-1")
    assert KEY not in str(info.value)


async def test_runway_cancel_deletes_only_a_task_in_flight() -> None:
    rec = Recorder(httpx.Response(200, json=task("RUNNING")), httpx.Response(204))
    assert await runway(rec).cancel_job("t-1") is True
    assert [r.method for r in rec.requests] == ["GET", "DELETE"]
    ended = Recorder(httpx.Response(200, json=task("SUCCEEDED", output=[f"{CDN}/v.mp4"])))
    assert await runway(ended).cancel_job("t-1") is False
    assert [r.method for r in ended.requests] == ["GET"]  # a DELETE would delete its outputs


async def test_runway_downloads_the_output_without_the_key() -> None:
    video = httpx.Response(200, content=MP4, headers={"content-type": "video/mp4"})
    rec = Recorder(
        httpx.Response(200, json=task("SUCCEEDED", output=[f"{CDN}/v.mp4?_jwt=x"])), video
    )
    async with runway(rec).download("t-1", "0") as stream:
        assert b"".join([c async for c in stream.chunks]) == MP4
    assert "authorization" not in rec.requests[1].headers


# --- settings --------------------------------------------------------------------------------


def test_both_read_their_settings_and_the_sdks_key_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "gemini" not in configured_providers() and "runway" not in configured_providers()
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("RUNWAYML_API_SECRET", KEY)
    monkeypatch.setenv("VIDPIPE_GEMINI_MODEL", "gemini-omni-1.1-flash")
    assert {"gemini", "runway"} <= set(configured_providers())
    assert GeminiConfig().model == "gemini-omni-1.1-flash"
    client = build_provider("runway", RunwayConfig(api_key=KEY, base_url=RUNWAY))
    assert KEY not in repr(client) and client.endpoint_host == "api.runway.example"
    assert GeminiConfig.env_name("api_key") == "VIDPIPE_GEMINI_API_KEY"
    assert RunwayConfig.env_name("api_key") == "VIDPIPE_RUNWAY_API_KEY"
