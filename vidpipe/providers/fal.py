"""fal: the queue API (`queue.fal.run`), in front of Kling, MiniMax, Wan, Seedance, LTX, ...

Protocol (fal's queue docs, checked against `fal-client` 1.0.3, which is what users run):
- submit `POST {base}/{model_id}` (model id `owner/alias[/subpath]`) with the model's JSON input,
  `Authorization: Key <key>`; the answer names `request_id` and its status/result/cancel URLs;
- status `GET {base}/{owner}/{alias}/requests/{id}/status` (the subpath is not part of it):
  `IN_QUEUE` (with `queue_position`), `IN_PROGRESS`, `COMPLETED`; a failed request is COMPLETED
  with `error`/`error_type`, and its result answers the error (422 for content policy);
- result `GET {base}/{owner}/{alias}/requests/{id}`: `{"video": {"url": ...}}` on fal's CDN,
  fetched without the key (vetted like any redirect to another origin);
- cancel `PUT .../cancel` (`cancel_job`): 202 while queued, 400 `ALREADY_COMPLETED` after.

vidpipe's job id is `owner/alias/request_id`: a status check needs the app as well as the id.
fal honours no Idempotency-Key and lists no queue, so a create whose answer was lost cannot be
reconciled: `list_jobs` refuses (terminal), and the request fails rather than paying twice.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from schemas.events import JobState
from vidpipe.errors import (
    ConfigurationError,
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    InvalidRequest,
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
from vidpipe.providers.webhooks import FAL_JWKS_URL, FalHooks, HookVerifier, JwksCache

__all__ = ["FalClient", "FalConfig"]

_STATUS: dict[str, JobState] = {
    "IN_QUEUE": "queued",
    "IN_PROGRESS": "running",
    "COMPLETED": "succeeded",  # unless it carries an error
}


def _aspect_ratio(width: int, height: int) -> str:
    """fal's video models take an aspect ratio, not a size: the nearest of the common three."""
    ratio = width / height
    return min(("16:9", 16 / 9), ("9:16", 9 / 16), ("1:1", 1.0), key=lambda a: abs(a[1] - ratio))[0]


def _app_id(provider: str, model: str) -> str:
    parts = model.strip("/").split("/")
    if len(parts) < 2:
        raise ConfigurationError(f"{provider}: a model id is owner/alias[/subpath]: {model!r}")
    for part in parts:
        path_segment(provider, part)
    return "/".join(parts[:2])


