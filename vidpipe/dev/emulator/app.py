"""The emulator's Starlette app: the provider protocols plus the /_emulator admin routes.

Admin (same auth as the APIs, except health):
    GET  /_emulator/health   -> {"status": "ok"}
    GET  /_emulator/config   -> current config (api_key masked)
    POST /_emulator/config   -> partial update, e.g. {"download": "missing"}; 422 on bad fields
    POST /_emulator/reset    -> forget all jobs and counters
    GET  /_emulator/stats    -> counters, e.g. {"azure.jobs_created": 3, ...}
    GET  /_emulator/sample.mp4 -> the sample video, without auth (as a pre-signed blob URL
                                 serves it: a target for the "redirect" download mode)
    GET  /.well-known/jwks.json -> the public key fal's webhooks are signed with, without auth
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidpipe.dev.emulator import azure, fal, gemini, openai_videos, replicate, runway
from vidpipe.dev.emulator.common import bytes_response, error_response, hooks_of, state_of
from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.faults import FaultMiddleware
from vidpipe.dev.emulator.state import EmulatorState
from vidpipe.dev.emulator.webhooks import JWKS_PATH, HookSender

__all__ = ["create_app"]

log = logging.getLogger("vidpipe.dev.emulator")


class RequestIdMiddleware:
    """Stamp every response with request ids, as both providers do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        azure_style = str(scope.get("path", "")).startswith("/openai/")
        request_id = str(uuid.uuid4()) if azure_style else "req_" + secrets.token_hex(16)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if azure_style:
                    headers.append((b"apim-request-id", request_id.encode()))
                message["headers"] = headers
                log.debug(
                    "%s %s -> %s", scope.get("method"), scope.get("path"), message.get("status")
                )
            await send(message)

        await self.app(scope, receive, send_with_id)


def _admin_auth(request: Request) -> Response | None:
    if state_of(request).authenticate(request.headers) is None:
        return error_response(401, "Invalid or missing API key.", code="invalid_api_key")
    return None


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def get_config(request: Request) -> Response:
    denied = _admin_auth(request)
    if denied is not None:
        return denied
    return JSONResponse(state_of(request).config.public_dict())


async def update_config(request: Request) -> Response:
    denied = _admin_auth(request)
    if denied is not None:
        return denied
    state = state_of(request)
    try:
        changes = json.loads(await request.body() or b"{}")
    except ValueError:
        return error_response(400, "The body must be a JSON object.", code="invalid_json")
    if not isinstance(changes, dict):
        return error_response(400, "The body must be a JSON object.", code="invalid_json")
    try:
        config = state.config.updated(changes)
    except ValidationError as exc:
        # Report field names and reasons only: input values could include a new key.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(422, problems, code="invalid_config")
    state.set_config(config)
    log.info("emulator config updated: %s", ", ".join(sorted(changes)))
    return JSONResponse(config.public_dict())


async def reset(request: Request) -> Response:
    denied = _admin_auth(request)
    if denied is not None:
        return denied
    state_of(request).reset()
    return JSONResponse({"status": "reset"})


async def stats(request: Request) -> Response:
    denied = _admin_auth(request)
    if denied is not None:
        return denied
    return JSONResponse(dict(state_of(request).stats))


async def sample_video(request: Request) -> Response:
    state = state_of(request)
    data = await state.sample_video()
    return bytes_response(request, data, media_type="video/mp4", last_modified=state.clock())


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return error_response(
            404,
            "Resource not found.",
            code="404" if request.url.path.startswith("/openai/") else None,
        )
    if status == 405:
        return error_response(
            405, f"Method {request.method} is not allowed here.", code="method_not_allowed"
        )
    return error_response(status, "Request failed.", code=str(status))


async def jwks(request: Request) -> Response:
    return JSONResponse(hooks_of(request).jwks())


def create_app(config: EmulatorConfig | EmulatorState | None = None) -> Starlette:
    """Build the app around a config (or an existing state, to share it with a test)."""
    state = (
        config if isinstance(config, EmulatorState) else EmulatorState(config or EmulatorConfig())
    )
    hooks = HookSender(state)
    app = Starlette(
        routes=[
            *azure.routes(),
            *openai_videos.routes("/v1"),
            *openai_videos.routes("/openai/v1"),
            *replicate.routes(),
            *gemini.routes(),
            *runway.routes(),
            Route("/_emulator/health", health, methods=["GET"]),
            Route("/_emulator/config", get_config, methods=["GET"]),
            Route("/_emulator/config", update_config, methods=["POST"]),
            Route("/_emulator/reset", reset, methods=["POST"]),
            Route("/_emulator/stats", stats, methods=["GET"]),
            Route("/_emulator/sample.mp4", sample_video, methods=["GET", "HEAD"]),
            Route(JWKS_PATH, jwks, methods=["GET"]),
            # Last: fal's queue sits at the root and its submit takes any POST path left over.
            *fal.routes(),
        ],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.emulator = state
    app.state.hooks = hooks
    # Added before RequestIdMiddleware, so inside it: an injected fault still carries the ids.
    app.add_middleware(FaultMiddleware, state=state, seed=state.config.seed)
    app.add_middleware(RequestIdMiddleware)
    return app
