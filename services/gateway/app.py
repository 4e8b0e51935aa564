"""Gateway wiring: the Starlette app (routes, keys, limits, problem+json) and its OpenAPI document.

HTTP POST /v1/generations -> {prefix}generation.requested; the reads come from the records.
HTTP POST /v1/generations/{id}/cancel -> {prefix}cancel.requested.
The logic is in handlers.py; this module parses HTTP, authenticates and renders.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.events import GenerationRequested
from services.gateway.handlers import (
    ENVELOPE_FIELDS,
    STATUSES,
    Accepted,
    ApiKeys,
    DeadLetterSummary,
    GatewayDeps,
    Generation,
    GenerationPage,
    HookReceipt,
    RateLimiter,
    RedriveRequest,
    RedriveResult,
    Sessions,
    StagesView,
    TimelineEvent,
    accept_generation,
    create_gateway_tables,
    dead_letter_summary,
    events_after,
    get_generation,
    list_generations,
    receive_provider_hook,
    redrive,
    request_cancel,
    stages_overview,
    video_source,
)
from vidpipe.bus.admin import ensure_all_topics
from vidpipe.bus.upstream import RequestPublisher
from vidpipe.db.tables import open_engine
from vidpipe.errors import GatewayRefusal
from vidpipe.metrics import Metrics
from vidpipe.policy.projection import TERMINAL_STATUSES
from vidpipe.providers import configured_providers, max_concurrent_jobs, open_hook_verifiers
from vidpipe.providers.webhooks import MAX_HOOK_BYTES
from vidpipe.settings import Settings

__all__ = ["SESSION_COOKIE", "create_app", "openapi_document"]

log = structlog.get_logger("vidpipe.gateway")

DASHBOARD = Path(__file__).parent / "dashboard"
SESSION_COOKIE = "vidpipe_session"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$")
_PROVIDER = re.compile(r"^[a-z0-9-]{1,64}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
PROBLEM = "application/problem+json"
_MAX_SEQ = 2**31 - 1


# --- errors as RFC 9457 problem details -------------------------------------------------------


def problem(
    status: int, slug: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"urn:vidpipe:problem:{slug}",
        "title": slug.replace("-", " "),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


async def _on_refused(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayRefusal)
    extra = dict(exc.extra)
    headers = extra.pop("headers", None)
    return problem(exc.status, exc.slug, exc.detail, headers, **extra)


async def _on_invalid(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    # The field and what is wrong with it; never the value (it may be anything a caller sent).
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return problem(422, "validation", "the request breaks the contract", errors=errors)


async def _on_http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, "http", str(exc.detail), dict(exc.headers or {}) or None)


async def _on_crash(_request: Request, exc: Exception) -> Response:
    log.error("gateway_error", error=type(exc).__name__, exc_info=exc)
    return problem(500, "internal", "the gateway failed; the error is in its log")


# --- keys, limits, bodies ---------------------------------------------------------------------


def _authenticate(request: Request) -> str:
    """The caller's key name (bearer, X-API-Key or the dashboard's session cookie), rate
    limited; GatewayRefusal 401/429 before anything is read or written."""
    state = request.app.state
    keys: ApiKeys = state.keys
    name: str | None = None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        name = keys.identify(token.strip())
    elif "x-api-key" in request.headers:
        name = keys.identify(request.headers["x-api-key"])
    elif SESSION_COOKIE in request.cookies:
        name = state.sessions.who(request.cookies[SESSION_COOKIE])
        origin = request.headers.get("origin")
        if name and request.method not in ("GET", "HEAD") and origin is not None:
            # The cookie is SameSite=Strict; a foreign Origin on a write is refused anyway.
            host = origin.split("://", 1)[-1]
            if host != request.headers.get("host"):
                raise GatewayRefusal(403, "cross-origin", "a write from another origin")
    if name is None:
        raise GatewayRefusal(
            401,
            "unauthorized",
            "a valid API key is needed (Authorization: Bearer KEY)",
            headers={"WWW-Authenticate": 'Bearer realm="vidpipe"'},
        )
    wait = state.limiter.take(name)
    if wait > 0:
        raise GatewayRefusal(
            429,
            "rate-limited",
            "too many requests for this key",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    return name


async def _json_body(request: Request) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise GatewayRefusal(415, "unsupported-media-type", "send application/json")
    body = await _bounded_body(request, request.app.state.max_body)
    try:
        return json.loads(body)
    except ValueError:
        raise GatewayRefusal(400, "not-json", "the body is not JSON") from None


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body as sent, refused (413) as soon as it is longer than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise GatewayRefusal(413, "too-large", f"the body may hold {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise GatewayRefusal(413, "too-large", f"the body may hold {limit} bytes")
    return bytes(body)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GatewayRefusal(422, "validation", "the body must be a JSON object")
    return value


def _deps(request: Request) -> GatewayDeps:
    deps: GatewayDeps = request.app.state.deps
    return deps


def _model(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        model.model_dump_json(), status_code=status, headers=headers, media_type="application/json"
    )


def _request_id(request: Request) -> str:
    rid = str(request.path_params["request_id"])
    if len(rid) > 128 or not _REQUEST_ID.match(rid):
        raise GatewayRefusal(404, "not-found", "no such generation")
    return rid


# --- endpoints --------------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def index(_request: Request) -> Response:
    return RedirectResponse("/dashboard/", status_code=307)


async def session_open(request: Request) -> Response:
    body = _object(await _json_body(request))
    key = body.get("api_key")
    if not isinstance(key, str) or not 0 < len(key) <= 512:
        raise GatewayRefusal(422, "validation", "api_key: a string is needed")
    name = request.app.state.keys.identify(key)
    if name is None:
        raise GatewayRefusal(401, "unauthorized", "unknown API key")
    response = JSONResponse({"key": name})
    response.set_cookie(
        SESSION_COOKIE,
        request.app.state.sessions.open(name),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
    )
    return response


async def session_show(request: Request) -> Response:
    return JSONResponse({"key": _authenticate(request)})


async def session_close(request: Request) -> Response:
    if token := request.cookies.get(SESSION_COOKIE):
        request.app.state.sessions.close(token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def create_generation(request: Request) -> Response:
    key_name = _authenticate(request)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise GatewayRefusal(422, "validation", "Idempotency-Key: 1-255 visible ASCII characters")
    body = _object(await _json_body(request))
    answer, replayed = await accept_generation(_deps(request), key_name, body, idempotency_key)
    headers = {"Location": answer.status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    request.app.state.metrics.generations_accepted.labels(
        "resent" if replayed else "accepted"
    ).inc()
    return _model(answer, 202, headers)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise GatewayRefusal(422, "validation", "since: an RFC 3339 time is needed") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def generations(request: Request) -> Response:
    _authenticate(request)
    q = request.query_params
    status = q.get("status")
    if status is not None and status not in STATUSES:
        raise GatewayRefusal(422, "validation", f"status: one of {', '.join(STATUSES)}")
    provider = q.get("provider")
    if provider is not None and not _PROVIDER.match(provider):
        raise GatewayRefusal(422, "validation", "provider: lower-case letters, digits and dashes")
    raw_limit = q.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise GatewayRefusal(422, "validation", "limit: an integer from 1 to 100")
    cursor = q.get("cursor")
    if cursor is not None and len(cursor) > 512:
        raise GatewayRefusal(400, "bad-cursor", "cursor is not one this gateway gave out")
    page = await list_generations(
        _deps(request),
        status=status,
        provider=provider,
        since=_since(q.get("since")),
        limit=int(raw_limit),
        cursor=cursor,
    )
    return _model(page)


async def generation(request: Request) -> Response:
    _authenticate(request)
    found = await get_generation(_deps(request), _request_id(request))
    if found is None:
        raise GatewayRefusal(404, "not-found", "no such generation")
    return _model(found)


async def cancel_generation(request: Request) -> Response:
    key_name = _authenticate(request)
    answer = await request_cancel(_deps(request), key_name, _request_id(request))
    return _model(answer, 202, {"Location": answer.status_url})


async def provider_hook(request: Request) -> Response:
    # No API key: the provider signs its webhooks instead, and the signature is checked over
    # the body exactly as sent (vidpipe.providers.webhooks).
    provider = request.path_params["provider"]
    if not _PROVIDER.match(provider):
        raise GatewayRefusal(404, "not-found", "no such provider")
    body = await _bounded_body(request, MAX_HOOK_BYTES)
    receipt: HookReceipt = await receive_provider_hook(
        _deps(request), provider, request.headers, body, request.query_params
    )
    return _model(receipt, 202)


async def generation_events(request: Request) -> Response:
    _authenticate(request)
    rid = _request_id(request)
    deps = _deps(request)
    if await get_generation(deps, rid) is None:
        raise GatewayRefusal(404, "not-found", "no such generation")
    last = request.headers.get("last-event-id", "0")
    # The log's seq is a 32-bit column: anything past it simply means "nothing newer yet".
    after = min(int(last), _MAX_SEQ) if last.isdigit() else 0
    max_s: float = request.app.state.sse_max_s

    async def stream() -> AsyncIterator[ServerSentEvent]:
        seen = after
        deadline = time.monotonic() + max_s
        while True:
            # Status first: every event that made it terminal is in the log by then.
            current = await get_generation(deps, rid)
            batch = await events_after(deps, rid, seen)
            for item in batch:
                seen = item.seq
                yield ServerSentEvent(
                    data=item.model_dump_json(), event=item.event_type, id=str(item.seq)
                )
            if not batch and current is not None and current.status in TERMINAL_STATUSES:
                yield ServerSentEvent(data=current.model_dump_json(), event="end")
                return
            if time.monotonic() > deadline:
                return
            if not batch:
                await asyncio.sleep(0.5)

    return EventSourceResponse(stream(), ping=15)


async def generation_video(request: Request) -> Response:
    _authenticate(request)
    rid = _request_id(request)
    raw_seq = request.query_params.get("seq")
    if raw_seq is not None and not (raw_seq.isdigit() and int(raw_seq) <= _MAX_SEQ):
        raise GatewayRefusal(422, "validation", "seq: an event's sequence number")
    source = await video_source(_deps(request), rid, int(raw_seq) if raw_seq else None)
    if source is None:
        raise GatewayRefusal(404, "not-found", "no video for this generation (yet)")
    if isinstance(source, str):
        return RedirectResponse(source, status_code=302)
    # FileResponse answers Range requests, which <video> uses to seek.
    return FileResponse(source, media_type="video/mp4")


async def ops_stages(request: Request) -> Response:
    _authenticate(request)
    return _model(await stages_overview(_deps(request)))


async def ops_dead_letters(request: Request) -> Response:
    _authenticate(request)
    return _model(await dead_letter_summary(_deps(request)))


async def ops_redrive(request: Request) -> Response:
    _authenticate(request)
    ask = RedriveRequest.model_validate(_object(await _json_body(request)))
    return _model(await redrive(_deps(request), ask))


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text: the gateway's HTTP requests and what it accepted (no auth, as a stage's
    metrics port: route templates and counts only, never a key or a request id)."""
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class _Metered:
    """ASGI middleware: each HTTP request counted by route template, method and status, and
    timed until its response starts (an SSE stream is not timed for its whole life)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_of(scope)
        method = str(scope.get("method", "GET"))
        started = time.monotonic()
        status = 500  # what an exception escaping the app becomes

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.metrics.http_seconds.labels(route, method).observe(time.monotonic() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.http_requests.labels(route, method, str(status)).inc()


def _route_of(scope: Scope) -> str:
    # The template, not the path: a label per request id would grow without bound.
    for route in ROUTES:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", "?"))
    return "unmatched"


ROUTES = [
    Route("/", index),
    Route("/healthz", healthz),
    Route("/metrics", metrics_endpoint),
    Route("/v1/session", session_open, methods=["POST"]),
    Route("/v1/session", session_show, methods=["GET"]),
    Route("/v1/session", session_close, methods=["DELETE"]),
    Route("/v1/generations", create_generation, methods=["POST"]),
    Route("/v1/generations", generations, methods=["GET"]),
    Route("/v1/generations/{request_id}", generation, methods=["GET"]),
    Route("/v1/generations/{request_id}/events", generation_events, methods=["GET"]),
    Route("/v1/generations/{request_id}/cancel", cancel_generation, methods=["POST"]),
    Route("/v1/generations/{request_id}/video", generation_video, methods=["GET"]),
    Route("/v1/provider-hooks/{provider}", provider_hook, methods=["POST"]),
    Route("/v1/ops/stages", ops_stages, methods=["GET"]),
    Route("/v1/ops/deadletters", ops_dead_letters, methods=["GET"]),
    Route("/v1/ops/deadletters/redrive", ops_redrive, methods=["POST"]),
    Mount("/dashboard", StaticFiles(directory=DASHBOARD, html=True), name="dashboard"),
]


def create_app(settings: Settings, *, bootstrap_servers: str) -> Starlette:
    """The gateway's ASGI app; the broker and database are opened by its lifespan."""
    keys = ApiKeys.parse(
        settings.gateway_api_keys.get_secret_value() if settings.gateway_api_keys else ""
    )
    storage = settings.storage_url
    local = storage.startswith("file://")
    root = Path(storage.removeprefix("file://")).expanduser().resolve() if local else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ensure_all_topics(settings, bootstrap_servers)
        engine = await open_engine(settings.database_url)
        await create_gateway_tables(engine)
        async with RequestPublisher(bootstrap_servers, topic_prefix=settings.topic_prefix) as pub:
            app.state.deps = GatewayDeps(
                engine=engine,
                topics=settings.topics,
                publish=pub.publish,
                publish_cancel=pub.publish_cancel,
                hook_verifiers=open_hook_verifiers(),
                publish_hint=pub.publish_hint,
                bootstrap_servers=bootstrap_servers,
                group_id=settings.group_id,
                storage_root=root,
                quota={name: max_concurrent_jobs(name) for name in configured_providers()},
            )
            log.info("gateway_ready", keys=len(keys.entries))
            try:
                yield
            finally:
                await engine.dispose()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            GatewayRefusal: _on_refused,
            ValidationError: _on_invalid,
            HTTPException: _on_http,
            Exception: _on_crash,
        },
    )
    app.state.keys = keys
    app.state.sessions = Sessions()
    app.state.limiter = RateLimiter(
        settings.gateway_rate_per_minute / 60, settings.gateway_rate_burst
    )
    app.state.max_body = settings.gateway_max_body_bytes
    app.state.sse_max_s = settings.gateway_sse_max_s
    app.state.metrics = Metrics("gateway")
    app.add_middleware(_Metered, metrics=app.state.metrics)
    return app


