"""In-memory collaborators for tests, built on the same interfaces as the real adapters.

Shipped beside the interfaces (as httpx ships `MockTransport`), so anyone testing code that uses
vidpipe's stages can inject them; nothing in production imports this module.

- `FakeProvider`: a scripted `ProviderClient`.
- `MemoryPublisher`: collects what a handler publishes and schedules.
- `MemoryStorage`: a `VideoStorage` in memory that validates like the real backends.
- `FakeSupabaseStorage`: enough of Supabase's storage-api, as an httpx `MockTransport` handler,
  to run the real `SupabaseStorage` against.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from schemas.events import Event
from vidpipe.errors import CreateOutcomeUnknown, ProviderError
from vidpipe.providers.base import ProviderJob, VideoDownload, VideoSpec
from vidpipe.storage import DEFAULT_BUCKET, StoredObject, SupabaseStorage, validate_key
from vidpipe.storage.base import validated_copy
from vidpipe.storage.validation import check_content_type, check_playable

__all__ = [
    "FakeProvider",
    "FakeSupabaseObject",
    "FakeSupabaseStorage",
    "MemoryPublisher",
    "MemoryStorage",
]


@dataclass
class FakeProvider:
    """A `ProviderClient` that answers from a script.

    `create_job` records the call and answers a queued job (or raises `create_error`); while
    `lose_create_answers` is above 0 it creates the job and raises `CreateOutcomeUnknown`, as a
    lost answer would; `list_jobs` lists every job created, with what it was asked for; `get_job`
    answers the next entry of `statuses` (raising it if it is an error); `download` streams
    `video` in 1000-byte chunks, unless `download_errors` has an error left to raise;
    `cancel_job` records the id and answers `cancel_accepted`.
    """

    name: str = "azure-sora"
    endpoint_host: str = "fake.example"
    created: list[tuple[VideoSpec, str]] = field(default_factory=list)
    statuses: list[ProviderJob | ProviderError] = field(default_factory=list)
    create_error: ProviderError | None = None
    video: bytes = b""
    download_errors: list[ProviderError] = field(default_factory=list)
    downloads: int = 0
    lose_create_answers: int = 0
    jobs: list[ProviderJob] = field(default_factory=list)
    list_calls: list[datetime] = field(default_factory=list)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: The job ids `cancel_job` was asked for, and what it answers.
    cancelled: list[str] = field(default_factory=list)
    cancel_accepted: bool = True

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        self.created.append((spec, idempotency_key))
        if self.create_error is not None:
            raise self.create_error
        job = ProviderJob(
            job_id=f"task_{len(self.created)}",
            status="queued",
            raw_status="queued",
            created_at=self.clock(),
            prompt=spec.prompt,
            width=spec.width,
            height=spec.height,
            seconds=spec.seconds,
        )
        self.jobs.append(job)
        if self.lose_create_answers > 0:
            self.lose_create_answers -= 1
            raise CreateOutcomeUnknown("fake: the answer to the create was lost")
        return job

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        self.list_calls.append(since)
        return [
            job for job in reversed(self.jobs) if job.created_at is None or job.created_at >= since
        ]

    async def get_job(self, job_id: str) -> ProviderJob:
        item = self.statuses.pop(0)
        if isinstance(item, ProviderError):
            raise item
        return item

    @asynccontextmanager
    async def _download(self) -> AsyncIterator[VideoDownload]:
        self.downloads += 1
        if self.download_errors:
            raise self.download_errors.pop(0)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(self.video), 1000):
                yield self.video[i : i + 1000]

        yield VideoDownload(200, "video/mp4", len(self.video), chunks())

    def download(
        self, job_id: str, generation_id: str
    ) -> AbstractAsyncContextManager[VideoDownload]:
        return self._download()

    async def cancel_job(self, job_id: str) -> bool:
        self.cancelled.append(job_id)
        return self.cancel_accepted

    async def aclose(self) -> None:
        return None


class MemoryPublisher:
    """Collects what a handler would publish; for unit tests of handlers."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.scheduled: list[tuple[float, str, str, dict[str, Any]]] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)

    async def schedule(
        self,
        *,
        delay_s: float,
        target_topic: str,
        key: str,
        payload: dict[str, Any],
        timer_id: uuid.UUID | None = None,
    ) -> None:
        self.scheduled.append((delay_s, target_topic, key, json.loads(json.dumps(payload))))

    def of_type(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, cls)]


