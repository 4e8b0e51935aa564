"""openai-videos: the `/v1/videos` protocol (Sora 2, OpenAI-style gateways): client, settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar

import httpx
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from schemas.events import JobState
from vidpipe.errors import ConfigurationError, ProviderUnavailable, TerminalProviderError
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers.base import (
    LIST_PAGE_SIZE,
    ProviderConfig,
    ProviderJob,
    VideoDownload,
    VideoSpec,
    create_outcome,
    echoed_int,
    echoed_text,
    jobs_since,
)
from vidpipe.providers.download import stream_video
from vidpipe.providers.error_mapping import redact, truncate
from vidpipe.providers.http import (
    build_async_client,
    check_base_url,
    endpoint_host,
    multipart_parts,
    path_segment,
    request,
)
from vidpipe.providers.jobs import job_object, unix_to_datetime
from vidpipe.providers.webhooks import HookVerifier, StandardHooks

__all__ = ["OpenAIVideosClient", "OpenAIVideosConfig"]

_STATUS: dict[str, JobState] = {
    "queued": "queued",
    "in_progress": "running",
    "completed": "succeeded",
    "failed": "failed",
    # Not in the published enum, but harmless to understand if a gateway sends them.
    "cancelled": "cancelled",
    "canceled": "cancelled",
}


class OpenAIVideosClient:
    """Client for `{base_url}/videos`, authenticated by `Authorization: Bearer` or `api-key`."""

    name = "openai-videos"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr | str,
        model: str = "sora-2",
        auth_header: str = "authorization",
        allow_private_redirects: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ConfigurationError("openai-videos: the API key is empty (VIDPIPE_OPENAI_API_KEY)")
        if auth_header == "authorization":
            headers = {"Authorization": f"Bearer {key}"}
        elif auth_header == "api-key":
            headers = {"api-key": key}
        else:
            raise ConfigurationError(
                "openai-videos: VIDPIPE_OPENAI_AUTH_HEADER must be 'authorization' or 'api-key'"
            )
        base = check_base_url(base_url, setting="VIDPIPE_OPENAI_BASE_URL")
        self.endpoint_host = endpoint_host(base)
        self.model = model
        self._secrets = (key,)
        self._allow_private_redirects = allow_private_redirects
        self._retry = retry or RetryPolicy()
        self._client = build_async_client(
            f"{base}/", headers=headers, transport=transport, timeout_s=timeout_s
        )

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"OpenAIVideosClient(host={self.endpoint_host!r}, model={self.model!r})"

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        fields = {
            "prompt": spec.prompt,
            "model": spec.model or self.model,
            "seconds": str(spec.seconds),  # the protocol wants a string: "4", "8", "12"
            "size": f"{spec.width}x{spec.height}",
        }
        files: list[tuple[str, tuple[str, bytes, str]]] = []
        if spec.image is not None:
            image = spec.image
            files.append(("input_reference", (image.filename, image.data, image.content_type)))
        parts = multipart_parts(fields, files)
        # Built once: every retry re-sends the same Idempotency-Key.
        headers = {"Idempotency-Key": idempotency_key}

        async def attempt() -> httpx.Response:
            try:
                return await request(
                    self._client,
                    "POST",
                    "videos",
                    provider=self.name,
                    action="create_job",
                    secrets=self._secrets,
                    headers=headers,
                    files=parts,
                )
            except ProviderUnavailable as exc:
                raise create_outcome(exc) from exc.__cause__

        response = await self._retry.call(attempt)
        return self._job(response, "create_job", malformed_retryable=False)

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        async def page(after: str | None) -> httpx.Response:
            params = {"limit": str(LIST_PAGE_SIZE), "order": "desc"}
            if after is not None:
                params["after"] = after

            async def attempt() -> httpx.Response:
                return await request(
                    self._client,
                    "GET",
                    "videos",
                    provider=self.name,
                    action="list_jobs",
                    secrets=self._secrets,
                    params=params,
                )

            return await self._retry.call(attempt)

        def parse(data: dict[str, Any]) -> ProviderJob:
            return self._parse(data, httpx.Headers())

        return await jobs_since(page, parse, since, provider=self.name)

    async def get_job(self, job_id: str) -> ProviderJob:
        path = f"videos/{path_segment(self.name, job_id)}"

        async def attempt() -> httpx.Response:
            return await request(
                self._client,
                "GET",
                path,
                provider=self.name,
                action="get_job",
                secrets=self._secrets,
            )

        response = await self._retry.call(attempt)
        return self._job(response, "get_job", malformed_retryable=True)

    async def cancel_job(self, job_id: str) -> bool:
        # /v1/videos has no cancel: DELETE removes the video, and with it a job in flight.
        path = f"videos/{path_segment(self.name, job_id)}"

        async def attempt() -> httpx.Response:
            return await request(
                self._client,
                "DELETE",
                path,
                provider=self.name,
                action="cancel_job",
                secrets=self._secrets,
            )

        try:
            await self._retry.call(attempt)
        except TerminalProviderError:
            return False  # gone already (404), or refused
        return True

    @asynccontextmanager
    async def download(self, job_id: str, generation_id: str) -> AsyncIterator[VideoDownload]:
        # The protocol has one video per job, whose id is the job id; prefer the generation id
        # we were handed, as that is what the job reported. No retry here: the caller retries.
        video_id = path_segment(self.name, generation_id or job_id)
        async with stream_video(
            self._client,
            f"videos/{video_id}/content",
            params={"variant": "video"},
            provider=self.name,
            action="download",
            secrets=self._secrets,
            allow_private=self._allow_private_redirects,
            follow_redirects=True,
        ) as video:
            yield video

    async def aclose(self) -> None:
        await self._client.aclose()

    def _job(
        self, response: httpx.Response, action: str, *, malformed_retryable: bool
    ) -> ProviderJob:
        data = job_object(
            response, self.name, action, "video", malformed_retryable=malformed_retryable
        )
        return self._parse(data, response.headers)

    def _parse(self, data: dict[str, Any], headers: httpx.Headers) -> ProviderJob:
        video_id = str(data["id"])
        raw_status = str(data["status"])
        # An unknown status is treated as in flight; polling ends at the job's own deadline.
        status: JobState = _STATUS.get(raw_status.lower(), "running")
        progress = data.get("progress")
        failure_code: str | None = None
        failure_message: str | None = None
        error = data.get("error")
        if isinstance(error, dict) and (error.get("code") or error.get("message")):
            failure_code = str(error.get("code") or "unknown")
            text = error.get("message")
            failure_message = truncate(
                redact(str(text), self._secrets) if text else f"the video {raw_status}"
            )
        elif status == "failed":
            failure_code, failure_message = "unknown", "the video failed without an error object"
        model = data.get("model")
        width, height = _size(data.get("size"))
        return ProviderJob(
            job_id=video_id,
            status=status,
            raw_status=raw_status,
            progress=_progress(progress),
            generation_ids=[video_id] if status == "succeeded" else [],
            expires_at=unix_to_datetime(data.get("expires_at")),
            failure_code=failure_code,
            failure_message=failure_message,
            poll_after_s=_poll_after(headers),
            model=str(model) if model is not None else None,
            created_at=unix_to_datetime(data.get("created_at")),
            prompt=echoed_text(data.get("prompt")),
            width=width,
            height=height,
            seconds=echoed_int(data.get("seconds")),
        )


def _size(value: object) -> tuple[int | None, int | None]:
    """A size like 1280x720 → (1280, 720); anything else → (None, None)."""
    if not isinstance(value, str):
        return None, None
    width, _, height = value.partition("x")
    return echoed_int(width), echoed_int(height)


def _progress(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0, min(100, int(value)))


def _poll_after(headers: httpx.Headers) -> float | None:
    raw = headers.get("openai-poll-after-ms")
    if raw is None:
        return None
    try:
        millis = float(raw)
    except ValueError:
        return None
    return millis / 1000.0 if millis >= 0 and millis != float("inf") else None


class OpenAIVideosConfig(ProviderConfig):
    """openai-videos' settings: ``VIDPIPE_OPENAI_*`` (base URL and key also as ``OPENAI_*``)."""

    model_config = SettingsConfigDict(env_prefix="VIDPIPE_OPENAI_")

    name: ClassVar[str] = OpenAIVideosClient.name
    required: ClassVar[tuple[str, ...]] = ("base_url", "api_key")

    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("VIDPIPE_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VIDPIPE_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    auth_header: str = Field(default="authorization", pattern="^(authorization|api-key)$")
    model: str = "sora-2"
    max_concurrent_jobs: int = Field(default=2, ge=1)
    #: The signing secret ("whsec_...") of the webhook endpoint set up in the provider's
    #: dashboard for `video.completed` / `video.failed` (the gateway's
    #: /v1/provider-hooks/openai-videos); the gateway accepts them only when it is set.
    webhook_secret: SecretStr | None = None

    def hook_verifier(self) -> HookVerifier | None:
        if self.webhook_secret is None:
            return None
        return StandardHooks(self.name, self.webhook_secret)

    def build(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> OpenAIVideosClient:
        if self.missing() or self.base_url is None or self.api_key is None:
            raise self.not_configured()
        return OpenAIVideosClient(
            base_url=self.base_url,
            api_key=self.api_key,
            model=self.model,
            auth_header=self.auth_header,
            allow_private_redirects=self.allow_private_urls,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
