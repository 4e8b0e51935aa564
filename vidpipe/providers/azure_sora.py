"""azure-sora: Azure OpenAI Sora 1 "video generation jobs" (preview): its client and settings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar

import httpx
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from schemas.events import JobState
from vidpipe.errors import (
    ConfigurationError,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    TerminalProviderError,
)
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
from vidpipe.providers.error_mapping import parse_error_body, truncate
from vidpipe.providers.http import (
    build_async_client,
    check_base_url,
    endpoint_host,
    multipart_parts,
    path_segment,
    request,
)
from vidpipe.providers.jobs import job_object, unix_to_datetime

__all__ = ["AzureSoraClient", "AzureSoraConfig"]

_STATUS: dict[str, JobState] = {
    "preprocessing": "queued",
    "queued": "queued",
    "running": "running",
    "processing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}

_FAILURE_MESSAGES = {
    "input_moderation": "the prompt or input image was refused by input moderation",
    "output_moderation": "the generated video was refused by output moderation",
    "internal_error": "the provider hit an internal error while generating",
}


class AzureSoraClient:
    """Client for `{endpoint}/openai/v1/video/generations/...` with `api-key` auth."""

    name = "azure-sora"

    def __init__(
        self,
        *,
        endpoint: str,
        api_key: SecretStr | str,
        deployment: str,
        api_version: str = "preview",
        allow_private_redirects: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ConfigurationError("azure-sora: the API key is empty (VIDPIPE_AZURE_API_KEY)")
        if not deployment:
            raise ConfigurationError("azure-sora: no deployment name (VIDPIPE_AZURE_DEPLOYMENT)")
        base = check_base_url(endpoint, setting="VIDPIPE_AZURE_ENDPOINT")
        # Accept the resource root (documented form) or a URL that already ends in /openai/v1.
        for suffix in ("/openai/v1", "/openai"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        self.endpoint_host = endpoint_host(base)
        self.deployment = deployment
        self._secrets = (key,)
        self._allow_private_redirects = allow_private_redirects
        self._retry = retry or RetryPolicy()
        self._client = build_async_client(
            f"{base}/openai/v1/",
            headers={"api-key": key},
            params={"api-version": api_version},
            transport=transport,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"AzureSoraClient(host={self.endpoint_host!r}, deployment={self.deployment!r})"

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        model = spec.model or self.deployment
        fields = {
            "model": model,
            "prompt": spec.prompt,
            "width": spec.width,
            "height": spec.height,
            "n_seconds": spec.seconds,
            "n_variants": spec.variants,
        }
        kwargs: dict[str, Any]
        if spec.image is None:
            kwargs = {"json": fields}
        else:
            image = spec.image
            inpaint = [{"frame_index": 0, "type": "image", "file_name": image.filename}]
            form = {k: str(v) for k, v in fields.items()}
            form["inpaint_items"] = json.dumps(inpaint)
            kwargs = {
                "files": multipart_parts(
                    form, [("files", (image.filename, image.data, image.content_type))]
                )
            }
        # Built once: every retry re-sends the same Idempotency-Key.
        headers = {"Idempotency-Key": idempotency_key}

        async def attempt() -> httpx.Response:
            try:
                return await self._send(
                    "POST", "video/generations/jobs", "create_job", model, headers=headers, **kwargs
                )
            except ProviderUnavailable as exc:
                raise create_outcome(exc) from exc.__cause__

        response = await self._retry.call(attempt)
        return self._job(response, "create_job", malformed_retryable=False)

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        async def page(after: str | None) -> httpx.Response:
            params = {"limit": str(LIST_PAGE_SIZE)}
            if after is not None:
                params["after"] = after

            async def attempt() -> httpx.Response:
                return await self._send(
                    "GET", "video/generations/jobs", "list_jobs", None, params=params
                )

            return await self._retry.call(attempt)

        return await jobs_since(page, self._parse, since, provider=self.name)

    async def get_job(self, job_id: str) -> ProviderJob:
        path = f"video/generations/jobs/{path_segment(self.name, job_id)}"

        async def attempt() -> httpx.Response:
            return await self._send("GET", path, "get_job", None)

        response = await self._retry.call(attempt)
        return self._job(response, "get_job", malformed_retryable=True)

    async def cancel_job(self, job_id: str) -> bool:
        # Azure cancels a job by deleting it (queued, running or done: its assets go too).
        path = f"video/generations/jobs/{path_segment(self.name, job_id)}"

        async def attempt() -> httpx.Response:
            return await self._send("DELETE", path, "cancel_job", None)

        try:
            await self._retry.call(attempt)
        except TerminalProviderError:
            return False  # gone already (404), or refused: nothing more to stop
        return True

    @asynccontextmanager
    async def download(self, job_id: str, generation_id: str) -> AsyncIterator[VideoDownload]:
        # No retry here: the caller retries the download alone, and never resubmits the job.
        async with stream_video(
            self._client,
            f"video/generations/{path_segment(self.name, generation_id)}/content/video",
            params={"quality": "high"},
            provider=self.name,
            action="download",
            secrets=self._secrets,
            allow_private=self._allow_private_redirects,
        ) as video:
            yield video

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- internals ---------------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, action: str, model: str | None, **kwargs: Any
    ) -> httpx.Response:
        def map_error(response: httpx.Response, content: bytes) -> ProviderError | None:
            return self._deployment_error(response, content, model)

        return await request(
            self._client,
            method,
            path,
            provider=self.name,
            action=action,
            secrets=self._secrets,
            map_error=map_error,
            **kwargs,
        )

    def _deployment_error(
        self, response: httpx.Response, content: bytes, model: str | None
    ) -> ProviderError | None:
        """A wrong deployment is a configuration error: say which one, terminally."""
        if response.status_code != 404:
            return None
        body = parse_error_body(content)
        message = (body.message or "").lower()
        if body.code != "DeploymentNotFound" and not (
            "deployment" in message and ("does not exist" in message or "not found" in message)
        ):
            return None
        name = model or self.deployment
        return NotFound(
            f"azure-sora: deployment {name!r} does not exist at {self.endpoint_host} (HTTP 404, "
            f"code={body.code or '-'}); check VIDPIPE_AZURE_DEPLOYMENT and VIDPIPE_AZURE_ENDPOINT",
            status_code=404,
            provider_code=body.code or "DeploymentNotFound",
        )

    def _job(
        self, response: httpx.Response, action: str, *, malformed_retryable: bool
    ) -> ProviderJob:
        data = job_object(
            response, self.name, action, "job", malformed_retryable=malformed_retryable
        )
        return self._parse(data)

    def _parse(self, data: dict[str, Any]) -> ProviderJob:
        raw_status = str(data["status"])
        # An unknown status is treated as in flight; polling ends at the job's own deadline.
        status: JobState = _STATUS.get(raw_status.lower(), "running")
        generations = data.get("generations") or []
        generation_ids = [str(g["id"]) for g in generations if isinstance(g, dict) and g.get("id")]
        failure_code: str | None = None
        failure_message: str | None = None
        reason = data.get("failure_reason")
        if reason or status == "failed":
            failure_code = str(reason) if reason else "unknown"
            failure_message = _FAILURE_MESSAGES.get(
                failure_code, f"the job {raw_status} (reason: {truncate(failure_code, 80)})"
            )
        model = data.get("model")
        return ProviderJob(
            job_id=str(data["id"]),
            status=status,
            raw_status=raw_status,
            progress=None,
            generation_ids=generation_ids,
            expires_at=unix_to_datetime(data.get("expires_at")),
            failure_code=failure_code,
            failure_message=failure_message,
            model=str(model) if model is not None else None,
            created_at=unix_to_datetime(data.get("created_at")),
            prompt=echoed_text(data.get("prompt")),
            width=echoed_int(data.get("width")),
            height=echoed_int(data.get("height")),
            seconds=echoed_int(data.get("n_seconds")),
        )


class AzureSoraConfig(ProviderConfig):
    """azure-sora's settings: ``VIDPIPE_AZURE_*`` (endpoint and key also as ``AZURE_OPENAI_*``)."""

    model_config = SettingsConfigDict(env_prefix="VIDPIPE_AZURE_")

    name: ClassVar[str] = AzureSoraClient.name
    required: ClassVar[tuple[str, ...]] = ("endpoint", "api_key")

    endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("VIDPIPE_AZURE_ENDPOINT", "AZURE_OPENAI_ENDPOINT"),
    )
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VIDPIPE_AZURE_API_KEY", "AZURE_OPENAI_API_KEY")
    )
    deployment: str = "sora"
    api_version: str = "preview"
    max_concurrent_jobs: int = Field(default=2, ge=1)

    def build(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> AzureSoraClient:
        if self.missing() or self.endpoint is None or self.api_key is None:
            raise self.not_configured()
        return AzureSoraClient(
            endpoint=self.endpoint,
            api_key=self.api_key,
            deployment=self.deployment,
            api_version=self.api_version,
            allow_private_redirects=self.allow_private_urls,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