class FalClient:
    """Client for fal's queue at `{base_url}` (https://queue.fal.run), `Authorization: Key`."""

    name = "fal"

    def __init__(
        self,
        *,
        api_key: SecretStr | str,
        base_url: str = "https://queue.fal.run",
        model: str = "fal-ai/kling-video/v2.1/standard/text-to-video",
        webhook_url: str | None = None,
        allow_private_redirects: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ConfigurationError("fal: the API key is empty (VIDPIPE_FAL_API_KEY)")
        base = check_base_url(base_url, setting="VIDPIPE_FAL_BASE_URL")
        self.endpoint_host = endpoint_host(base)
        self.model = model
        self._base = base
        self._secrets = (key,)
        self._allow_private_redirects = allow_private_redirects
        self._webhook_url = (
            None
            if webhook_url is None
            else check_base_url(webhook_url, setting="VIDPIPE_FAL_WEBHOOK_URL")
        )
        self._retry = retry or RetryPolicy()
        self._client = build_async_client(
            f"{base}/",
            headers={"Authorization": f"Key {key}"},
            transport=transport,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"FalClient(host={self.endpoint_host!r}, model={self.model!r})"

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        model = (spec.model or self.model).strip("/")
        app = _app_id(self.name, model)
        arguments: dict[str, Any] = {
            "prompt": spec.prompt,
            "duration": str(spec.seconds),  # Kling, MiniMax, ... take a string: "5", "10"
            "aspect_ratio": _aspect_ratio(spec.width, spec.height),
        }
        if spec.image is not None:
            # fal accepts a data URI wherever it takes a file URL.
            encoded = base64.b64encode(spec.image.data).decode("ascii")
            arguments["image_url"] = f"data:{spec.image.content_type};base64,{encoded}"
        # `idempotency_key` is not sent: fal documents none (see the module doc).
        params: dict[str, str] = {}
        if self._webhook_url is not None:
            # fal's webhook names only its request id: the app rides in our URL, so the gateway
            # can name the job (vidpipe.providers.webhooks). Only a hint; the poller still checks.
            sep = "&" if "?" in self._webhook_url else "?"
            params["fal_webhook"] = f"{self._webhook_url}{sep}{urlencode({'app': app})}"

        async def attempt() -> httpx.Response:
            try:
                return await request(
                    self._client,
                    "POST",
                    model,
                    provider=self.name,
                    action="create_job",
                    secrets=self._secrets,
                    map_error=self._reached_fal,
                    json=arguments,
                    params=params or None,
                )
            except ProviderUnavailable as exc:
                raise create_outcome(exc) from exc.__cause__

        response = await self._retry.call(attempt)
        data = _body(response)
        request_id = data.get("request_id") if data is not None else None
        if not isinstance(request_id, str) or not request_id:
            raise TerminalProviderError(
                f"{self.name} create_job: HTTP {response.status_code} without a request_id",
                status_code=response.status_code,
            )
        path_segment(self.name, request_id)
        return ProviderJob(
            job_id=f"{app}/{request_id}",
            status="queued",
            raw_status=str(data.get("status") or "IN_QUEUE") if data else "IN_QUEUE",
            model=model,
            prompt=spec.prompt,
            width=spec.width,
            height=spec.height,
            seconds=spec.seconds,
        )

    def _reached_fal(self, response: httpx.Response, content: bytes) -> ProviderError | None:
        """A 5xx that fal's own servers sent (it names a request id) may have queued the job, so
        it is not re-sent; one from the ingress before them (no id) is retried, as fal-client
        does (its `_is_ingress_error`)."""
        if response.status_code >= 500 and "x-fal-request-id" in response.headers:
            body = parse_error_body(content)
            message = describe(self.name, "create_job", response.status_code, body, self._secrets)
            return CreateOutcomeUnknown(
                f"{message}; the request may be queued", status_code=response.status_code
            )
        return None

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        raise TerminalProviderError(
            f"{self.name} list_jobs: fal lists no queue, so a create whose answer was lost "
            "cannot be reconciled (and is not re-sent)"
        )

    def _paths(self, job_id: str) -> str:
        app, _, request_id = job_id.rpartition("/")
        # A bare request id (a job created elsewhere) belongs to the configured model's app.
        app = _app_id(self.name, app or self.model)
        return f"{app}/requests/{path_segment(self.name, request_id)}"

    async def _get(self, path: str, action: str) -> httpx.Response:
        async def attempt() -> httpx.Response:
            return await request(
                self._client,
                "GET",
                path,
                provider=self.name,
                action=action,
                secrets=self._secrets,
            )

        return await self._retry.call(attempt)

    async def get_job(self, job_id: str) -> ProviderJob:
        base = self._paths(job_id)
        response = await self._get(f"{base}/status", "get_job")
        data = _body(response)
        raw_status = data.get("status") if data is not None else None
        if data is None or not isinstance(raw_status, str):
            raise ProviderUnavailable(
                f"{self.name} get_job: HTTP {response.status_code} without a status object",
                status_code=response.status_code,
            )
        # An unknown status is treated as in flight; polling ends at the job's own deadline.
        status: JobState = _STATUS.get(raw_status.upper(), "running")
        error = data.get("error")
        if status == "succeeded" and error:
            code = data.get("error_type")
            return self._failed(job_id, raw_status, str(code or "unknown"), str(error))
        if status != "succeeded":
            return ProviderJob(job_id=job_id, status=status, raw_status=raw_status)
        # COMPLETED without an error: the result says whether there is a video.
        try:
            url = await self._video_url(base)
        except TerminalProviderError as exc:
            return self._failed(job_id, raw_status, exc.provider_code or "unknown", exc.message)
        if url is None:
            return self._failed(job_id, raw_status, "no_video", "the result holds no video URL")
        return ProviderJob(
            job_id=job_id,
            status="succeeded",
            raw_status=raw_status,
            progress=100,
            generation_ids=[job_id.rpartition("/")[2]],
        )

    def _failed(self, job_id: str, raw_status: str, code: str, message: str) -> ProviderJob:
        return ProviderJob(
            job_id=job_id,
            status="failed",
            raw_status=raw_status,
            failure_code=truncate(code, 80),
            failure_message=truncate(redact(message, self._secrets)),
        )

    async def _video_url(self, base: str) -> str | None:
        response = await self._get(base, "get_result")
        data = _body(response)
        if data is None:
            raise ProviderUnavailable(
                f"{self.name} get_result: HTTP {response.status_code} without a result object",
                status_code=response.status_code,
            )
        return _video_url(data)

    async def cancel_job(self, job_id: str) -> bool:
        """Cancel a request still in the queue: False when it already started or ended (fal
        answers 400 ALREADY_COMPLETED; a started one runs to the end, and is paid)."""
        path = f"{self._paths(job_id)}/cancel"

        async def attempt() -> httpx.Response:
            return await request(
                self._client,
                "PUT",
                path,
                provider=self.name,
                action="cancel_job",
                secrets=self._secrets,
            )

        try:
            await self._retry.call(attempt)
        except TerminalProviderError:
            return False
        return True

    @asynccontextmanager
    async def download(self, job_id: str, generation_id: str) -> AsyncIterator[VideoDownload]:
        # The result is read again: its URL is not kept in events (a CDN URL is a bearer link).
        try:
            url = await self._video_url(self._paths(job_id))
        except InvalidRequest as exc:
            raise DownloadNotAvailable(exc.message, status_code=exc.status_code) from None
        if url is None:
            raise DownloadNotAvailable(f"{self.name} download: the result holds no video URL")
        async with stream_video(
            self._client,
            url,
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


def _body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _video_url(data: dict[str, Any]) -> str | None:
    """`{"video": {"url"}}`, or the first of `{"videos": [{"url"}]}`."""
    video = data.get("video")
    if not isinstance(video, dict):
        videos = data.get("videos")
        video = videos[0] if isinstance(videos, list) and videos else None
    url = video.get("url") if isinstance(video, dict) else None
    return url if isinstance(url, str) and url else None


class FalConfig(ProviderConfig):
    """fal's settings: ``VIDPIPE_FAL_*`` (the key also as ``FAL_KEY``, as fal-client reads it)."""

    model_config = SettingsConfigDict(env_prefix="VIDPIPE_FAL_")

    name: ClassVar[str] = FalClient.name
    required: ClassVar[tuple[str, ...]] = ("api_key",)

    base_url: str = "https://queue.fal.run"
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VIDPIPE_FAL_API_KEY", "FAL_KEY")
    )
    model: str = "fal-ai/kling-video/v2.1/standard/text-to-video"
    max_concurrent_jobs: int = Field(default=2, ge=1)
    #: Where fal should POST a finished request (the gateway's /v1/provider-hooks/fal); None:
    #: no webhook is asked for, polling alone. Set, the gateway also accepts fal's webhooks.
    webhook_url: str | None = None
    #: fal's signing keys (Ed25519, as a JWKS); the emulator serves its own.
    webhook_jwks_url: str = FAL_JWKS_URL

    def hook_verifier(self) -> HookVerifier | None:
        if self.webhook_url is None:
            return None
        return FalHooks(JwksCache.from_url(self.webhook_jwks_url))

    def build(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> FalClient:
        if self.missing() or self.api_key is None:
            raise self.not_configured()
        return FalClient(
            base_url=self.base_url,
            api_key=self.api_key,
            model=self.model,
            webhook_url=self.webhook_url,
            allow_private_redirects=self.allow_private_urls,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
