"""gemini: the Gemini API (`generativelanguage.googleapis.com/v1beta`): Veo and Gemini Omni.

Protocol (Google's Gemini API video docs, checked against the `google-genai` 2.34 SDK source;
from 3.0 the SDK's `generate_videos` is Vertex-only, and its Gemini API video path is the
Interactions API):

- Veo, a long-running operation: `POST models/{model}:predictLongRunning` with
  `{instances: [{prompt, image?: {bytesBase64Encoded, mimeType}}], parameters: {aspectRatio,
  durationSeconds, sampleCount, resolution}}` answers `{name}`; `GET {name}` until `done`; the
  videos at `response.generateVideoResponse.generatedSamples[].video.uri`, downloaded with the
  key; a moderated one is done with `raiMediaFilteredCount`/`raiMediaFilteredReasons` instead.
- Gemini Omni (a `gemini-*` model), the Interactions API: `POST interactions` with `{model,
  input, response_modalities: ["video"], background: true}`; `GET interactions/{id}` until
  `completed` (or `failed`, `cancelled`, ...); the MP4 in the last `model_output` step's content,
  inline as base64 (`data`) or as a `uri`; cancel `POST interactions/{id}/cancel`.

The key travels in the `x-goog-api-key` header, never as `key=` in a URL that could be logged.
Neither API takes an Idempotency-Key or lists jobs, so (as for fal) a create whose answer was lost
cannot be reconciled: `list_jobs` refuses and the request fails rather than paying twice. The job
id is the operation's name (`models/{model}/operations/{id}`) or `interactions/{id}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar

import httpx
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from schemas.events import JobState
from vidpipe.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ContentPolicyViolation,
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    TerminalProviderError,
)
from vidpipe.net.retry import RetryPolicy, parse_retry_after
from vidpipe.providers.base import (
    ProviderConfig,
    ProviderJob,
    VideoDownload,
    VideoSpec,
    create_outcome,
)
from vidpipe.providers.download import stream_video
from vidpipe.providers.error_mapping import describe, parse_error_body, redact, truncate
from vidpipe.providers.http import (
    build_async_client,
    check_base_url,
    endpoint_host,
    path_segment,
    request,
)

__all__ = ["GeminiClient", "GeminiConfig"]

_INTERACTION_STATUS: dict[str, JobState] = {
    "queued": "queued",
    "in_progress": "running",
    "completed": "succeeded",  # when it holds a video
    "failed": "failed",
    "cancelled": "cancelled",
    "incomplete": "failed",
    "budget_exceeded": "failed",
    "requires_action": "failed",  # a video model asks for nothing; nobody would answer
    "requires_continuation": "failed",
}
# google.rpc.Code, for a failed operation's `error.code`.
_RPC_CODES = {
    1: "cancelled",
    3: "invalid_argument",
    4: "deadline_exceeded",
    7: "permission_denied",
    8: "resource_exhausted",
    9: "failed_precondition",
    13: "internal_error",
    14: "unavailable",
}
_OPERATION = re.compile(r"^models/([^/]+)/operations/([^/]+)$")
_INTERACTIONS = "interactions/"
# A refused prompt is a 400 naming the usage guidelines, or an ErrorInfo reason of these.
_POLICY_REASONS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKED_REASON_SAFETY"})
_POLICY_TEXT = "usage guidelines"


def _aspect_ratio(width: int, height: int) -> str:
    """Veo takes 16:9 or 9:16."""
    return "9:16" if height > width else "16:9"


def uses_interactions(model: str) -> bool:
    """Gemini Omni (a `gemini-*` model) speaks the Interactions API; Veo, predictLongRunning."""
    return model.removeprefix("models/").startswith("gemini-")


def _details(content: bytes) -> list[dict[str, Any]]:
    try:
        payload = json.loads(content)
    except ValueError:
        return []
    error = payload.get("error") if isinstance(payload, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """google.rpc.RetryInfo's `retryDelay` ("12s", "1.5s"): Google's Retry-After."""
    for detail in details:
        delay = detail.get("retryDelay")
        if str(detail.get("@type", "")).endswith("RetryInfo") and isinstance(delay, str):
            try:
                return max(0.0, float(delay.removesuffix("s")))
            except ValueError:
                return None
    return None


def _iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class GeminiClient:
    """Client for `{base_url}/v1beta` (https://generativelanguage.googleapis.com)."""

    name = "gemini"

    def __init__(
        self,
        *,
        api_key: SecretStr | str,
        base_url: str = "https://generativelanguage.googleapis.com",
        model: str = "veo-3.0-generate-001",
        allow_private_redirects: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ConfigurationError("gemini: the API key is empty (VIDPIPE_GEMINI_API_KEY)")
        base = check_base_url(base_url, setting="VIDPIPE_GEMINI_BASE_URL")
        self.endpoint_host = endpoint_host(base)
        self.model = model
        self._base = base
        self._secrets = (key,)
        self._allow_private_redirects = allow_private_redirects
        self._retry = retry or RetryPolicy()
        self._client = build_async_client(
            f"{base}/v1beta/",
            headers={"x-goog-api-key": key},
            transport=transport,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"GeminiClient(host={self.endpoint_host!r}, model={self.model!r})"

    # -- calls -----------------------------------------------------------------------------

    def _google_error(
        self, action: str, response: httpx.Response, content: bytes
    ) -> ProviderError | None:
        """What Google's error body says beyond the status: a wrong key (a 400 there), a
        refused prompt, a 429's RetryInfo, and a create's 5xx (the job may exist)."""
        status = response.status_code
        body = parse_error_body(content)
        details = _details(content)
        reasons = {str(d.get("reason", "")) for d in details}
        message = describe(self.name, action, status, body, self._secrets)
        if "API_KEY_INVALID" in reasons:
            return AuthenticationFailed(
                message, status_code=status, provider_code="API_KEY_INVALID"
            )
        if status == 400 and (
            reasons & _POLICY_REASONS or _POLICY_TEXT in (body.message or "").lower()
        ):
            return ContentPolicyViolation(message, status_code=status)
        if status == 429 and parse_retry_after(response.headers) is None:
            return RateLimited(message, status_code=status, retry_after=_retry_delay(details))
        if status >= 500 and action == "create_job":
            # Without an Idempotency-Key a 5xx create may still have started the job.
            return CreateOutcomeUnknown(f"{message}; the job may exist", status_code=status)
        return None

    async def _call(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        def mapped(response: httpx.Response, content: bytes) -> ProviderError | None:
            return self._google_error(action, response, content)

        async def attempt() -> httpx.Response:
            try:
                return await request(
                    self._client,
                    method,
                    path,
                    provider=self.name,
                    action=action,
                    secrets=self._secrets,
                    map_error=mapped,
                    **kwargs,
                )
            except CreateOutcomeUnknown:
                raise
            except ProviderUnavailable as exc:
                if action != "create_job":
                    raise
                raise create_outcome(exc) from exc.__cause__

        return await self._retry.call(attempt)

    def _path(self, job_id: str) -> str:
        """The job's route: `interactions/{id}`, or the operation's name, each id checked."""
        if job_id.startswith(_INTERACTIONS):
            return _INTERACTIONS + path_segment(self.name, job_id.removeprefix(_INTERACTIONS))
        match = _OPERATION.match(job_id)
        if match is None:
            # A job created elsewhere, named by its bare operation id: the configured model's.
            model = self.model.removeprefix("models/")
            return f"models/{path_segment(self.name, model)}/operations/" + path_segment(
                self.name, job_id
            )
        model, operation = match.groups()
        return f"models/{path_segment(self.name, model)}/operations/" + path_segment(
            self.name, operation
        )

    # -- the provider interface ------------------------------------------------------------

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        # `idempotency_key` is not sent: the Gemini API documents none (see the module doc).
        model = (spec.model or self.model).removeprefix("models/")
        path_segment(self.name, model)
        if uses_interactions(model):
            return await self._create_interaction(spec, model)
        instance: dict[str, Any] = {"prompt": spec.prompt}
        if spec.image is not None:
            instance["image"] = {
                "bytesBase64Encoded": base64.b64encode(spec.image.data).decode("ascii"),
                "mimeType": spec.image.content_type,
            }
        parameters: dict[str, Any] = {
            "aspectRatio": _aspect_ratio(spec.width, spec.height),
            "durationSeconds": spec.seconds,
            "sampleCount": spec.variants,
            "resolution": "1080p" if min(spec.width, spec.height) >= 1080 else "720p",
        }
        response = await self._call(
            "POST",
            f"models/{model}:predictLongRunning",
            "create_job",
            json={"instances": [instance], "parameters": parameters},
        )
        data = _body(response)
        name = data.get("name") if data is not None else None
        if not isinstance(name, str) or _OPERATION.match(name) is None:
            raise TerminalProviderError(
                f"{self.name} create_job: HTTP {response.status_code} without an operation name",
                status_code=response.status_code,
            )
        self._path(name)
        return ProviderJob(
            job_id=name,
            status="running",
            raw_status="in_progress",
            model=model,
            prompt=spec.prompt,
            width=spec.width,
            height=spec.height,
            seconds=spec.seconds,
        )

    async def _create_interaction(self, spec: VideoSpec, model: str) -> ProviderJob:
        # Omni takes no duration or size: the request's are for the prompt to say.
        content: list[dict[str, Any]] = [{"type": "text", "text": spec.prompt}]
        if spec.image is not None:
            content.append(
                {
                    "type": "image",
                    "data": base64.b64encode(spec.image.data).decode("ascii"),
                    "mime_type": spec.image.content_type,
                }
            )
        body = {
            "model": model,
            "input": content if spec.image is not None else spec.prompt,
            "response_modalities": ["video"],
            "background": True,
        }
        response = await self._call("POST", "interactions", "create_job", json=body)
        data = _body(response)
        interaction_id = data.get("id") if data is not None else None
        if data is None or not isinstance(interaction_id, str) or not interaction_id:
            raise TerminalProviderError(
                f"{self.name} create_job: HTTP {response.status_code} without an interaction",
                status_code=response.status_code,
            )
        path_segment(self.name, interaction_id)
        job = self._parse_interaction(data)
        return ProviderJob(
            job_id=job.job_id,
            status=job.status if not job.terminal else "queued",
            raw_status=job.raw_status,
            model=model,
            prompt=spec.prompt,
            created_at=job.created_at,
        )

    async def get_job(self, job_id: str) -> ProviderJob:
        response = await self._call("GET", self._path(job_id), "get_job")
        data = _body(response)
        if data is None:
            raise ProviderUnavailable(
                f"{self.name} get_job: HTTP {response.status_code} without a job object",
                status_code=response.status_code,
            )
        if job_id.startswith(_INTERACTIONS):
            return self._parse_interaction(data)
        return self._parse_operation(job_id, data)

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        raise TerminalProviderError(
            f"{self.name} list_jobs: the Gemini API lists no operations, so a create whose "
            "answer was lost cannot be reconciled (and is not re-sent)"
        )

    async def cancel_job(self, job_id: str) -> bool:
        """Cancel an interaction (True when it ends cancelled); Veo operations have no cancel
        in the Gemini API, so they run on (False)."""
        if not job_id.startswith(_INTERACTIONS):
            return False
        try:
            response = await self._call("POST", f"{self._path(job_id)}/cancel", "cancel_job")
        except TerminalProviderError:
            return False
        data = _body(response)
        return data is not None and data.get("status") == "cancelled"

    @asynccontextmanager
    async def download(self, job_id: str, generation_id: str) -> AsyncIterator[VideoDownload]:
        # The job is read again: a video URI (or an inline video) is not kept in events.
        try:
            response = await self._call("GET", self._path(job_id), "download")
        except NotFound as exc:
            raise DownloadNotAvailable(exc.message, status_code=exc.status_code) from None
        data = _body(response) or {}
        if job_id.startswith(_INTERACTIONS):
            video = _interaction_video(data) or {}
            inline = video.get("data")
            if isinstance(inline, str) and inline:
                yield self._inline(inline, str(video.get("mime_type") or "video/mp4"))
                return
            uri = video.get("uri")
        else:
            samples = _samples(data)
            index = int(generation_id) if generation_id.isdigit() else -1
            uri = samples[index] if 0 <= index < len(samples) else None
        if not isinstance(uri, str) or not uri:
            raise DownloadNotAvailable(f"{self.name} download: the job holds no video")
        async with stream_video(
            self._client,
            uri,
            provider=self.name,
            action="download",
            secrets=self._secrets,
            allow_private=self._allow_private_redirects,
            follow_redirects=True,
            endpoint=self._base,
        ) as stream:
            yield stream

    def _inline(self, encoded: str, mime_type: str) -> VideoDownload:
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise DownloadNotAvailable(
                f"{self.name} download: the inline video is not base64"
            ) from None

        async def chunks() -> AsyncIterator[bytes]:
            step = 64 * 1024
            for offset in range(0, len(data), step):
                yield data[offset : offset + step]

        return VideoDownload(
            status_code=200, content_type=mime_type, content_length=len(data), chunks=chunks()
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- reading answers -------------------------------------------------------------------

    def _failed(self, job_id: str, raw: str, code: str, message: str) -> ProviderJob:
        return ProviderJob(
            job_id=job_id,
            status="failed",
            raw_status=raw,
            failure_code=truncate(redact(code, self._secrets), 80),
            failure_message=truncate(redact(message, self._secrets)),
        )

    def _parse_operation(self, job_id: str, data: dict[str, Any]) -> ProviderJob:
        match = _OPERATION.match(str(data.get("name") or job_id))
        model = match.group(1) if match else None
        if data.get("done") is not True:
            return ProviderJob(
                job_id=job_id, status="running", raw_status="in_progress", model=model
            )
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            name = _RPC_CODES.get(code, f"rpc_{code}") if isinstance(code, int) else "unknown"
            return self._failed(job_id, "done", name, str(error.get("message") or name))
        samples = _samples(data)
        if samples:
            return ProviderJob(
                job_id=job_id,
                status="succeeded",
                raw_status="done",
                progress=100,
                generation_ids=[str(i) for i in range(len(samples))],
                model=model,
            )
        result = _video_response(data)
        reasons = result.get("raiMediaFilteredReasons")
        if result.get("raiMediaFilteredCount") or reasons:
            text = "; ".join(map(str, reasons)) if isinstance(reasons, list) else "filtered"
            return self._failed(job_id, "done", "content_policy_violation", text)
        return self._failed(job_id, "done", "no_video", "the operation is done without a video")

    def _parse_interaction(self, data: dict[str, Any]) -> ProviderJob:
        job_id = _INTERACTIONS + str(data.get("id"))
        raw = str(data.get("status") or "")
        # An unknown status is treated as in flight; polling ends at the job's own deadline.
        status: JobState = _INTERACTION_STATUS.get(raw.lower(), "running")
        created = _iso(data.get("created"))
        model = data.get("model") if isinstance(data.get("model"), str) else None
        if status == "succeeded":
            if _interaction_video(data) is None:
                return self._failed(job_id, raw, "no_video", "the interaction holds no video")
            return ProviderJob(
                job_id=job_id,
                status="succeeded",
                raw_status=raw,
                progress=100,
                generation_ids=["0"],
                model=model,
                created_at=created,
            )
        if status == "failed":
            code, message = _interaction_error(data)
            policy = "SAFETY" in code.upper() or "PROHIBITED" in code.upper()
            return self._failed(
                job_id, raw, "content_policy_violation" if policy else code, message
            )
        if status == "cancelled":
            return ProviderJob(
                job_id=job_id,
                status="cancelled",
                raw_status=raw,
                failure_code="cancelled",
                failure_message="the interaction was cancelled",
            )
        return ProviderJob(
            job_id=job_id, status=status, raw_status=raw, model=model, created_at=created
        )


def _body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _video_response(data: dict[str, Any]) -> dict[str, Any]:
    response = data.get("response")
    result = response.get("generateVideoResponse") if isinstance(response, dict) else None
    return result if isinstance(result, dict) else {}


def _samples(data: dict[str, Any]) -> list[str]:
    """The URIs of a done operation's generated samples."""
    samples = _video_response(data).get("generatedSamples")
    uris: list[str] = []
    for sample in samples if isinstance(samples, list) else []:
        video = sample.get("video") if isinstance(sample, dict) else None
        uri = video.get("uri") if isinstance(video, dict) else None
        if isinstance(uri, str) and uri:
            uris.append(uri)
    return uris


def _interaction_video(data: dict[str, Any]) -> dict[str, Any] | None:
    """The last video content of the interaction's model output (as the SDK's output_video)."""
    steps = data.get("steps")
    for step in reversed(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict) or step.get("type") != "model_output":
            continue
        content = step.get("content")
        for item in reversed(content if isinstance(content, list) else []):
            if (
                isinstance(item, dict)
                and item.get("type") == "video"
                and (item.get("data") or item.get("uri"))
            ):
                return item
    return None


def _interaction_error(data: dict[str, Any]) -> tuple[str, str]:
    errors = data.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    if isinstance(first, dict):
        return str(first.get("code") or "interaction_failed"), str(first.get("message") or "")
    steps = data.get("steps")
    for step in reversed(steps if isinstance(steps, list) else []):
        error = step.get("error") if isinstance(step, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            name = _RPC_CODES.get(code, "interaction_failed") if isinstance(code, int) else None
            return name or "interaction_failed", str(error.get("message") or "")
    status = str(data.get("status") or "failed")
    return status, f"the interaction ended {status}"


class GeminiConfig(ProviderConfig):
    """gemini's settings: ``VIDPIPE_GEMINI_*`` (the key also as ``GEMINI_API_KEY`` or
    ``GOOGLE_API_KEY``, as google-genai reads it)."""

    model_config = SettingsConfigDict(env_prefix="VIDPIPE_GEMINI_")

    name: ClassVar[str] = GeminiClient.name
    required: ClassVar[tuple[str, ...]] = ("api_key",)

    base_url: str = "https://generativelanguage.googleapis.com"
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VIDPIPE_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"),
    )
    #: A Veo model (predictLongRunning) or a `gemini-*` Omni model (the Interactions API).
    model: str = "veo-3.0-generate-001"
    max_concurrent_jobs: int = Field(default=2, ge=1)

    def build(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> GeminiClient:
        if self.missing() or self.api_key is None:
            raise self.not_configured()
        return GeminiClient(
            base_url=self.base_url,
            api_key=self.api_key,
            model=self.model,
            allow_private_redirects=self.allow_private_urls,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
