"""The small interface every provider client implements, the types it speaks, and its config.

A provider module (`azure_sora`, `openai_videos`) holds a client class and a `ProviderConfig`
subclass: the provider's registry name, the environment variables it reads, its concurrent-job
quota and how to build its client. `vidpipe.providers` lists those configs, one line each.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import httpx
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import JobState
from vidpipe.errors import ConfigurationError, CreateOutcomeUnknown, ProviderUnavailable
from vidpipe.net.images import InputImage
from vidpipe.net.retry import RetryPolicy

if TYPE_CHECKING:
    from vidpipe.providers.webhooks import HookVerifier

__all__ = [
    "InputImage",
    "ProviderClient",
    "ProviderConfig",
    "ProviderJob",
    "VideoDownload",
    "VideoSpec",
    "create_outcome",
    "echoed_int",
    "echoed_text",
    "jobs_since",
]


@dataclass(frozen=True)
class VideoSpec:
    """What to generate, in provider-neutral terms."""

    prompt: str
    width: int = 1280
    height: int = 720
    seconds: int = 5
    variants: int = 1
    model: str | None = None  # None: the client's configured model / deployment
    image: InputImage | None = None


@dataclass(frozen=True)
class ProviderJob:
    """A provider job, normalised. `raw_status` keeps the provider's own word."""

    job_id: str
    status: JobState
    raw_status: str
    progress: int | None = None
    generation_ids: list[str] = field(default_factory=list)
    expires_at: datetime | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    # The provider's hint for the next status check (openai-poll-after-ms), in seconds.
    poll_after_s: float | None = None
    model: str | None = None
    # What the job was asked for, as the provider echoes it: read when a lost create is
    # reconciled against the provider's job list (`vidpipe.policy.submission.match_job`).
    created_at: datetime | None = None
    prompt: str | None = None
    width: int | None = None
    height: int | None = None
    seconds: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


@dataclass
class VideoDownload:
    """An open, streamed download: iterate `chunks` inside the context manager."""

    status_code: int
    content_type: str
    content_length: int | None
    chunks: AsyncIterator[bytes]


@runtime_checkable
class ProviderClient(Protocol):
    #: Registry name: "azure-sora", "openai-videos", "fal", "replicate".
    name: str
    #: The endpoint host (no scheme, path, or credentials) for events and records.
    endpoint_host: str

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob: ...

    async def get_job(self, job_id: str) -> ProviderJob: ...

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        """The jobs created at or after `since` (newest first), from the provider's list."""
        ...

    def download(
        self, job_id: str, generation_id: str
    ) -> AbstractAsyncContextManager[VideoDownload]:
        """Stream the video bytes. Raises DownloadNotAvailable, or a retryable error."""
        ...

    async def cancel_job(self, job_id: str) -> bool:
        """Stop (or delete) the job at the provider: True when the provider accepted it, False
        when the job had already ended or is gone. Raises only a retryable error."""
        ...

    async def aclose(self) -> None: ...


def create_outcome(exc: ProviderUnavailable) -> ProviderUnavailable:
    """A failed create's error as the submitter must see it: if the request may have reached
    the provider (anything but a refused connection), the answer was lost, not the job."""
    cause = exc.__cause__
    if isinstance(cause, httpx.TransportError) and not isinstance(
        cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
    ):
        lost = CreateOutcomeUnknown(f"{exc.message}; the job may exist", status_code=None)
        lost.__cause__ = cause
        return lost
    return exc


#: The list endpoints' largest page, and how many pages a reconciliation reads at most.
LIST_PAGE_SIZE = 100
LIST_MAX_PAGES = 20

#: One page of a provider's job list, given the id to list after (None: the newest page).
FetchPage = Callable[[str | None], Awaitable[httpx.Response]]


async def jobs_since(
    fetch_page: FetchPage,
    parse: Callable[[dict[str, Any]], ProviderJob],
    since: datetime,
    *,
    provider: str,
) -> list[ProviderJob]:
    """Page through a newest-first job list until a job older than `since` (or the end).

    Both protocols answer `{"data": [...], "has_more": bool}` and page with `after=<last id>`."""
    found: list[ProviderJob] = []
    after: str | None = None
    for _page in range(LIST_MAX_PAGES):
        response = await fetch_page(after)
        try:
            body = response.json()
        except ValueError:
            body = None
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(items, list):
            raise ProviderUnavailable(
                f"{provider} list_jobs: HTTP {response.status_code} without a list object",
                status_code=response.status_code,
            )
        reached_older = False
        for item in items:
            if not isinstance(item, dict) or not item.get("id") or not item.get("status"):
                continue
            job = parse(item)
            if job.created_at is not None and job.created_at < since:
                reached_older = True
                continue
            found.append(job)
        if reached_older or not items or body.get("has_more") is not True:
            break
        after = str(items[-1].get("id"))
    return found


def echoed_text(value: object) -> str | None:
    """A string field of a job object, or None."""
    return value if isinstance(value, str) else None


def echoed_int(value: object) -> int | None:
    """A whole-number field of a job object (int or digit string), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


class ProviderConfig(BaseSettings):
    """One provider's settings, read from its own environment variables, and its client factory.

    A subclass sets `env_prefix` (e.g. ``VIDPIPE_AZURE_``), names the registry entry in `name`,
    lists the fields without which the provider counts as not configured in `required`, and
    implements `build`. Fields may be given by name (``endpoint=...``) or by environment name.
    """

    model_config = SettingsConfigDict(extra="ignore", validate_by_name=True)

    #: The registry name, as requests and events spell it ("azure-sora").
    name: ClassVar[str]
    #: Fields that must be set (non-empty) for the provider to be configured.
    required: ClassVar[tuple[str, ...]]

    #: Jobs the provider runs at once for us (Azure's default quota is 2).
    max_concurrent_jobs: int = Field(default=2, ge=1)
    #: Development only: lets a content redirect to another origin reach loopback/private
    #: addresses (never link-local). The one variable the rest of vidpipe reads too.
    allow_private_urls: bool = Field(
        default=False,
        validation_alias=AliasChoices("VIDPIPE_ALLOW_PRIVATE_URLS", "allow_private_urls"),
    )

    @classmethod
    def env_name(cls, field_name: str) -> str:
        """The environment variable documented for `field_name` (its first alias)."""
        alias = cls.model_fields[field_name].validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            return alias.choices[0]
        if isinstance(alias, str):
            return alias
        return (str(cls.model_config.get("env_prefix", "")) + field_name).upper()

    def missing(self) -> list[str]:
        """Environment names of the required settings that are not set."""
        # bool() is False for None, "" and an empty SecretStr alike.
        return [self.env_name(f) for f in self.required if not getattr(self, f)]

    @property
    def configured(self) -> bool:
        return not self.missing()

    def not_configured(self) -> ConfigurationError:
        """The error for building an unconfigured provider; it names settings, never values."""
        missing = self.missing()
        what = " and ".join(missing) if missing else "its endpoint and key"
        return ConfigurationError(f"provider {self.name!r} is not configured: set {what}")

    def hook_verifier(self) -> HookVerifier | None:
        """How this provider's own webhooks are checked (`vidpipe.providers.webhooks`), when it
        sends them and they are set up; None: its jobs are polled only."""
        return None

    @abstractmethod
    def build(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> ProviderClient:
        """The client these settings describe; ConfigurationError when they are incomplete."""