# --- the OpenAPI document (schemas/openapi.json; a test fails when it drifts) -----------------


def _generation_create() -> dict[str, Any]:
    schema = GenerationRequested.model_json_schema()
    schema["properties"] = {
        k: v for k, v in schema["properties"].items() if k not in ENVELOPE_FIELDS
    }
    schema["properties"]["request_id"]["description"] = (
        "Optional: the gateway makes one (from Idempotency-Key when given). A resend of an "
        "accepted id answers the same and starts nothing."
    )
    schema["required"] = ["prompt"]
    schema["title"] = "GenerationCreate"
    schema["description"] = "The GenerationRequested contract, as an HTTP body."
    return schema


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _problems(*codes: int) -> dict[str, Any]:
    words = {
        400: "Bad request",
        401: "No valid API key",
        403: "Refused",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        415: "Not JSON",
        422: "Invalid",
        429: "Rate limited",
        503: "Broker unavailable",
    }
    return {
        str(code): {
            "description": words[code],
            "content": {PROBLEM: {"schema": _ref("Problem")}},
        }
        for code in codes
    }


_ID_PARAM = {
    "name": "request_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": _REQUEST_ID.pattern},
}
_BINARY = {"type": "string", "format": "binary"}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}, {"session": []}]


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        Accepted,
        Generation,
        GenerationPage,
        TimelineEvent,
        StagesView,
        DeadLetterSummary,
        RedriveRequest,
        RedriveResult,
        HookReceipt,
    ]
    _, defs = models_json_schema(
        [(m, "serialization") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(defs["$defs"])
    schemas["GenerationCreate"] = _generation_create()
    schemas["Problem"] = _PROBLEM_SCHEMA
    read = _problems(401, 429)
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Up",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/v1/generations": {
            "post": {
                "summary": "Ask for a video: validated, published keyed by request id",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": _IDEMPOTENCY_KEY.pattern},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("GenerationCreate")}},
                },
                "responses": {
                    "202": _json("Accepted", "Accepted (or a replay of the same request)"),
                    **_problems(400, 401, 403, 409, 413, 415, 422, 429, 503),
                },
            },
            "get": {
                "summary": "The generations, newest first, paginated",
                "parameters": [
                    _query("status", {"type": "string", "enum": list(STATUSES)}),
                    _query("provider", {"type": "string", "pattern": _PROVIDER.pattern}),
                    _query("since", {"type": "string", "format": "date-time"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query("cursor", {"type": "string", "maxLength": 512}),
                ],
                "responses": {
                    "200": _json("GenerationPage", "One page"),
                    **_problems(400, 422),
                    **read,
                },
            },
        },
        "/v1/generations/{request_id}": {
            "get": {
                "summary": "One generation's record",
                "parameters": [_ID_PARAM],
                "responses": {"200": _json("Generation", "The record"), **_problems(404), **read},
            }
        },
        "/v1/generations/{request_id}/cancel": {
            "post": {
                "summary": "Stop a generation: publishes a CancelRequested keyed by request id",
                "description": "Not yet submitted: it never is; in flight: its job is cancelled "
                "at the provider; the record ends `cancelled`. 409 once the job has ended.",
                "parameters": [_ID_PARAM],
                "responses": {
                    "202": _json("Accepted", "The cancel was published"),
                    **_problems(403, 404, 409, 503),
                    **read,
                },
            }
        },
        "/v1/generations/{request_id}/events": {
            "get": {
                "summary": "The request's events as Server-Sent Events, live until it is terminal",
                "description": "Each `data` is a TimelineEvent; a last `end` event carries the "
                "Generation. Reconnect with Last-Event-ID to resume.",
                "parameters": [
                    _ID_PARAM,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "An event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_problems(404),
                    **read,
                },
            }
        },
        "/v1/generations/{request_id}/video": {
            "get": {
                "summary": "The stored video (or, with seq, the one a VideoStored event named)",
                "parameters": [
                    _ID_PARAM,
                    _query("seq", {"type": "integer", "minimum": 0, "maximum": _MAX_SEQ}),
                ],
                "responses": {
                    "200": {
                        "description": "The MP4",
                        "content": {"video/mp4": {"schema": _BINARY}},
                    },
                    "302": {"description": "Stored elsewhere: its URL"},
                    **_problems(404, 422),
                    **read,
                },
            }
        },
        "/v1/provider-hooks/{provider}": {
            "post": {
                "summary": "A provider's own webhook: a hint to check the job it names now",
                "description": "For the providers' servers, not for callers: no API key, the "
                "provider's signature instead (Standard Webhooks for replicate and "
                "openai-videos, Ed25519 for fal). A genuine webhook becomes a PollHinted; the "
                "poller asks the provider itself, so a lost or forged webhook changes nothing. "
                "404 for a provider whose webhooks are not set up.",
                "security": [],
                "parameters": [
                    {
                        "name": "provider",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "202": _json("HookReceipt", "Genuine: acknowledged"),
                    **_problems(401, 404, 413, 503),
                },
            }
        },
        "/v1/ops/stages": {
            "get": {
                "summary": "Consumer groups (members, lag per topic), timers pending, quota slots",
                "responses": {"200": _json("StagesView", "The stages"), **read},
            }
        },
        "/v1/ops/deadletters": {
            "get": {
                "summary": "Dead letters by reason",
                "responses": {"200": _json("DeadLetterSummary", "The dead letters"), **read},
            }
        },
        "/v1/ops/deadletters/redrive": {
            "post": {
                "summary": "Send matching dead letters back (as `vidpipe dlq redrive`)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RedriveRequest")}},
                },
                "responses": {
                    "200": _json("RedriveResult", "What was sent"),
                    **_problems(400, 403, 413, 415, 422),
                    **read,
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vidpipe gateway",
            "version": "1",
            "description": "HTTP in front of vidpipe's Kafka pipeline. Errors are RFC 9457 "
            "problem details (application/problem+json).",
        },
        "security": _SECURED,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
    }


def openapi_json() -> str:
    """The document as checked in: sorted keys, two-space indent, a final newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