class MemoryStorage:
    """A `VideoStorage` in a dict, with the same key rules and the same validation as the others.

    Nothing is kept of a put that fails; `read(key)` gives a stored video's bytes back.
    """

    def __init__(self, base_url: str = "memory://videos") -> None:
        self.base_url = base_url.rstrip("/")
        self._objects: dict[str, tuple[bytes, StoredObject]] = {}
        self.closed = False

    def url_for(self, key: str) -> str:
        return f"{self.base_url}/{validate_key(key)}"

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        expected_length: int | None = None,
        expected_seconds: float | None = None,
    ) -> StoredObject:
        check_content_type(content_type)
        url = self.url_for(key)
        buffer = io.BytesIO()
        video = await validated_copy(
            chunks, buffer, max_bytes=max_bytes, expected_length=expected_length
        )
        buffer.seek(0)
        # As the real backends do, before the video is kept.
        await check_playable(buffer, expected_seconds=expected_seconds)
        stored = StoredObject(
            key=key,
            url=url,
            size_bytes=video.size_bytes,
            sha256=video.sha256,
            content_type=video.content_type,
        )
        self._objects[key] = (buffer.getvalue(), stored)
        return stored

    async def stat(self, key: str) -> StoredObject | None:
        entry = self._objects.get(validate_key(key))
        return entry[1] if entry is not None else None

    def read(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None."""
        entry = self._objects.get(validate_key(key))
        return entry[0] if entry is not None else None

    def keys(self) -> list[str]:
        return sorted(self._objects)

    async def open_local(self, key: str) -> Path | None:
        validate_key(key)
        return None

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeSupabaseObject:
    data: bytes
    content_type: str
    #: The user metadata sent as `x-metadata` (SupabaseStorage keeps sha256 and size there).
    metadata: dict[str, object] = field(default_factory=dict)


class FakeSupabaseStorage:
    """Just enough of Supabase's storage-api, in memory, to run `SupabaseStorage` against.

    It is an httpx `MockTransport` handler: `fake.storage()` is a real `SupabaseStorage` whose
    requests land here, and `fake.requests` keeps them. Only the service key it was made with is
    accepted. Setting `fail_with` to a status makes every authorised request fail with it, with a
    message that quotes the key (as a careless gateway might), so tests can check it is scrubbed.
    """

    def __init__(
        self, service_key: str = "fake-service-role-key", *, bucket: str = DEFAULT_BUCKET
    ) -> None:
        self.service_key = service_key
        self.bucket = bucket
        self.objects: dict[str, FakeSupabaseObject] = {}
        self.requests: list[httpx.Request] = []
        self.fail_with: int | None = None

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def storage(self, url: str = "https://fake.supabase.co") -> SupabaseStorage:
        """A `SupabaseStorage` for this fake's bucket, talking to it."""
        return SupabaseStorage(
            url, SecretStr(self.service_key), self.bucket, transport=self.transport
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.service_key}":
            # storage-api answers auth failures with 400 and the real status in the body.
            return httpx.Response(400, json={"statusCode": "403", "error": "Unauthorized"})
        if self.fail_with:
            return httpx.Response(
                self.fail_with,
                json={"error": "InternalError", "message": f"bad key {self.service_key}"},
            )
        path = request.url.path
        upload = f"/storage/v1/object/{self.bucket}/"
        # storage3 asks /object/info/{bucket}/...; older clients the authenticated variant.
        infos = (
            f"/storage/v1/object/info/authenticated/{self.bucket}/",
            f"/storage/v1/object/info/{self.bucket}/",
        )
        download = f"/storage/v1/object/authenticated/{self.bucket}/"
        if request.method in ("POST", "PUT") and path.startswith(upload):
            return self._upload(request, path.removeprefix(upload))
        for info in infos:
            if request.method == "GET" and path.startswith(info):
                return self._info(path.removeprefix(info))
        if request.method == "GET" and path.startswith(download):
            found = self.objects.get(path.removeprefix(download))
            if found is None:
                return httpx.Response(404, json={"error": "not_found"})
            return httpx.Response(
                200, content=found.data, headers={"content-type": found.content_type}
            )
        return httpx.Response(404, json={"error": "not_found"})

    def _upload(self, request: httpx.Request, name: str) -> httpx.Response:
        if name in self.objects and request.headers.get("x-upsert") != "true":
            return httpx.Response(400, json={"statusCode": "409", "error": "Duplicate"})
        content_type = request.headers.get("content-type", "application/octet-stream")
        if content_type.startswith("multipart/form-data"):
            # The supabase client (storage3) sends a form: cacheControl, metadata, the file.
            data, content_type, metadata = _form_upload(content_type, request.read())
        else:  # a raw body, the user metadata base64 in x-metadata (the REST API's other form)
            raw_meta = request.headers.get("x-metadata")
            metadata = json.loads(base64.b64decode(raw_meta)) if raw_meta else {}
            data = request.read()
        self.objects[name] = FakeSupabaseObject(data, content_type, metadata)
        return httpx.Response(200, json={"Key": f"{self.bucket}/{name}", "Id": str(uuid.uuid4())})

    def _info(self, name: str) -> httpx.Response:
        found = self.objects.get(name)
        if found is None:
            # Older storage-api versions answer a missing object like this, not with a 404.
            return httpx.Response(
                400,
                json={"statusCode": "404", "error": "not_found", "message": "Object not found"},
            )
        return httpx.Response(
            200,
            json={
                "name": name,
                "size": len(found.data),
                "content_type": found.content_type,
                "metadata": found.metadata,
            },
        )


def _form_upload(content_type: str, body: bytes) -> tuple[bytes, str, dict[str, object]]:
    """The file, its content type and the user metadata of a multipart/form-data upload."""
    form = BytesParser(policy=email_policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    data, file_type, metadata = b"", "application/octet-stream", {}
    for part in form.iter_parts():
        field_name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        if field_name == "file":
            data, file_type = raw, part.get_content_type()
        elif field_name == "metadata":
            metadata = json.loads(raw or b"{}")
    return data, file_type, metadata
