"""Wire-contract tests for the provider clients, against httpx.MockTransport (no patching)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from vidpipe.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ContentPolicyViolation,
    DownloadNotAvailable,
    InvalidRequest,
    InvalidVideo,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    TerminalProviderError,
)
from vidpipe.providers import (
    PROVIDER_NAMES,
    AzureSoraClient,
    AzureSoraConfig,
    InputImage,
    OpenAIVideosClient,
    OpenAIVideosConfig,
    ProviderClient,
    RetryPolicy,
    VideoSpec,
    build_provider,
    configured_providers,
    max_concurrent_jobs,
    open_providers,
    provider_config,
)
from vidpipe.providers.error_mapping import parse_error_body
from vidpipe.providers.http import endpoint_host

KEY = "sk-TEST-very-secret-key-0123456789"
AZURE_ENDPOINT = "https://res.openai.azure.com"
OPENAI_BASE = "https://gateway.example:8443/openai/v1"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64

Handler = Callable[[httpx.Request], httpx.Response]


# --- helpers ---------------------------------------------------------------------------------


class Recorder:
    """A MockTransport handler that answers from a list (last answer repeats) and keeps requests."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    @property
    def calls(self) -> int:
        return len(self.requests)


class Sleeps:
    """Injected into RetryPolicy: records the waits instead of taking them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def policy(sleeps: Sleeps | None = None, **kwargs: Any) -> RetryPolicy:
    return RetryPolicy(sleep=sleeps or Sleeps(), **kwargs)


def azure(rec: Recorder, retry: RetryPolicy | None = None, **kwargs: Any) -> AzureSoraClient:
    return AzureSoraClient(
        endpoint=AZURE_ENDPOINT,
        api_key=KEY,
        deployment="sora-dep",
        transport=rec.transport,
        retry=retry or policy(),
        **kwargs,
    )


def openai(rec: Recorder, retry: RetryPolicy | None = None, **kwargs: Any) -> OpenAIVideosClient:
    return OpenAIVideosClient(
        base_url=OPENAI_BASE,
        api_key=KEY,
        model="sora-2",
        transport=rec.transport,
        retry=retry or policy(),
        **kwargs,
    )


def azure_job(status: str = "queued", **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "object": "video.generation.job",
        "id": "task_1",
        "status": status,
        "created_at": 1_790_000_000,
        "finished_at": None,
        "expires_at": None,
        "model": "sora-dep",
        "generations": [],
        "failure_reason": None,
    }
    job.update(extra)
    return job


def openai_video(status: str = "queued", **extra: Any) -> dict[str, Any]:
    video: dict[str, Any] = {
        "id": "video_1",
        "object": "video",
        "model": "sora-2",
        "status": status,
        "progress": 0,
        "created_at": 1_790_000_000,
        "seconds": "8",
        "size": "1280x720",
        "error": None,
    }
    video.update(extra)
    return video


def multipart(request: httpx.Request) -> dict[str, tuple[str | None, str | None, bytes]]:
    """name → (filename, content type, bytes), parsed with the stdlib, independent of httpx."""
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.content
    )
    parts: dict[str, tuple[str | None, str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        ctype_header = part.get("content-type")
        parts[name] = (part.get_filename(), str(ctype_header) if ctype_header else None, payload)
    return parts


def fields(request: httpx.Request) -> dict[str, str]:
    return {k: v[2].decode() for k, v in multipart(request).items() if v[0] is None}


async def chunked(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.fixture(autouse=True)
def _no_provider_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Every provider setting comes from the environment: start each test without any, including
    # the standard AZURE_OPENAI_* / OPENAI_* names the configs also read.
    for name in list(os.environ):
        if name.startswith(("VIDPIPE_AZURE_", "VIDPIPE_OPENAI_", "AZURE_OPENAI_", "OPENAI_")):
            monkeypatch.delenv(name)
    yield


# --- azure-sora request shapes ---------------------------------------------------------------


async def test_azure_create_sends_json_with_deployment_and_headers() -> None:
    rec = Recorder(httpx.Response(200, json=azure_job("preprocessing")))
    client = azure(rec)
    job = await client.create_job(
        VideoSpec(prompt="a cat", width=854, height=480, seconds=10, variants=2),
        idempotency_key="idem-1",
    )
    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url.host == "res.openai.azure.com"
    assert req.url.path == "/openai/v1/video/generations/jobs"
    assert dict(req.url.params) == {"api-version": "preview"}
    assert req.headers["api-key"] == KEY
    assert "authorization" not in req.headers
    assert req.headers["idempotency-key"] == "idem-1"
    assert req.headers["user-agent"] == "vidpipe/0.1"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == {
        "model": "sora-dep",
        "prompt": "a cat",
        "width": 854,
        "height": 480,
        "n_seconds": 10,
        "n_variants": 2,
    }
    assert (job.job_id, job.status, job.raw_status) == ("task_1", "queued", "preprocessing")
    assert not job.terminal
    await client.aclose()


async def test_azure_spec_model_overrides_deployment_and_api_version_is_configurable() -> None:
    rec = Recorder(httpx.Response(200, json=azure_job()))
    client = azure(rec, api_version="2025-05-01-preview")
    await client.create_job(VideoSpec(prompt="p", model="other-dep"), idempotency_key="k")
    assert json.loads(rec.requests[0].content)["model"] == "other-dep"
    assert rec.requests[0].url.params["api-version"] == "2025-05-01-preview"


async def test_azure_endpoint_with_openai_v1_suffix_is_not_doubled() -> None:
    rec = Recorder(httpx.Response(200, json=azure_job()))
    client = AzureSoraClient(
        endpoint="https://res.openai.azure.com/openai/v1/",
        api_key=KEY,
        deployment="d",
        transport=rec.transport,
    )
    await client.get_job("task_1")
    assert rec.requests[0].url.path == "/openai/v1/video/generations/jobs/task_1"


async def test_azure_create_with_image_is_multipart_with_inpaint_items() -> None:
    rec = Recorder(httpx.Response(200, json=azure_job()))
    client = azure(rec)
    image = InputImage(data=b"\x89PNG-bytes", content_type="image/png", filename="first.png")
    await client.create_job(
        VideoSpec(prompt="a dog", width=1280, height=720, seconds=5, image=image),
        idempotency_key="idem-2",
    )
    (req,) = rec.requests
    assert req.url.path == "/openai/v1/video/generations/jobs"
    assert req.url.params["api-version"] == "preview"
    assert req.headers["idempotency-key"] == "idem-2"
    parts = multipart(req)
    assert fields(req) == {
        "model": "sora-dep",
        "prompt": "a dog",
        "width": "1280",
        "height": "720",
        "n_seconds": "5",
        "n_variants": "1",
        "inpaint_items": '[{"frame_index": 0, "type": "image", "file_name": "first.png"}]',
    }
    assert json.loads(fields(req)["inpaint_items"]) == [
        {"frame_index": 0, "type": "image", "file_name": "first.png"}
    ]
    assert parts["files"] == ("first.png", "image/png", b"\x89PNG-bytes")


async def test_azure_get_job_path_and_headers() -> None:
    rec = Recorder(httpx.Response(200, json=azure_job("running")))
    job = await azure(rec).get_job("task_1")
    (req,) = rec.requests
    assert req.method == "GET"
    assert req.url.path == "/openai/v1/video/generations/jobs/task_1"
    assert req.url.params["api-version"] == "preview"
    assert req.headers["api-key"] == KEY
    assert "idempotency-key" not in req.headers
    assert job.status == "running"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("preprocessing", "queued"),
        ("queued", "queued"),
        ("running", "running"),
        ("processing", "running"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("some_new_state", "running"),  # unknown: keep polling, never crash
    ],
)
async def test_azure_status_normalisation(raw: str, expected: str) -> None:
    job = await azure(Recorder(httpx.Response(200, json=azure_job(raw)))).get_job("task_1")
    assert job.status == expected
    assert job.raw_status == raw


async def test_azure_succeeded_job_has_generations_and_aware_expiry() -> None:
    body = azure_job(
        "succeeded",
        finished_at=1_790_000_100,
        expires_at=1_790_086_400,
        generations=[{"object": "video.generation", "id": "gen_a"}, {"id": "gen_b"}],
    )
    job = await azure(Recorder(httpx.Response(200, json=body))).get_job("task_1")
    assert job.terminal
    assert job.generation_ids == ["gen_a", "gen_b"]
    assert job.expires_at == datetime.fromtimestamp(1_790_086_400, tz=UTC)
    assert job.expires_at is not None and job.expires_at.tzinfo is not None
    assert job.failure_code is None and job.failure_message is None
    assert job.model == "sora-dep"


async def test_azure_failure_reason_becomes_code_and_message() -> None:
    body = azure_job("failed", failure_reason="output_moderation")
    job = await azure(Recorder(httpx.Response(200, json=body))).get_job("task_1")
    assert job.status == "failed"
    assert job.failure_code == "output_moderation"
    assert job.failure_message is not None and "moderation" in job.failure_message


async def test_azure_wrong_deployment_is_a_clear_terminal_config_error() -> None:
    body = {
        "error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist.",
        }
    }
    rec = Recorder(httpx.Response(404, json=body))
    with pytest.raises(NotFound) as info:
        await azure(rec).create_job(VideoSpec(prompt="p"), idempotency_key="k")
    assert rec.calls == 1
    text = str(info.value)
    assert "'sora-dep'" in text and "VIDPIPE_AZURE_DEPLOYMENT" in text
    assert "res.openai.azure.com" in text
    assert KEY not in text and KEY not in repr(info.value)
    assert info.value.provider_code == "DeploymentNotFound"


async def test_azure_deployment_message_without_code_is_recognised() -> None:
    body = {"code": "404", "message": "deployment does not exist"}
    with pytest.raises(NotFound, match="VIDPIPE_AZURE_DEPLOYMENT"):
        await azure(Recorder(httpx.Response(404, json=body))).create_job(
            VideoSpec(prompt="p", model="typo-dep"), idempotency_key="k"
        )


@pytest.mark.parametrize(
    "body",
    [
        # Bare shape, as Azure's spec documents it.
        {
            "code": "content_policy_violation",
            "message": "Your request was rejected by the safety system.",
            "param": "prompt",
            "type": "invalid_request_error",
            "inner_error": {"code": "ResponsibleAIPolicyViolation"},
        },
        # Wrapped shape, with only the top-level code.
        {"error": {"code": "content_filter", "message": "filtered", "type": None, "param": None}},
        # Wrapped shape, with an inner_error code.
        {
            "error": {
                "code": "invalid",
                "message": "x",
                "inner_error": {"code": "ResponsibleAIPolicyViolation"},
            }
        },
    ],
)
async def test_azure_content_filter_in_either_shape(body: dict[str, Any]) -> None:
    rec = Recorder(httpx.Response(400, json=body))
    with pytest.raises(ContentPolicyViolation) as info:
        await azure(rec).create_job(VideoSpec(prompt="p"), idempotency_key="k")
    assert rec.calls == 1
    assert "HTTP 400" in str(info.value)
    assert info.value.status_code == 400


# --- openai-videos request shapes -----------------------------------------------------------


async def test_openai_create_is_multipart_with_seconds_as_string() -> None:
    rec = Recorder(
        httpx.Response(200, json=openai_video(), headers={"openai-poll-after-ms": "2500"})
    )
    client = openai(rec)
    job = await client.create_job(
        VideoSpec(prompt="a fox", width=1280, height=720, seconds=8), idempotency_key="idem-3"
    )
    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url.host == "gateway.example" and req.url.port == 8443
    assert req.url.path == "/openai/v1/videos"
    assert req.url.query == b""
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert "api-key" not in req.headers
    assert req.headers["idempotency-key"] == "idem-3"
    assert req.headers["user-agent"] == "vidpipe/0.1"
    assert fields(req) == {"prompt": "a fox", "model": "sora-2", "seconds": "8", "size": "1280x720"}
    assert "input_reference" not in multipart(req)
    assert (job.job_id, job.status, job.poll_after_s) == ("video_1", "queued", 2.5)
    assert client.endpoint_host == "gateway.example:8443"


async def test_openai_create_with_image_and_api_key_header() -> None:
    rec = Recorder(httpx.Response(200, json=openai_video()))
    client = openai(rec, auth_header="api-key")
    image = InputImage(data=b"\xff\xd8jpeg", content_type="image/jpeg", filename="ref.jpg")
    await client.create_job(
        VideoSpec(prompt="p", width=720, height=1280, seconds=4, model="sora-2-pro", image=image),
        idempotency_key="k",
    )
    (req,) = rec.requests
    assert req.headers["api-key"] == KEY
    assert "authorization" not in req.headers
    assert fields(req) == {"prompt": "p", "model": "sora-2-pro", "seconds": "4", "size": "720x1280"}
    assert multipart(req)["input_reference"] == ("ref.jpg", "image/jpeg", b"\xff\xd8jpeg")


@pytest.mark.parametrize(
    ("raw", "expected", "generations"),
    [
        ("queued", "queued", []),
        ("in_progress", "running", []),
        ("completed", "succeeded", ["video_1"]),
        ("failed", "failed", []),
    ],
)
async def test_openai_status_normalisation(raw: str, expected: str, generations: list[str]) -> None:
    rec = Recorder(httpx.Response(200, json=openai_video(raw, progress=42)))
    job = await openai(rec).get_job("video_1")
    assert rec.requests[0].method == "GET"
    assert rec.requests[0].url.path == "/openai/v1/videos/video_1"
    assert (job.status, job.raw_status, job.progress) == (expected, raw, 42)
    assert job.generation_ids == generations
    assert job.poll_after_s is None


async def test_openai_error_object_becomes_failure_fields() -> None:
    body = openai_video(
        "failed",
        expires_at=1_790_086_400,
        error={"code": "moderation_blocked", "message": "Blocked by moderation."},
    )
    job = await openai(Recorder(httpx.Response(200, json=body))).get_job("video_1")
    assert job.terminal
    assert job.failure_code == "moderation_blocked"
    assert job.failure_message == "Blocked by moderation."
    assert job.expires_at == datetime.fromtimestamp(1_790_086_400, tz=UTC)


async def test_ids_that_would_change_the_route_are_refused_without_a_call() -> None:
    rec = Recorder(httpx.Response(200, json=openai_video()))
    with pytest.raises(InvalidRequest):
        await openai(rec).get_job("../admin")
    with pytest.raises(InvalidRequest):
        await azure(rec).get_job("task?x=1")
    assert rec.calls == 0


# --- status codes -> errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, InvalidRequest),
        (409, InvalidRequest),
        (422, InvalidRequest),
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (404, NotFound),
        (429, RateLimited),
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("make", [azure, openai])
async def test_status_codes_map_to_the_hierarchy(
    status: int, error: type[ProviderError], make: Callable[..., ProviderClient]
) -> None:
    body = {"error": {"code": "some_code", "message": "some message", "type": "t"}}
    rec = Recorder(httpx.Response(status, json=body))
    client = make(rec, policy(attempts=1))
    with pytest.raises(error) as info:
        await client.get_job("job_1")
    exc = info.value
    assert type(exc) is error
    assert exc.status_code == status
    assert exc.provider_code == "some_code"
    assert f"HTTP {status}" in str(exc) and "some_code" in str(exc) and "some message" in str(exc)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
)
async def test_transport_failures_are_provider_unavailable(failure: Exception) -> None:
    rec = Recorder(failure)
    with pytest.raises(ProviderUnavailable):
        await openai(rec, policy(attempts=1)).get_job("video_1")


async def test_long_provider_messages_are_truncated() -> None:
    rec = Recorder(httpx.Response(400, json={"error": {"code": "bad", "message": "x" * 5000}}))
    with pytest.raises(InvalidRequest) as info:
        await openai(rec).get_job("video_1")
    assert len(str(info.value)) < 420


# --- error bodies ---------------------------------------------------------------------


def test_parse_error_body_accepts_both_shapes_and_text() -> None:
    wrapped = parse_error_body(
        b'{"error": {"code": "c", "message": "m", "param": "p", "type": "t"}}'
    )
    assert (wrapped.code, wrapped.message, wrapped.param, wrapped.type) == ("c", "m", "p", "t")
    bare = parse_error_body(
        b'{"code": "c2", "message": "m2", "param": null, "type": "t2",'
        b' "inner_error": {"code": "ResponsibleAIPolicyViolation"}}'
    )
    assert (bare.code, bare.message, bare.inner_code) == (
        "c2",
        "m2",
        "ResponsibleAIPolicyViolation",
    )
    text = parse_error_body(b"<html>Bad Gateway</html>")
    assert text.code is None and text.message == "<html>Bad Gateway</html>"


# --- retries ----------------------------------------------------------------------------------


def rate_limited(**headers: str) -> httpx.Response:
    body = {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}
    return httpx.Response(429, json=body, headers=headers)


async def test_retry_after_seconds_is_honoured_and_idempotency_key_reused() -> None:
    sleeps = Sleeps()
    rec = Recorder(rate_limited(**{"retry-after": "7"}), httpx.Response(200, json=azure_job()))
    job = await azure(rec, policy(sleeps)).create_job(VideoSpec(prompt="p"), idempotency_key="same")
    assert job.job_id == "task_1"
    assert sleeps.waits == [7.0]
    assert [r.headers["idempotency-key"] for r in rec.requests] == ["same", "same"]
    assert rec.requests[0].content == rec.requests[1].content


async def test_retry_after_ms_is_honoured_for_multipart_create() -> None:
    sleeps = Sleeps()
    rec = Recorder(
        rate_limited(**{"retry-after-ms": "250"}), httpx.Response(200, json=openai_video())
    )
    await openai(rec, policy(sleeps)).create_job(VideoSpec(prompt="p"), idempotency_key="same")
    assert sleeps.waits == [0.25]
    assert [r.headers["idempotency-key"] for r in rec.requests] == ["same", "same"]
    assert fields(rec.requests[0]) == fields(rec.requests[1])


async def test_retry_after_http_date_is_honoured() -> None:
    sleeps = Sleeps()
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    rec = Recorder(rate_limited(**{"retry-after": when}), httpx.Response(200, json=openai_video()))
    await openai(rec, policy(sleeps)).get_job("video_1")
    assert len(sleeps.waits) == 1
    assert 18.0 <= sleeps.waits[0] <= 20.0


async def test_retry_gives_up_after_n_attempts_with_rate_limited() -> None:
    sleeps = Sleeps()
    rec = Recorder(rate_limited(**{"retry-after": "1"}))
    with pytest.raises(RateLimited) as info:
        await azure(rec, policy(sleeps, attempts=3)).create_job(
            VideoSpec(prompt="p"), idempotency_key="k"
        )
    assert rec.calls == 3
    assert sleeps.waits == [1.0, 1.0]
    assert info.value.retry_after == 1.0


async def test_default_attempts_is_four() -> None:
    rec = Recorder(rate_limited(**{"retry-after": "0"}))
    with pytest.raises(RateLimited):
        await openai(rec, policy()).get_job("video_1")
    assert rec.calls == 4


async def test_total_wait_is_bounded() -> None:
    sleeps = Sleeps()
    rec = Recorder(rate_limited(**{"retry-after": "120"}))
    with pytest.raises(RateLimited) as info:
        await openai(rec, policy(sleeps, max_total_wait_s=30)).get_job("video_1")
    # Waiting 120 s would blow the budget: hand the hint to the caller instead of blocking.
    assert rec.calls == 1 and sleeps.waits == []
    assert info.value.retry_after == 120.0


async def test_backoff_without_a_hint_is_exponential_with_jitter_and_capped() -> None:
    sleeps = Sleeps()
    rec = Recorder(
        httpx.Response(503),
        httpx.Response(502),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=azure_job("running")),
    )
    retry = policy(sleeps, attempts=4, base_delay_s=1.0, max_delay_s=3.0, max_total_wait_s=100)
    job = await azure(rec, retry).get_job("task_1")
    assert job.status == "running" and rec.calls == 4
    first, second, third = sleeps.waits
    assert 1.0 <= first <= 2.0
    assert 2.0 <= second <= 3.0
    assert third <= 3.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_terminal_errors_are_not_retried(status: int) -> None:
    sleeps = Sleeps()
    rec = Recorder(httpx.Response(status, json={"code": "nope", "message": "no"}))
    with pytest.raises(TerminalProviderError):
        await openai(rec, policy(sleeps)).create_job(VideoSpec(prompt="p"), idempotency_key="k")
    assert rec.calls == 1 and sleeps.waits == []


async def test_garbled_create_answer_is_not_retried() -> None:
    rec = Recorder(httpx.Response(200, text="<html>proxy</html>"))
    with pytest.raises(TerminalProviderError):
        await azure(rec).create_job(VideoSpec(prompt="p"), idempotency_key="k")
    assert rec.calls == 1


# --- downloads --------------------------------------------------------------------------------


def video_response(*pieces: bytes) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "video/mp4", "content-length": str(sum(map(len, pieces)))},
        content=chunked(*pieces),
    )


async def test_azure_download_streams_chunks() -> None:
    rec = Recorder(video_response(MP4[:10], MP4[10:40], MP4[40:]))
    async with azure(rec).download("task_1", "gen_a") as video:
        assert (video.status_code, video.content_type) == (200, "video/mp4")
        assert video.content_length == len(MP4)
        pieces = [chunk async for chunk in video.chunks]
    assert len(pieces) == 3 and b"".join(pieces) == MP4
    (req,) = rec.requests
    assert req.method == "GET"
    assert req.url.path == "/openai/v1/video/generations/gen_a/content/video"
    assert dict(req.url.params) == {"api-version": "preview", "quality": "high"}
    assert req.headers["api-key"] == KEY


async def test_openai_download_streams_and_keeps_auth_on_same_origin() -> None:
    rec = Recorder(
        httpx.Response(302, headers={"location": "/openai/v1/files/abc"}),
        video_response(MP4),
    )
    async with openai(rec).download("video_1", "video_1") as video:
        data = b"".join([chunk async for chunk in video.chunks])
    assert data == MP4
    first, second = rec.requests
    assert first.url.path == "/openai/v1/videos/video_1/content"
    assert dict(first.url.params) == {"variant": "video"}
    assert second.url.path == "/openai/v1/files/abc"
    assert second.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("auth_header", ["authorization", "api-key"])
async def test_download_redirect_to_another_origin_drops_credentials(auth_header: str) -> None:
    # A public IP literal: a hop off the endpoint's origin passes the SSRF guard, which would
    # resolve a name (and pin the request to the address it found).
    signed = "https://93.184.215.14/v/abc.mp4?sig=xyz"
    rec = Recorder(httpx.Response(307, headers={"location": signed}), video_response(MP4))
    async with openai(rec, auth_header=auth_header).download("video_1", "video_1") as video:
        assert b"".join([c async for c in video.chunks]) == MP4
    storage = rec.requests[1]
    assert str(storage.url) == signed  # no extra query params appended to a signed URL
    assert "authorization" not in storage.headers and "api-key" not in storage.headers


@pytest.mark.parametrize("status", [404, 410])
@pytest.mark.parametrize("make", [azure, openai])
async def test_missing_download_is_download_not_available(
    status: int, make: Callable[..., ProviderClient]
) -> None:
    rec = Recorder(httpx.Response(status, json={"error": {"code": "not_found", "message": "gone"}}))
    with pytest.raises(DownloadNotAvailable) as info:
        async with make(rec).download("job_1", "gen_1"):
            pytest.fail("must not yield")
    assert info.value.status_code == status


@pytest.mark.parametrize("make", [azure, openai])
async def test_json_200_is_invalid_video(make: Callable[..., ProviderClient]) -> None:
    rec = Recorder(httpx.Response(200, json={"error": {"message": "not ready"}}))
    with pytest.raises(InvalidVideo):
        async with make(rec).download("job_1", "gen_1"):
            pytest.fail("a JSON body must never be handed back as a video")


@pytest.mark.parametrize("make", [azure, openai])
async def test_download_5xx_is_retryable_and_not_retried_inside(
    make: Callable[..., ProviderClient],
) -> None:
    rec = Recorder(httpx.Response(502, text="bad gateway"))
    with pytest.raises(ProviderUnavailable):
        async with make(rec).download("job_1", "gen_1"):
            pytest.fail("must not yield")
    assert rec.calls == 1
    assert all(r.method == "GET" for r in rec.requests)  # never a resubmit


async def test_download_drop_mid_stream_is_provider_unavailable() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield MP4[:10]
        raise httpx.ReadError("connection reset")

    rec = Recorder(httpx.Response(200, headers={"content-type": "video/mp4"}, content=broken()))
    with pytest.raises(ProviderUnavailable):
        async with azure(rec).download("task_1", "gen_a") as video:
            async for _ in video.chunks:
                pass


# --- secrets ----------------------------------------------------------------------------------


def _echoing_401(request: httpx.Request) -> httpx.Response:
    # Some providers quote the rejected key; a proxy might echo the auth header back.
    echoed = request.headers.get("authorization") or request.headers.get("api-key")
    return httpx.Response(
        401,
        json={"error": {"code": f"bad_key:{KEY}", "message": f"Incorrect API key: {echoed}"}},
    )


@pytest.mark.parametrize(
    "answer",
    [
        _echoing_401,
        rate_limited(**{"retry-after": "1"}),
        httpx.Response(500, text=f"internal error, header was api-key: {KEY}"),
        httpx.Response(404, json={"code": "DeploymentNotFound", "message": "does not exist"}),
        httpx.Response(400, json={"code": "content_filter", "message": KEY}),
        httpx.ConnectError(f"failed connecting with {KEY}"),
    ],
)
@pytest.mark.parametrize("make", [azure, openai])
async def test_secrets_never_appear_in_errors(
    answer: httpx.Response | Exception | Handler, make: Callable[..., ProviderClient]
) -> None:
    client = make(Recorder(answer), policy(attempts=2))
    caught: list[ProviderError] = []
    with pytest.raises(ProviderError) as info:
        await client.create_job(VideoSpec(prompt="p"), idempotency_key="k")
    caught.append(info.value)
    with pytest.raises(ProviderError) as info:
        await client.get_job("job_1")
    caught.append(info.value)
    with pytest.raises(ProviderError) as info:
        async with client.download("job_1", "gen_1"):
            pass
    caught.append(info.value)
    for exc in caught:
        for text in (str(exc), repr(exc), exc.message, exc.provider_code or ""):
            assert KEY not in text
    assert KEY not in repr(client)


# --- the registry -----------------------------------------------------------------------------


def test_build_provider_configured_clients() -> None:
    azure_config = AzureSoraConfig(endpoint="https://res.openai.azure.com/", api_key=KEY)
    openai_config = OpenAIVideosConfig(base_url="http://127.0.0.1:8089/openai/v1", api_key=KEY)
    az = build_provider("azure-sora", azure_config, transport=httpx.MockTransport(Recorder()))
    oa = build_provider("openai-videos", openai_config, timeout_s=5.0)
    assert isinstance(az, AzureSoraClient) and isinstance(az, ProviderClient)
    assert isinstance(oa, OpenAIVideosClient) and isinstance(oa, ProviderClient)
    assert (az.name, az.endpoint_host, az.deployment) == (
        "azure-sora",
        "res.openai.azure.com",
        "sora",
    )
    assert (oa.name, oa.endpoint_host, oa.model) == ("openai-videos", "127.0.0.1:8089", "sora-2")


def test_build_provider_refuses_unknown_or_unconfigured() -> None:
    with pytest.raises(ConfigurationError, match="unknown provider 'kling'"):
        build_provider("kling", AzureSoraConfig())
    with pytest.raises(
        ConfigurationError, match="VIDPIPE_AZURE_ENDPOINT and VIDPIPE_AZURE_API_KEY"
    ):
        build_provider("azure-sora")  # nothing in the environment
    with pytest.raises(ConfigurationError, match="VIDPIPE_OPENAI_API_KEY") as info:
        build_provider("openai-videos", OpenAIVideosConfig(base_url="https://api.x/v1"))
    assert "VIDPIPE_OPENAI_BASE_URL" not in str(info.value)
    with pytest.raises(ConfigurationError, match="VIDPIPE_OPENAI_BASE_URL"):
        build_provider("openai-videos", OpenAIVideosConfig(base_url="ftp://x", api_key=KEY))
    with pytest.raises(TypeError, match="OpenAIVideosConfig"):
        build_provider("openai-videos", AzureSoraConfig(endpoint="https://a.example", api_key=KEY))


def test_each_provider_reads_its_own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured_providers() == []
    monkeypatch.setenv("VIDPIPE_AZURE_ENDPOINT", "https://res.openai.azure.com")
    monkeypatch.setenv("VIDPIPE_AZURE_API_KEY", KEY)
    monkeypatch.setenv("VIDPIPE_AZURE_DEPLOYMENT", "sora-dep")
    monkeypatch.setenv("VIDPIPE_AZURE_MAX_CONCURRENT_JOBS", "5")
    # The standard OpenAI names work too; the key alone does not make a provider configured.
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert configured_providers() == ["azure-sora"]
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example/v1")
    monkeypatch.setenv("VIDPIPE_OPENAI_AUTH_HEADER", "api-key")
    assert configured_providers() == ["azure-sora", "openai-videos"]
    assert (max_concurrent_jobs("azure-sora"), max_concurrent_jobs("openai-videos")) == (5, 2)
    assert max_concurrent_jobs("kling") == 1
    azure_config = provider_config("azure-sora")
    assert isinstance(azure_config, AzureSoraConfig) and azure_config.deployment == "sora-dep"
    openai_config = provider_config("openai-videos")
    assert isinstance(openai_config, OpenAIVideosConfig)
    assert (openai_config.base_url, openai_config.auth_header) == (
        "https://gateway.example/v1",
        "api-key",
    )
    assert KEY not in repr(azure_config) and KEY not in repr(openai_config)


async def test_open_providers_builds_every_configured_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert open_providers() == {}
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    clients = open_providers(timeout_s=5.0)
    assert list(clients) == ["azure-sora"]
    client = clients["azure-sora"]
    assert isinstance(client, AzureSoraClient)
    assert client.endpoint_host == "res.openai.azure.com"
    await client.aclose()


def test_the_registry_names_every_provider_once() -> None:
    assert PROVIDER_NAMES == (
        "azure-sora",
        "openai-videos",
        "fal",
        "replicate",
        "gemini",
        "runway",
    )
    assert AzureSoraConfig().missing() == ["VIDPIPE_AZURE_ENDPOINT", "VIDPIPE_AZURE_API_KEY"]
    assert OpenAIVideosConfig().missing() == ["VIDPIPE_OPENAI_BASE_URL", "VIDPIPE_OPENAI_API_KEY"]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://res.openai.azure.com/openai/v1?x=1", "res.openai.azure.com"),
        ("http://127.0.0.1:8089/openai/v1", "127.0.0.1:8089"),
        ("https://user:pw@gw.example:443/v1", "gw.example:443"),
        ("http://[::1]:9000/v1", "[::1]:9000"),
    ],
)
def test_endpoint_host_is_host_and_port_only(url: str, host: str) -> None:
    assert endpoint_host(url) == host


@pytest.mark.parametrize("value", ["true", "false"])
def test_the_private_redirect_allowance_reaches_every_client_through_its_config(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # One variable, VIDPIPE_ALLOW_PRIVATE_URLS, read with each provider's settings, never by the
    # download code itself.
    monkeypatch.setenv("VIDPIPE_ALLOW_PRIVATE_URLS", value)
    az = AzureSoraConfig(endpoint="https://res.openai.azure.com", api_key=KEY).build()
    oa = OpenAIVideosConfig(base_url="https://gateway.example/v1", api_key=KEY).build()
    for client in (az, oa):
        assert client._allow_private_redirects is (value == "true")
