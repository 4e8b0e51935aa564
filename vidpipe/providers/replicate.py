"""replicate: the predictions API (`api.replicate.com/v1`), in front of Kling, Wan, Seedance, ...

Protocol (Replicate's HTTP API docs, checked against the `replicate` 1.0.7 SDK):
- create `POST v1/models/{owner}/{name}/predictions` with `{"input": {...}}` (an official model;
  the SDK's `predictions.create(model=...)`), `Authorization: Bearer <token>`; `Prefer: wait` is
  not sent: a video takes minutes, and the poller asks on its own timers;
- status `GET v1/predictions/{id}`: `starting`, `processing`, `succeeded`, `failed`, `canceled`
  (`aborted` too, in newer answers); the output is the video's URL (or a list of them);
- list `GET v1/predictions`, newest first, paged by the `next` URL;
- cancel `POST v1/predictions/{id}/cancel` (`cancel_job`): the prediction, canceled or as it ended.

Replicate deletes an API prediction's outputs an hour after it completes, so a job's expiry is
`completed_at` + 1 h: the fetch has to happen well within it. No Idempotency-Key is documented
(none is sent); a lost create is found again in the list by its input.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from schemas.events import JobState
from vidpipe.errors import (
    ConfigurationError,
    ContentPolicyViolation,
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    ProviderError,
    ProviderUnavailable,
    TerminalProviderError,
)
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers.base import (
    LIST_MAX_PAGES,
    ProviderConfig,
    ProviderJob,
    VideoDownload,
    VideoSpec,
    create_outcome,
    echoed_int,
    echoed_text,
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
from vidpipe.providers.jobs import job_object
from vidpipe.providers.webhooks import HookVerifier, StandardHooks

__all__ = ["OUTPUT_LIFETIME", "ReplicateClient", "ReplicateConfig"]

#: Replicate deletes API outputs this long after the prediction completes.
OUTPUT_LIFETIME = timedelta(hours=1)

_STATUS: dict[str, JobState] = {
    "starting": "queued",
    "processing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
    "aborted": "cancelled",
}
# Replicate's code for a flagged input or output, in an error's text.
_SENSITIVE = ("(E005)", "flagged as sensitive")


def _aspect_ratio(width: int, height: int) -> str:
    ratio = width / height
    return min(("16:9", 16 / 9), ("9:16", 9 / 16), ("1:1", 1.0), key=lambda a: abs(a[1] - ratio))[0]


def _iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _sensitive(text: str | None) -> bool:
    return bool(text) and any(marker in str(text) for marker in _SENSITIVE)


class ReplicateClient:
    """Client for `{base_url}/v1` (https://api.replicate.com), `Authorization: Bearer`."""

    name = "replicate"

    def __init__(
        self,
        *,
        api_token: SecretStr | str,
        base_url: str = "https://api.replicate.com",
        model: str = "kwaivgi/kling-v2.1",
        webhook_url: str | None = None,
        allow_private_redirects: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        token = api_token.get_secret_value() if isinstance(api_token, SecretStr) else api_token
        if not token:
            raise ConfigurationError(
                "replicate: the API token is empty (VIDPIPE_REPLICATE_API_TOKEN)"
            )
        base = check_base_url(base_url, setting="VIDPIPE_REPLICATE_BASE_URL")
        self.endpoint_host = endpoint_host(base)
        self.model = model
        self._base = base
        self._secrets = (token,)
        self._allow_private_redirects = allow_private_redirects
        self._webhook_url = (
            None
            if webhook_url is None
            else check_base_url(webhook_url, setting="VIDPIPE_REPLICATE_WEBHOOK_URL")
        )
        self._retry = retry or RetryPolicy()
        self._client = build_async_client(
            f"{base}/",
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:  # never show the token, even by accident
        return f"ReplicateClient(host={self.endpoint_host!r}, model={self.model!r})"

    def _flagged(
        self, action: str, response: httpx.Response, content: bytes
    ) -> ProviderError | None:
        """A refusal whose text carries Replicate's E005 (flagged as sensitive)."""
        body = parse_error_body(content)
        if response.status_code < 500 and _sensitive(body.message):
            message = describe(self.name, action, response.status_code, body, self._secrets)
            return ContentPolicyViolation(message, status_code=response.status_code)
        return None

    async def _call(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        def flagged(response: httpx.Response, content: bytes) -> ProviderError | None:
            return self._flagged(action, response, content)

        return await request(
            self._client,
            method,
            path,
            provider=self.name,
            action=action,
            secrets=self._secrets,
            map_error=flagged,
            **kwargs,
        )

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        owner, _, name = (spec.model or self.model).partition("/")
        path = f"v1/models/{path_segment(self.name, owner)}/{path_segment(self.name, name)}"
        inputs: dict[str, Any] = {
            "prompt": spec.prompt,
            "duration": spec.seconds,
            "aspect_ratio": _aspect_ratio(spec.width, spec.height),
        }
        if spec.image is not None:
            # Replicate takes a data URI for a file input (its SDK sends small files that way).
            encoded = base64.b64encode(spec.image.data).decode("ascii")
            inputs["start_image"] = f"data:{spec.image.content_type};base64,{encoded}"

        body: dict[str, Any] = {"input": inputs}
        if self._webhook_url is not None:
            # Only a hint that the prediction ended; the poller still checks (docs/providers.md).
            body["webhook"] = self._webhook_url
            body["webhook_events_filter"] = ["completed"]

        async def attempt() -> httpx.Response:
            try:
                return await self._call("POST", f"{path}/predictions", "create_job", json=body)
            except CreateOutcomeUnknown:
                raise
            except ProviderUnavailable as exc:
                if exc.status_code is not None and exc.status_code >= 500:
                    # Without an Idempotency-Key a 5xx create may still have made the
                    # prediction; the SDK never re-sends a POST either. Found again by the list.
                    lost = CreateOutcomeUnknown(
                        f"{exc.message}; the prediction may exist", status_code=exc.status_code
                    )
                    raise lost from exc
                raise create_outcome(exc) from exc.__cause__

        response = await self._retry.call(attempt)
        data = job_object(
            response, self.name, "create_job", "prediction", malformed_retryable=False
        )
        return self._parse(data)

    async def get_job(self, job_id: str) -> ProviderJob:
        path = f"v1/predictions/{path_segment(self.name, job_id)}"

        async def attempt() -> httpx.Response:
            return await self._call("GET", path, "get_job")

        response = await self._retry.call(attempt)
        data = job_object(response, self.name, "get_job", "prediction", malformed_retryable=True)
        return self._parse(data)

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        found: list[ProviderJob] = []
        url: str | None = "v1/predictions"
        for _page in range(LIST_MAX_PAGES):
            if url is None:
                break
            response = await self._retry.call(self._lister(url))
            body = _json(response)
            results = body.get("results") if body is not None else None
            if body is None or not isinstance(results, list):
                raise ProviderUnavailable(
                    f"{self.name} list_jobs: HTTP {response.status_code} without a list object",
                    status_code=response.status_code,
                )
            reached_older = False
            for item in results:
                if not isinstance(item, dict) or not item.get("id") or not item.get("status"):
                    continue
                job = self._parse(item)
                if job.created_at is not None and job.created_at < since:
                    reached_older = True
                    continue
                found.append(job)
            url = None if reached_older else self._next_page(body.get("next"))
        return found

    def _lister(self, url: str) -> Callable[[], Awaitable[httpx.Response]]:
        async def attempt() -> httpx.Response:
            return await self._call("GET", url, "list_jobs")

        return attempt

    def _next_page(self, value: object) -> str | None:
        """The `next` URL as a path on our base: a cursor must not send the token elsewhere."""
        if not isinstance(value, str) or not value:
            return None
        parts, base = urlsplit(value), urlsplit(self._base)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise ProviderUnavailable(f"{self.name} list_jobs: a next page on another host")
        return parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")

    async def cancel_job(self, job_id: str) -> bool:
        """Cancel a prediction: True when it ends cancelled (one that already ended is answered
        as it is, and stays as it ended)."""
        path = f"v1/predictions/{path_segment(self.name, job_id)}/cancel"

        async def attempt() -> httpx.Response:
            return await self._call("POST", path, "cancel_job")

        try:
            response = await self._retry.call(attempt)
        except TerminalProviderError:
            return False
        job = self._parse(
            job_object(response, self.name, "cancel_job", "prediction", malformed_retryable=True)
        )
        return job.status == "cancelled"

    @asynccontextmanager
    async def download(self, job_id: str, generation_id: str) -> AsyncIterator[VideoDownload]:
        # The prediction is read again for its output URL (a bearer link, not kept in events).
        job = await self._output(job_id)
        url = _output_url(job.get("output"))
        if url is None:
            removed = " (deleted an hour after completion)" if job.get("data_removed") else ""
            raise DownloadNotAvailable(
                f"{self.name} download: the prediction has no output{removed}"
            )
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

    async def _output(self, job_id: str) -> dict[str, Any]:
        path = f"v1/predictions/{path_segment(self.name, job_id)}"
        response = await self._call("GET", path, "download")
        return job_object(response, self.name, "download", "prediction", malformed_retryable=True)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _parse(self, data: dict[str, Any]) -> ProviderJob:
        prediction_id = str(data["id"])
        raw_status = str(data["status"])
        # An unknown status is treated as in flight; polling ends at the job's own deadline.
        status: JobState = _STATUS.get(raw_status.lower(), "running")
        failure_code: str | None = None
        failure_message: str | None = None
        error = data.get("error")
        if status == "failed":
            text = str(error) if error else "the prediction failed without an error"
            failure_code = "content_policy_violation" if _sensitive(text) else "prediction_failed"
            failure_message = truncate(redact(text, self._secrets))
        elif status == "cancelled":
            failure_code, failure_message = raw_status, f"the prediction was {raw_status}"
        completed = _iso(data.get("completed_at"))
        succeeded = status == "succeeded"
        if succeeded and _output_url(data.get("output")) is None:
            # Succeeded without a video: deleted already, or a model that returned nothing.
            status, failure_code = "failed", "no_output"
            failure_message = "the prediction succeeded without an output URL"
            succeeded = False
        inputs = data.get("input") if isinstance(data.get("input"), dict) else {}
        assert isinstance(inputs, dict)
        model = data.get("model")
        return ProviderJob(
            job_id=prediction_id,
            status=status,
            raw_status=raw_status,
            progress=100 if succeeded else None,
            generation_ids=[prediction_id] if succeeded else [],
            expires_at=completed + OUTPUT_LIFETIME if succeeded and completed else None,
            failure_code=failure_code,
            failure_message=failure_message,
            model=str(model) if model else None,
            created_at=_iso(data.get("created_at")),
            prompt=echoed_text(inputs.get("prompt")),
            seconds=echoed_int(inputs.get("duration")),
        )


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _output_url(output: object) -> str | None:
    """A video model's output: one URL, or a list whose first item is one."""
    if isinstance(output, list) and output:
        output = output[0]
    return (
        output if isinstance(output, str) and output.startswith(("https://", "http://")) else None
    )


class ReplicateConfig(ProviderConfig):
    """replicate's settings: ``VIDPIPE_REPLICATE_*`` (the token also as ``REPLICATE_API_TOKEN``)."""

    model_config = SettingsConfigDict(env_prefix="VIDPIPE_REPLICATE_")

    name: ClassVar[str] = ReplicateClient.name
    required: ClassVar[tuple[str, ...]] = ("api_token",)

    base_url: str = "https://api.replicate.com"
    api_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VIDPIPE_REPLICATE_API_TOKEN", "REPLICATE_API_TOKEN"),
    )
    model: str = "kwaivgi/kling-v2.1"
    max_concurrent_jobs: int = Field(default=2, ge=1)
    #: Where Replicate should POST a finished prediction (the gateway's
    #: /v1/provider-hooks/replicate); None: no webhook is asked for, polling alone.
    webhook_url: str | None = None
    #: The account's signing secret ("whsec_...", `GET /v1/webhooks/default/secret`): the
    #: gateway accepts Replicate's webhooks only when it is set.
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
    ) -> ReplicateClient:
        if self.missing() or self.api_token is None:
            raise self.not_configured()
        return ReplicateClient(
            base_url=self.base_url,
            api_token=self.api_token,
            model=self.model,
            webhook_url=self.webhook_url,
            allow_private_redirects=self.allow_private_urls,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
