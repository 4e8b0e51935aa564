"""An emulator of Supabase Storage's HTTP API (storage-api), for tests and local development.

This is NOT Supabase: it is a small Starlette app that answers the calls the official `supabase`
Python client (`storage3`) and vidpipe's `SupabaseStorage` make, as Supabase's published API
reference and its TUS guide describe them, so both run against it unchanged. It covers buckets
(create, get, list, update, empty, delete), uploads (multipart or raw body, `x-upsert`, user
metadata), downloads (authenticated, public, signed URL), object info, list, remove, signed
URLs, and resumable uploads (TUS 1.0.0 create, PATCH, HEAD). Not emulated: row-level policies on
objects (only the service key it was made with is accepted), image transforms, S3, copy/move.

Objects live as files under a temp folder, bodies are streamed to and from disk, so memory stays
flat whatever the object size. Signed URLs carry an HMAC token with an expiry (Supabase's is a
JWT; clients treat both as opaque).

Run it with `StorageEmulator(service_key)` as a context manager: a uvicorn server in a
background thread on a free loopback port; `.url` is what `create_client(url, key)` takes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

__all__ = ["StorageEmulator", "create_storage_app"]

_PREFIX = "/storage/v1"
_TUS_VERSION = "1.0.0"
_COPY_BLOCK = 1024 * 1024


def _error(status: int, error: str, message: str, *, http: int | None = None) -> JSONResponse:
    # storage-api answers many failures with HTTP 400 and the real status in the body.
    return JSONResponse(
        {"statusCode": str(status), "error": error, "message": message},
        status_code=http if http is not None else status,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class _Object:
    path: Path
    size: int
    content_type: str
    cache_control: str
    etag: str
    user_metadata: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)


@dataclass
class _Bucket:
    id: str
    public: bool
    file_size_limit: int | None = None
    allowed_mime_types: list[str] | None = None
    created_at: str = field(default_factory=_now)
    objects: dict[str, _Object] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.id,
            "owner": "",
            "public": self.public,
            "file_size_limit": self.file_size_limit,
            "allowed_mime_types": self.allowed_mime_types,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }


@dataclass
class _Upload:
    """A TUS upload in progress: bytes so far in `part`, the object made when it is whole."""

    bucket: str
    name: str
    length: int
    content_type: str
    cache_control: str
    user_metadata: dict[str, Any]
    upsert: bool
    part: Path
    offset: int = 0


class _State:
    def __init__(self, root: Path, service_key: str) -> None:
        self.root = root
        self.service_key = service_key
        self.signing_key = secrets.token_bytes(32)
        self.buckets: dict[str, _Bucket] = {}
        self.uploads: dict[str, _Upload] = {}
        self.lock = asyncio.Lock()
        self.requests: list[tuple[str, str]] = []

    def sign(self, bucket: str, name: str, expires: int) -> str:
        message = f"{bucket}/{name}:{expires}".encode()
        mac = hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()
        return f"{expires}.{mac}"

    def token_ok(self, bucket: str, name: str, token: str) -> str | None:
        """None when `token` opens `bucket/name` now, else why not."""
        expires_text, _, _mac = token.partition(".")
        if not expires_text.isdigit():
            return "invalid signature"
        if not hmac.compare_digest(self.sign(bucket, name, int(expires_text)), token):
            return "invalid signature"
        if int(expires_text) < time.time():
            return "jwt expired"
        return None

    def blob_path(self) -> Path:
        return self.root / "blobs" / uuid.uuid4().hex


def _authorised(state: _State, request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    return hmac.compare_digest(auth, f"Bearer {state.service_key}")


async def _spool_body(request: Request, target: Path, limit: int | None) -> int | None:
    """Stream the raw body into `target`; its size, or None past `limit`."""
    size = 0
    with await asyncio.to_thread(open, target, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if limit is not None and size > limit:
                return None
            await asyncio.to_thread(out.write, chunk)
    return size


async def _copy_upload(upload: UploadFile, target: Path, limit: int | None) -> int | None:
    size = 0
    with await asyncio.to_thread(open, target, "wb") as out:
        while block := await upload.read(_COPY_BLOCK):
            size += len(block)
            if limit is not None and size > limit:
                return None
            await asyncio.to_thread(out.write, block)
    return size


def _etag(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as source:
        while block := source.read(_COPY_BLOCK):
            digest.update(block)
    return f'"{digest.hexdigest()}"'


def create_storage_app(state: _State) -> Starlette:
    """The Starlette app of the emulator, over `state`."""

    def bucket_of(name: str) -> _Bucket | None:
        return state.buckets.get(name)

    def not_found(what: str = "Object not found") -> JSONResponse:
        return _error(404, "not_found", what, http=400)

    async def guarded(request: Request) -> Response:
        state.requests.append((request.method, request.url.path))
        path = request.url.path.removeprefix(_PREFIX)
        public = path.startswith(("/object/public/", "/object/sign/")) and request.method in (
            "GET",
            "HEAD",
        )
        if not public and not _authorised(state, request):
            return _error(403, "Unauthorized", "invalid signature", http=400)
        return await dispatch(request, path)

    async def dispatch(request: Request, path: str) -> Response:
        method = request.method
        if path in ("/bucket", "/bucket/"):
            return await (create_bucket(request) if method == "POST" else list_buckets())
        if path.startswith("/bucket/"):
            rest = path.removeprefix("/bucket/")
            if rest.endswith("/empty") and method == "POST":
                return empty_bucket(rest.removesuffix("/empty"))
            return await one_bucket(request, rest)
        if path.startswith("/upload/resumable"):
            return await tus(request, path.removeprefix("/upload/resumable").strip("/"))
        for prefix, handler in (
            ("/object/public/", public_object),
            ("/object/authenticated/", download),
            ("/object/info/authenticated/", info),
            ("/object/info/public/", info),
            ("/object/info/", info),
            ("/object/list/", list_objects),
        ):
            if path.startswith(prefix):
                return await handler(request, path.removeprefix(prefix))
        if path.startswith("/object/sign/"):
            rest = path.removeprefix("/object/sign/")
            if method == "GET":
                return await signed_download(request, rest)
            return await sign(request, rest)
        if path.startswith("/object/"):
            rest = path.removeprefix("/object/")
            if method in ("POST", "PUT"):
                return await upload(request, rest)
            if method == "DELETE":
                return await remove(request, rest)
            if method in ("GET", "HEAD"):
                return await download(request, rest)
        return _error(404, "not_found", "Route not found", http=404)

    def split(rest: str) -> tuple[str, str]:
        bucket, _, name = rest.partition("/")
        return bucket, name

    async def create_bucket(request: Request) -> Response:
        body = await request.json()
        bucket_id = body.get("id") or body.get("name")
        if not bucket_id:
            return _error(400, "InvalidRequest", "bucket name is required")
        if bucket_id in state.buckets:
            return _error(409, "Duplicate", "The resource already exists", http=400)
        state.buckets[bucket_id] = _Bucket(
            bucket_id,
            bool(body.get("public", False)),
            body.get("file_size_limit"),
            body.get("allowed_mime_types"),
        )
        return JSONResponse({"name": bucket_id})

    async def list_buckets() -> Response:
        return JSONResponse([b.as_json() for b in state.buckets.values()])

    async def one_bucket(request: Request, bucket_id: str) -> Response:
        bucket = bucket_of(bucket_id)
        if bucket is None:
            return _error(404, "Bucket not found", "Bucket not found", http=400)
        if request.method == "GET":
            return JSONResponse(bucket.as_json())
        if request.method == "PUT":
            body = await request.json()
            bucket.public = bool(body.get("public", bucket.public))
            bucket.file_size_limit = body.get("file_size_limit", bucket.file_size_limit)
            bucket.allowed_mime_types = body.get("allowed_mime_types", bucket.allowed_mime_types)
            return JSONResponse({"message": "Successfully updated"})
        if request.method == "DELETE":
            if bucket.objects:
                return _error(409, "InvalidRequest", "The bucket you tried to delete is not empty")
            del state.buckets[bucket_id]
            return JSONResponse({"message": "Successfully deleted"})
        return _error(405, "InvalidRequest", "method not allowed", http=405)

    def empty_bucket(bucket_id: str) -> Response:
        bucket = bucket_of(bucket_id)
        if bucket is None:
            return _error(404, "Bucket not found", "Bucket not found", http=400)
        for obj in bucket.objects.values():
            obj.path.unlink(missing_ok=True)
        bucket.objects.clear()
        return JSONResponse({"message": "Successfully emptied"})

    def put_object(bucket: _Bucket, name: str, obj: _Object) -> None:
        old = bucket.objects.get(name)
        if old is not None:
            obj.created_at = old.created_at
            old.path.unlink(missing_ok=True)
        bucket.objects[name] = obj

    async def upload(request: Request, rest: str) -> Response:
        bucket_id, name = split(rest)
        bucket = bucket_of(bucket_id)
        if bucket is None:
            return _error(404, "Bucket not found", "Bucket not found", http=400)
        if not name:
            return _error(400, "InvalidKey", "object name is required")
        upsert = request.method == "PUT" or request.headers.get("x-upsert") == "true"
        if request.method == "PUT" and name not in bucket.objects:
            return not_found()
        if not upsert and name in bucket.objects:
            return _error(409, "Duplicate", "The resource already exists", http=400)
        blob = state.blob_path()
        blob.parent.mkdir(parents=True, exist_ok=True)
        content_type = request.headers.get("content-type", "application/octet-stream")
        cache_control = request.headers.get("cache-control", "no-cache")
        user_metadata: dict[str, Any] = {}
        if raw := request.headers.get("x-metadata"):
            user_metadata = json.loads(base64.b64decode(raw))
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_part_size=10 * 1024 * 1024) as form:
                file = form.get("file")
                if not isinstance(file, UploadFile):
                    return _error(400, "InvalidRequest", "the form has no file")
                size = await _copy_upload(file, blob, bucket.file_size_limit)
                content_type = file.content_type or "application/octet-stream"
                if isinstance(cache := form.get("cacheControl"), str):
                    cache_control = f"max-age={cache}" if cache.isdigit() else cache
                if isinstance(meta := form.get("metadata"), str):
                    user_metadata = json.loads(meta)
        else:
            size = await _spool_body(request, blob, bucket.file_size_limit)
        if size is None:
            blob.unlink(missing_ok=True)
            return _error(413, "Payload too large", "The object exceeded the maximum allowed size")
        obj = _Object(blob, size, content_type, cache_control, _etag(blob), user_metadata)
        async with state.lock:
            if not upsert and name in bucket.objects:  # another upload won meanwhile
                blob.unlink(missing_ok=True)
                return _error(409, "Duplicate", "The resource already exists", http=400)
            put_object(bucket, name, obj)
        return JSONResponse({"Key": f"{bucket_id}/{name}", "Id": obj.id})

    def object_of(rest: str) -> tuple[_Bucket | None, str, _Object | None]:
        bucket_id, name = split(rest)
        bucket = bucket_of(bucket_id)
        return bucket, name, bucket.objects.get(name) if bucket is not None else None

    def serve(obj: _Object, request: Request) -> Response:
        headers = {"etag": obj.etag, "cache-control": obj.cache_control}
        if request.method == "HEAD":
            headers["content-length"] = str(obj.size)
            return Response(status_code=200, headers=headers, media_type=obj.content_type)
        return FileResponse(obj.path, media_type=obj.content_type, headers=headers)

    async def download(request: Request, rest: str) -> Response:
        _bucket, _name, obj = object_of(rest)
        return serve(obj, request) if obj is not None else not_found()

    async def public_object(request: Request, rest: str) -> Response:
        bucket, _name, obj = object_of(rest)
        if bucket is None or not bucket.public or obj is None:
            return not_found()
        return serve(obj, request)

    async def info(request: Request, rest: str) -> Response:
        bucket, name, obj = object_of(rest)
        if bucket is None or obj is None:
            return not_found()
        return JSONResponse(
            {
                "id": obj.id,
                "name": name,
                "bucket_id": bucket.id,
                "version": obj.id,
                "size": obj.size,
                "content_type": obj.content_type,
                "cache_control": obj.cache_control,
                "etag": obj.etag,
                "metadata": obj.user_metadata,
                "last_modified": obj.updated_at,
                "created_at": obj.created_at,
            }
        )

    async def sign(request: Request, rest: str) -> Response:
        body = await request.json()
        expires_in = int(body.get("expiresIn", 0))
        if expires_in < 1:
            return _error(400, "InvalidRequest", "expiresIn must be a positive number")
        expires = int(time.time()) + expires_in
        bucket_id, name = split(rest)
        bucket = bucket_of(bucket_id)
        if bucket is None:
            return _error(404, "Bucket not found", "Bucket not found", http=400)

        def url(object_name: str) -> str:
            token = state.sign(bucket_id, object_name, expires)
            return f"/object/sign/{bucket_id}/{quote(object_name)}?token={token}"

        if name:  # one object
            if name not in bucket.objects:
                return not_found()
            return JSONResponse({"signedURL": url(name)})
        paths = body.get("paths") or []
        return JSONResponse(
            [
                {"path": p, "signedURL": url(p), "error": None}
                if p in bucket.objects
                else {"path": p, "signedURL": None, "error": "Either the object does not exist"}
                for p in paths
            ]
        )

    async def signed_download(request: Request, rest: str) -> Response:
        bucket_id, name = split(rest)
        token = request.query_params.get("token", "")
        why_not = state.token_ok(bucket_id, name, token)
        if why_not is not None:
            return _error(400, "InvalidJWT", why_not, http=400)
        _bucket, _name, obj = object_of(rest)
        return serve(obj, request) if obj is not None else not_found()

    async def remove(request: Request, bucket_id: str) -> Response:
        bucket = bucket_of(bucket_id.strip("/"))
        if bucket is None:
            return _error(404, "Bucket not found", "Bucket not found", http=400)
        body = await request.json()
        removed = []
        async with state.lock:
            for name in body.get("prefixes", []):
                obj = bucket.objects.pop(name, None)
                if obj is not None:
                    obj.path.unlink(missing_ok=True)
                    removed.append({"name": name, "bucket_id": bucket.id, "id": obj.id})
        return JSONResponse(removed)

    async def list_objects(request: Request, bucket_id: str) -> Response:
        bucket = bucket_of(bucket_id.strip("/"))
        if bucket is None:
            return _error(404, "Bucket not found", "Bucket not found", http=400)
        body = await request.json()
        prefix = (body.get("prefix") or "").strip("/")
        search = body.get("search") or ""
        limit, offset = int(body.get("limit", 100)), int(body.get("offset", 0))
        sort = body.get("sortBy") or {}
        base = f"{prefix}/" if prefix else ""
        folders: set[str] = set()
        files: list[dict[str, Any]] = []
        for name, obj in bucket.objects.items():
            if not name.startswith(base):
                continue
            head, slash, _tail = name.removeprefix(base).partition("/")
            if not head.startswith(search):
                continue
            if slash:
                folders.add(head)
                continue
            files.append(
                {
                    "name": head,
                    "id": obj.id,
                    "updated_at": obj.updated_at,
                    "created_at": obj.created_at,
                    "last_accessed_at": obj.updated_at,
                    "metadata": {
                        "size": obj.size,
                        "mimetype": obj.content_type,
                        "eTag": obj.etag,
                        "cacheControl": obj.cache_control,
                        "lastModified": obj.updated_at,
                        "contentLength": obj.size,
                        "httpStatusCode": 200,
                    },
                }
            )
        entries: list[dict[str, Any]] = [
            {"name": f, "id": None, "updated_at": None, "created_at": None, "metadata": None}
            for f in sorted(folders)
        ]
        column = sort.get("column", "name")
        files.sort(key=lambda e: str(e.get(column) or ""), reverse=sort.get("order") == "desc")
        entries += files
        return JSONResponse(entries[offset : offset + limit])

    async def tus(request: Request, upload_id: str) -> Response:
        tus_headers = {"Tus-Resumable": _TUS_VERSION}
        if request.method == "OPTIONS":
            return Response(
                status_code=204,
                headers={**tus_headers, "Tus-Version": _TUS_VERSION, "Tus-Extension": "creation"},
            )
        if request.headers.get("tus-resumable") != _TUS_VERSION:
            return Response(status_code=412, headers={"Tus-Version": _TUS_VERSION})
        if request.method == "POST" and not upload_id:
            return await tus_create(request, tus_headers)
        upload = state.uploads.get(upload_id)
        if upload is None:
            return Response(status_code=404, headers=tus_headers)
        if request.method == "HEAD":
            return Response(
                status_code=200,
                headers={
                    **tus_headers,
                    "Upload-Offset": str(upload.offset),
                    "Upload-Length": str(upload.length),
                    "Cache-Control": "no-store",
                },
            )
        if request.method == "PATCH":
            return await tus_patch(request, upload_id, upload, tus_headers)
        if request.method == "DELETE":
            state.uploads.pop(upload_id, None)
            upload.part.unlink(missing_ok=True)
            return Response(status_code=204, headers=tus_headers)
        return Response(status_code=405, headers=tus_headers)

    async def tus_create(request: Request, tus_headers: dict[str, str]) -> Response:
        length_text = request.headers.get("upload-length", "")
        if not length_text.isdigit():
            return Response(status_code=400, headers=tus_headers)
        meta: dict[str, str] = {}
        for pair in request.headers.get("upload-metadata", "").split(","):
            key, _, value = pair.strip().partition(" ")
            if key:
                meta[key] = base64.b64decode(value).decode() if value else ""
        bucket = bucket_of(meta.get("bucketName", ""))
        name = meta.get("objectName", "")
        if bucket is None or not name:
            return _error(404, "Bucket not found", "Bucket not found", http=400)
        upsert = request.headers.get("x-upsert") == "true"
        if not upsert and name in bucket.objects:
            return _error(409, "Duplicate", "The resource already exists", http=409)
        length = int(length_text)
        if bucket.file_size_limit is not None and length > bucket.file_size_limit:
            return _error(413, "Payload too large", "The object exceeded the maximum allowed size")
        upload_id = base64.urlsafe_b64encode(f"{bucket.id}/{name}/{uuid.uuid4()}".encode()).decode()
        part = state.blob_path()
        part.parent.mkdir(parents=True, exist_ok=True)
        part.touch()
        cache = meta.get("cacheControl", "3600")
        state.uploads[upload_id] = _Upload(
            bucket.id,
            name,
            length,
            meta.get("contentType", "application/octet-stream"),
            f"max-age={cache}" if cache.isdigit() else cache,
            json.loads(meta["metadata"]) if meta.get("metadata") else {},
            upsert,
            part,
        )
        location = f"{request.base_url}".rstrip("/") + f"{_PREFIX}/upload/resumable/{upload_id}"
        return Response(status_code=201, headers={**tus_headers, "Location": location})

    async def tus_patch(
        request: Request, upload_id: str, upload: _Upload, tus_headers: dict[str, str]
    ) -> Response:
        if request.headers.get("content-type") != "application/offset+octet-stream":
            return Response(status_code=415, headers=tus_headers)
        if request.headers.get("upload-offset") != str(upload.offset):
            return Response(status_code=409, headers=tus_headers)
        with await asyncio.to_thread(open, upload.part, "ab") as out:
            try:
                async for chunk in request.stream():
                    if upload.offset + len(chunk) > upload.length:
                        return Response(status_code=413, headers=tus_headers)
                    await asyncio.to_thread(out.write, chunk)
                    upload.offset += len(chunk)
            finally:
                # What arrived before a cut connection counts: HEAD reports it, PATCH resumes.
                out.flush()
        if upload.offset == upload.length:
            bucket = bucket_of(upload.bucket)
            if bucket is None:
                return Response(status_code=404, headers=tus_headers)
            obj = _Object(
                upload.part,
                upload.length,
                upload.content_type,
                upload.cache_control,
                _etag(upload.part),
                upload.user_metadata,
            )
            async with state.lock:
                if not upload.upsert and upload.name in bucket.objects:
                    return _error(409, "Duplicate", "The resource already exists", http=409)
                put_object(bucket, upload.name, obj)
                state.uploads.pop(upload_id, None)
        return Response(
            status_code=204, headers={**tus_headers, "Upload-Offset": str(upload.offset)}
        )

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[Route(_PREFIX + "/{path:path}", guarded, methods=methods)])


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the host owns the signals
        return None


class StorageEmulator:
    """The storage emulator in a background thread; `url` is the project URL to give clients.

    `buckets` maps bucket names to whether they are public; they exist from the start.
    """

    def __init__(
        self, service_key: str, *, buckets: dict[str, bool] | None = None, root: Path | None = None
    ) -> None:
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="vidpipe-storage-"))
        self.state = _State(self.root, service_key)
        for name, public in (buckets or {}).items():
            self.state.buckets[name] = _Bucket(name, public)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("StorageEmulator is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served, in order."""
        return self.state.requests

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(create_storage_app(self.state), log_level="warning", lifespan="off")
        self._server = _Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="storage-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the storage emulator did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
