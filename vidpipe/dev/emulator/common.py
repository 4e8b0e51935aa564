"""HTTP plumbing shared by both protocols: errors, auth, bodies, and byte responses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import httpx
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from vidpipe.dev.emulator.state import EmulatorState
from vidpipe.dev.emulator.webhooks import HookSender
from vidpipe.errors import BodyError

__all__ = [
    "CHUNK_SIZE",
    "Body",
    "BodyError",
    "Upload",
    "bytes_response",
    "drop_connection",
    "error_response",
    "hooks_of",
    "rate_limit_headers",
    "read_body",
    "state_of",
]

CHUNK_SIZE = 16 * 1024


def hooks_of(request: Request) -> HookSender:
    """The app's webhook sender (vidpipe/dev/emulator/webhooks.py)."""
    hooks: HookSender = request.app.state.hooks
    return hooks


def state_of(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def error_response(
    status: int,
    message: str,
    *,
    code: str | None,
    type_: str = "invalid_request_error",
    param: str | None = None,
    headers: dict[str, str] | None = None,
    inner_error: dict[str, Any] | None = None,
) -> JSONResponse:
    """The `{"error": {...}}` body both protocols use (Azure's content filter adds inner_error)."""
    error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    if inner_error is not None:
        error["inner_error"] = inner_error
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class _DroppedConnection(Response):
    """Start the answer, then break the connection: the client never reads the job it created."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [*self.raw_headers, (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
        # Served by uvicorn, the connection closes with the body short of its length (the
        # client reads a RemoteProtocolError); served in process by httpx's ASGITransport, this
        # error is what the client sees.
        raise httpx.RemoteProtocolError("emulator: connection dropped after create")


def drop_connection() -> Response:
    """`[emulator:drop_after_create]`: the job exists, its answer is lost on the way."""
    return _DroppedConnection(headers={"content-type": "application/json"})


def rate_limit_headers(real_seconds: float, *, with_ms: bool) -> dict[str, str]:
    headers = {"retry-after": str(max(1, math.ceil(real_seconds)))}
    if with_ms:
        headers["retry-after-ms"] = str(max(1, math.ceil(real_seconds * 1000)))
    return headers


@dataclass
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Body:
    fields: dict[str, Any] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)
    multipart: bool = False

    def fingerprint(self) -> str:
        """Hash of the request content, to tell an idempotent replay from a key reuse."""
        digest = hashlib.sha256(json.dumps(self.fields, sort_keys=True, default=str).encode())
        for upload in self.files:
            digest.update(upload.field.encode() + b"\0" + upload.filename.encode() + b"\0")
            digest.update(hashlib.sha256(upload.data).digest())
        return digest.hexdigest()


async def read_body(request: Request, *, max_files: int = 16) -> Body:
    """JSON or multipart/form-data, the two encodings the create endpoints accept."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        body = Body(multipart=True)
        try:
            form = await request.form(max_files=max_files, max_fields=100)
        except Exception as exc:  # malformed multipart comes from the client: a 400
            raise BodyError("could not parse the multipart body") from exc
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    body.files.append(
                        Upload(
                            field=key,
                            filename=value.filename or "",
                            content_type=value.content_type or "application/octet-stream",
                            data=data,
                        )
                    )
                else:
                    body.fields[key] = value
        finally:
            await form.close()
        return body
    raw = await request.body()
    if not raw:
        return Body()
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise BodyError("the request body is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise BodyError("the request body must be a JSON object")
    return Body(fields=parsed)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(start, end inclusive) for one satisfiable range; None: send it all; False: 416."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:  # multiple ranges or other units: serving the whole body is allowed
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return False
    return start, end


# A paced body goes in at least this many pieces, so a client is caught mid-read.
_PACED_PIECES = 8


async def _chunks(data: bytes, pace_s: float = 0.0) -> AsyncIterator[bytes]:
    view = memoryview(data)
    size = CHUNK_SIZE if pace_s <= 0 else max(1, min(CHUNK_SIZE, -(-len(data) // _PACED_PIECES)))
    pieces = max(1, -(-len(data) // size))
    for offset in range(0, len(data), size):
        if pace_s > 0:
            await asyncio.sleep(pace_s / pieces)
        yield bytes(view[offset : offset + size])


def bytes_response(
    request: Request,
    data: bytes,
    *,
    media_type: str,
    last_modified: float,
    extra_headers: dict[str, str] | None = None,
    pace_s: float = 0.0,
) -> Response:
    """Stream `data` in chunks with length, validators, HEAD and single-range support; with
    `pace_s`, the body is spread over that many seconds (a slow download)."""
    headers = {
        "accept-ranges": "bytes",
        "last-modified": formatdate(last_modified, usegmt=True),
        "etag": '"' + hashlib.sha256(data).hexdigest()[:32] + '"',
        **(extra_headers or {}),
    }
    status = 200
    body = data
    wanted = _byte_range(request.headers.get("range"), len(data))
    if wanted is False:
        headers["content-range"] = f"bytes */{len(data)}"
        return Response(status_code=416, headers=headers)
    if isinstance(wanted, tuple):
        start, end = wanted
        body = data[start : end + 1]
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{len(data)}"
    headers["content-length"] = str(len(body))
    if request.method == "HEAD":
        # Starlette keeps an explicit content-length; the server sends no body for HEAD.
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        _chunks(body, pace_s), status_code=status, headers=headers, media_type=media_type
    )
