"""runway: Runway's tasks API (`api.dev.runwayml.com/v1`), text or image to video.

Protocol (Runway's API reference, checked against the `runwayml` 5.24 SDK source):
- create `POST v1/text_to_video` `{model, promptText, ratio, duration}`, or with an image
  `POST v1/image_to_video` `{model, promptImage, promptText, ratio, duration}`, both with
  `Authorization: Bearer <key>` and `X-Runway-Version: 2024-11-06`; the answer is `{id}`;
- status `GET v1/tasks/{id}`: `PENDING`, `THROTTLED` (accepted, waiting for one of the model's
  concurrency slots), `RUNNING` (with `progress` 0-1), `SUCCEEDED` (`output`: URLs that expire
  within 24-48 h; reading the task again gives fresh ones), `FAILED` (`failure`, `failureCode`),
  `CANCELLED`;
- cancel `DELETE v1/tasks/{id}`: cancels a task in flight, but *deletes* one that ended, so
  `cancel_job` reads the task first and leaves an ended one alone.

Runway documents no Idempotency-Key and no task list: as for fal, a create whose answer was lost
cannot be reconciled, so `list_jobs` refuses and the request fails rather than paying twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from schemas.events import JobState
from vidpipe.errors import (
    ConfigurationError,
    ContentPolicyViolation,
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    TerminalProviderError,
)
from vidpipe.net.retry import RetryPolicy
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

__all__ = ["OUTPUT_LIFETIME", "RUNWAY_VERSION", "RunwayClient", "RunwayConfig"]

#: The API version every call names (the SDK's default).
RUNWAY_VERSION = "2024-11-06"
#: Output URLs expire "within 24-48 hours": the earlier end, counted from the task's creation.
OUTPUT_LIFETIME = timedelta(hours=24)

_STATUS: dict[str, JobState] = {
    "PENDING": "queued",
    "THROTTLED": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
}


def _policy_code(code: str | None) -> bool:
    """Runway's moderation failure codes: `SAFETY.INPUT.*`, `SAFETY.OUTPUT.*`, and
    `INPUT_PREPROCESSING.SAFETY.*`."""
    return bool(code) and "SAFETY" in str(code).upper()


def _iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class RunwayClient:
    """Client for `{base_url}/v1` (https://api.dev.runwayml.com), `Authorization: Bearer`."""

    name = "runway"

    def __init__(
        self,
        *,
        api_key: SecretStr | str,
        base_url: str = "https://api.dev.runwayml.com",
        model: str = "gen4.5",
        api_version: str = RUNWAY_VERSION,
        allow_private_redirects: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ConfigurationError("runway: the API key is empty (VIDPIPE_RUNWAY_API_KEY)")
        base = check_base_url(base_url, setting="VIDPIPE_RUNWAY_BASE_URL")
        self.endpoint_host = endpoint_host(base)
        self.model = model
        self._base = base
        self._secrets = (key,)
        self._allow_private_redirects = allow_private_redirects
        self._retry = retry or RetryPolicy()
        self._client = build_async_client(
            f"{base}/",
            headers={"Authorization": f"Bearer {key}", "X-Runway-Version": api_version},
            transport=transport,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"RunwayClient(host={self.endpoint_host!r}, model={self.model!r})"

    def _refused(
        self, action: str, response: httpx.Response, content: bytes
    ) -> ProviderError | None:
        """A moderation refusal (a SAFETY code, or a message saying so), and a create's 5xx
        (without an Idempotency-Key the task may exist)."""
        status = response.status_code
        body = parse_error_body(content)
        message = describe(self.name, action, status, body, self._secrets)
        # Runway's body is `{"error": "text"}`, a refusal's with a `code` beside it.
        code = _error_code(content)
        text = (body.message or "").lower()
        if status == 400 and (_policy_code(code) or "content moderation" in text):
            return ContentPolicyViolation(message, status_code=status, provider_code=code)
        if status >= 500 and action == "create_job":
            return CreateOutcomeUnknown(f"{message}; the task may exist", status_code=status)
        return None

    async def _call(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        def refused(response: httpx.Response, content: bytes) -> ProviderError | None:
            return self._refused(action, response, content)

        async def attempt() -> httpx.Response:
            try:
                return await request(
                    self._client,
                    method,
                    path,
                    provider=self.name,
                    action=action,
                    secrets=self._secrets,
                    map_error=refused,
                    **kwargs,
                )
            except CreateOutcomeUnknown:
                raise
            except ProviderUnavailable as exc:
                if action != "create_job":
                    raise
                raise create_outcome(exc) from exc.__cause__

        return await self._retry.call(attempt)

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        # `idempotency_key` is not sent: Runway documents none (see the module doc).
        body: dict[str, Any] = {
            "model": spec.model or self.model,
            "promptText": spec.prompt,
            "ratio": f"{spec.width}:{spec.height}",
            "duration": spec.seconds,
        }
        route = "v1/text_to_video"
        if spec.image is not None:
            # Runway takes a data URI wherever it takes an image URL.
            encoded = base64.b64encode(spec.image.data).decode("ascii")
            body["promptImage"] = f"data:{spec.image.content_type};base64,{encoded}"
            route = "v1/image_to_video"
        response = await self._call("POST", route, "create_job", json=body)
        data = _body(response)
        task_id = data.get("id") if data is not None else None
        if not isinstance(task_id, str) or not task_id:
            raise TerminalProviderError(
                f"{self.name} create_job: HTTP {response.status_code} without a task id",
                status_code=response.status_code,
            )
        path_segment(self.name, task_id)
        return ProviderJob(
            job_id=task_id,
            status="queued",
            raw_status="PENDING",
            model=str(body["model"]),
            prompt=spec.prompt,
            width=spec.width,
            height=spec.height,
            seconds=spec.seconds,
        )

    async def _task(self, job_id: str, action: str) -> dict[str, Any]:
        response = await self._call("GET", f"v1/tasks/{path_segment(self.name, job_id)}", action)
        data = _body(response)
        if data is None or not data.get("id") or not isinstance(data.get("status"), str):
            raise ProviderUnavailable(
                f"{self.name} {action}: HTTP {response.status_code} without a task object",
                status_code=response.status_code,
            )
        return data

    async def get_job(self, job_id: str) -> ProviderJob:
        return self._parse(await self._task(job_id, "get_job"))

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        raise TerminalProviderError(
            f"{self.name} list_jobs: Runway lists no tasks, so a create whose answer was lost "
            "cannot be reconciled (and is not re-sent)"
        )

    async def cancel_job(self, job_id: str) -> bool:
        """Cancel a task in flight (True); an ended or unknown one is left alone (False):
        DELETE on an ended task would delete its outputs."""
        try:
            task = self._parse(await self._task(job_id, "cancel_job"))
        except NotFound:
            return False
        if task.terminal:
            return False
        try:
            await self._call("DELETE", f"v1/tasks/{path_segment(self.name, job_id)}", "cancel_job")
        except TerminalProviderError:
            return False
        return True

    @asynccontextmanager
    async def download(self, job_id: str, generation_id: str) -> AsyncIterator[VideoDownload]:
        # The task is read again: its URLs expire and are bearer links (not kept in events).
        try:
            task = await self._task(job_id, "download")
        except NotFound as exc:
            raise DownloadNotAvailable(exc.message, status_code=exc.status_code) from None
        outputs = _outputs(task)
        index = int(generation_id) if generation_id.isdigit() else -1
        if not 0 <= index < len(outputs):
            raise DownloadNotAvailable(f"{self.name} download: the task holds no output")
        async with stream_video(
            self._client,
            outputs[index],
            provider=self.name,
            action="download",
            secrets=self._secrets,
            allow_private=self._allow_private_redirects,
            follow_redirects=True,
            endpoint=self._base,
        ) as video:
            yield video

    async def aclose(self) -> None:
        await self._client.aclose()

    def _parse(self, data: dict[str, Any]) -> ProviderJob:
        task_id = str(data["id"])
        raw = str(data["status"])
        # An unknown status is treated as in flight; polling ends at the job's own deadline.
        status: JobState = _STATUS.get(raw.upper(), "running")
        created = _iso(data.get("createdAt"))
        failure_code: str | None = None
        failure_message: str | None = None
        outputs = _outputs(data)
        if status == "succeeded" and not outputs:
            status, failure_code = "failed", "no_output"
            failure_message = "the task succeeded without an output URL"
        elif status == "failed":
            code = data.get("failureCode")
            failure_code = (
                "content_policy_violation"
                if _policy_code(code if isinstance(code, str) else None)
                else truncate(str(code or "task_failed"), 80)
            )
            failure_message = truncate(
                redact(str(data.get("failure") or "the task failed"), self._secrets)
            )
        elif status == "cancelled":
            failure_code, failure_message = "cancelled", "the task was cancelled"
        progress = data.get("progress")
        succeeded = status == "succeeded"
        return ProviderJob(
            job_id=task_id,
            status=status,
            raw_status=raw,
            progress=100
            if succeeded
            else (round(progress * 100) if isinstance(progress, int | float) else None),
            generation_ids=[str(i) for i in range(len(outputs))] if succeeded else [],
            expires_at=created + OUTPUT_LIFETIME if succeeded and created else None,
            failure_code=failure_code,
            failure_message=failure_message,
            created_at=created,
        )


def _body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error_code(content: bytes) -> str | None:
    try:
        payload = json.loads(content)
    except ValueError:
        return None
    code = payload.get("code") if isinstance(payload, dict) else None
    return truncate(code, 80) if isinstance(code, str) and code else None


def _outputs(data: dict[str, Any]) -> list[str]:
    output = data.get("output")
    items = output if isinstance(output, list) else []
    return [u for u in items if isinstance(u, str) and u.startswith(("https://", "http://"))]


class RunwayConfig(ProviderConfig):
    """runway's settings: ``VIDPIPE_RUNWAY_*`` (the key also as ``RUNWAYML_API_SECRET``, as the
    runwayml SDK reads it)."""

    model_config = SettingsConfigDict(env_prefix="VIDPIPE_RUNWAY_")

    name: ClassVar[str] = RunwayClient.name
    required: ClassVar[tuple[str, ...]] = ("api_key",)

    base_url: str = "https://api.dev.runwayml.com"
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VIDPIPE_RUNWAY_API_KEY", "RUNWAYML_API_SECRET"),
    )
    model: str = "gen4.5"
    api_version: str = RUNWAY_VERSION
    max_concurrent_jobs: int = Field(default=2, ge=1)

    def build(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> RunwayClient:
        if self.missing() or self.api_key is None:
            raise self.not_configured()
        return RunwayClient(
            base_url=self.base_url,
            api_key=self.api_key,
            model=self.model,
            api_version=self.api_version,
            allow_private_redirects=self.allow_private_urls,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
