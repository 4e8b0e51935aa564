"""fal: the queue API (`queue.fal.run`), served at the emulator's root, and its media files.

The `fal-client` SDK builds `https://{FAL_QUEUE_RUN_HOST}/{model_id}` for a submit, then follows
the `status_url`/`response_url`/`cancel_url` the submit answered; so the queue lives at the root
(a model id is `owner/alias[/subpath]`), and those URLs name the host the caller reached.

    POST /{owner}/{alias}[/{subpath}]                      submit: the request id and its URLs
    GET  /{owner}/{alias}/requests/{request_id}/status     IN_QUEUE (position), IN_PROGRESS,
                                                            COMPLETED (with error on a failure)
    GET  /{owner}/{alias}/requests/{request_id}            the result: {"video": {"url": ...}}
    PUT  /{owner}/{alias}/requests/{request_id}/cancel     202 CANCELLATION_REQUESTED, or 400
    GET  /fal-media/files/{request_id}/output.mp4          the video, without auth, as fal's CDN

Auth is `Authorization: Key <key>`. Errors are fal's `{"detail": ...}`: a string, or a list of
`{loc, msg, type}` objects (`content_policy_violation` for moderation, 422). fal honours no
Idempotency-Key, so neither does this; the download switches act on the media file.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route

from vidpipe.dev.emulator.common import (
    BodyError,
    bytes_response,
    drop_connection,
    hooks_of,
    rate_limit_headers,
    read_body,
    state_of,
)
from vidpipe.dev.emulator.config import DirectiveError, parse_directives
from vidpipe.dev.emulator.state import Job

__all__ = ["MEDIA_PREFIX", "is_fal_api_path", "is_fal_submit", "routes"]

log = logging.getLogger("vidpipe.dev.emulator.fal")

MEDIA_PREFIX = "/fal-media/files"
# Paths that belong to the other protocols or to the emulator itself, never to a fal model id.
_RESERVED = (
    "/_emulator",
    "/openai/",
    "/v1/",
    "/v1beta/",
    "/fal-media/",
    "/replicate-delivery/",
    "/runway-cdn/",
)
# fal's aspect ratios for video models, as (width, height) of the 720p frame.
_ASPECTS = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
_FAILURES = {
    "input_moderation": (
        "content_policy_violation",
        "The content was flagged by a content checker.",
    ),
    "output_moderation": (
        "content_policy_violation",
        "The generated video was flagged by a content checker.",
    ),
    "cancelled": ("request_cancelled", "The request was cancelled."),
}


def is_fal_api_path(path: str) -> bool:
    """A fal queue path: anything of two or more segments outside the reserved prefixes."""
    return not path.startswith(_RESERVED) and len([p for p in path.split("/") if p]) >= 2


def is_fal_submit(method: str, path: str) -> bool:
    """A submit: a POST to a model id (status, result and cancel are GET/PUT)."""
    return method == "POST" and is_fal_api_path(path) and "/requests/" not in path


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _typed(status: int, type_: str, msg: str, loc: list[str]) -> JSONResponse:
    retryable = "true" if status >= 500 else "false"
    return _detail(
        status,
        [{"loc": loc, "msg": msg, "type": type_}],
        headers={"x-fal-retryable": retryable, "x-fal-error-type": type_},
    )


def _auth(request: Request) -> str | Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    supplied = token.strip() if scheme.lower() == "key" else ""
    # The shared check reads `api-key`; fal's scheme is only how the key travels.
    owner = state_of(request).authenticate({"api-key": supplied} if supplied else {})
    if owner is None:
        return _detail(401, "Authentication is required to access this application.")
    return owner


def _app_id(model: str) -> str:
    """The owner/alias part of a model id: status and results ignore the subpath."""
    return "/".join(model.split("/")[:2])


def _urls(request: Request, job: Job) -> dict[str, str]:
    base = f"{str(request.base_url).rstrip('/')}/{_app_id(job.model)}/requests/{job.id}"
    return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}


def _queue_position(job: Job, jobs: list[Job], now: float) -> int:
    """0-indexed, as the SDK says: the queued jobs of the same owner created before this one."""
    return sum(1 for j in jobs if j.seq < job.seq and j.phase(now) == "queued")


def _not_ours(request: Request) -> HTTPException:
    """The error the app gives a POST to another protocol's path: 405 where that path takes
    other methods, else 404 (the catch-all submit must not change those answers)."""
    for route in request.app.router.routes:
        if getattr(route, "endpoint", None) is submit:
            continue
        if route.matches(request.scope)[0] == Match.PARTIAL:
            return HTTPException(405)
    return HTTPException(404)


async def submit(request: Request) -> Response:
    path = request.url.path
    if not is_fal_api_path(path):
        raise _not_ours(request)
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _typed(422, "invalid_body", str(exc), ["body"])
    if body.multipart:
        return _typed(422, "invalid_body", "The body must be JSON.", ["body"])
    fields = body.fields
    model = path.strip("/")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _typed(422, "missing", "Field required", ["body", "prompt"])
    try:
        directives = parse_directives(prompt, "fal")
    except DirectiveError as exc:
        return _typed(422, "value_error", str(exc), ["body", "prompt"])
    cfg = state.config
    if cfg.deployments is not None and model not in cfg.deployments:
        return _detail(404, f"Application '{_app_id(model)}' not found")
    raw_seconds = fields.get("duration", "5")
    seconds = str(raw_seconds).removesuffix("s")
    if not seconds.isdigit() or not 1 <= int(seconds) <= 60:
        return _typed(
            422, "value_error", "duration must be a whole number of seconds", ["body", "duration"]
        )
    aspect = fields.get("aspect_ratio", "16:9")
    if aspect not in _ASPECTS:
        return _typed(
            422,
            "literal_error",
            f"aspect_ratio must be one of {', '.join(_ASPECTS)}",
            ["body", "aspect_ratio"],
        )
    if cfg.moderation_mode == "reject" and state.moderated(prompt):
        return _typed(
            422, "content_policy_violation", _FAILURES["input_moderation"][1], ["body", "prompt"]
        )
    nth = state.count_create()
    if directives.rate_limit or nth or state.over_quota(owner, "fal"):
        state.stats["fal.creates_rejected_429"] += 1
        return _detail(
            429,
            "Too many requests: your concurrent request limit is reached.",
            headers=rate_limit_headers(state.real(cfg.retry_after_seconds), with_ms=False),
        )
    width, height = _ASPECTS[str(aspect)]
    job = state.create_job(
        protocol="fal",
        owner=owner,
        prompt=prompt,
        model=model,
        width=width,
        height=height,
        seconds=int(seconds),
        n_variants=1,
        directives=directives,
        input_images=1 if fields.get("image_url") else 0,
    )
    if directives.drop_after_create:
        state.stats["fal.creates_dropped"] += 1
        return drop_connection()
    webhook = request.query_params.get("fal_webhook")
    if webhook:
        base = str(request.base_url).rstrip("/")
        hooks_of(request).send_when_done(
            job, webhook, lambda done, now: _webhook_body(base, done, now)
        )
    log.info("fal request %s queued for %s", job.id, model)
    now = state.clock()
    return JSONResponse(
        {
            "status": "IN_QUEUE",
            "request_id": job.id,
            **_urls(request, job),
            "queue_position": _queue_position(job, state.list_jobs(owner, "fal"), now),
        },
        headers={"x-fal-request-id": job.id},
    )


def _webhook_body(base: str, job: Job, now: float) -> dict[str, Any]:
    """What fal POSTs to `fal_webhook` when the request ends: OK with the result, or ERROR."""
    body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
    if job.phase(now) == "succeeded":
        video = {"url": f"{base}{MEDIA_PREFIX}/{job.id}/output.mp4", "content_type": "video/mp4"}
        return {**body, "status": "OK", "payload": {"video": video, "seed": job.seq}}
    type_, msg = _failure(job)
    return {**body, "status": "ERROR", "error": msg, "payload": {"detail": [{"type": type_}]}}


def _job(request: Request) -> Job | Response:
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    params = request.path_params
    job = state_of(request).get_job(params["request_id"], owner, "fal")
    if job is None or _app_id(job.model) != f"{params['owner']}/{params['alias']}":
        return _detail(404, "Request not found")
    return job


def _failure(job: Job) -> tuple[str, str]:
    reason = job.failure or "internal_error"
    return _FAILURES.get(reason, (reason, "The model failed to generate the video."))


async def status(request: Request) -> Response:
    state = state_of(request)
    job = _job(request)
    if isinstance(job, Response):
        return job
    state.stats["fal.status_requests"] += 1
    if state.status_error(job):
        return _detail(state.config.status_error_code, "Internal Server Error")
    now = state.clock()
    phase = job.phase(now)
    with_logs = request.query_params.get("logs", "0").lower() in ("1", "true")
    logs: list[dict[str, str]] | None = [] if with_logs else None
    data: dict[str, Any] = {"request_id": job.id, **_urls(request, job), "logs": logs}
    if phase == "queued":
        position = _queue_position(job, state.list_jobs(job.owner, "fal"), now)
        data.update(status="IN_QUEUE", queue_position=position)
    elif phase in ("succeeded", "failed"):
        data.update(status="COMPLETED", metrics={"inference_time": job.end - job.boundaries[0]})
        if phase == "failed":
            data["error_type"], data["error"] = _failure(job)
    else:
        data["status"] = "IN_PROGRESS"
    return JSONResponse(data, headers={"x-fal-request-id": job.id})


async def result(request: Request) -> Response:
    state = state_of(request)
    job = _job(request)
    if isinstance(job, Response):
        return job
    phase = job.phase(state.clock())
    if phase == "failed":
        type_, msg = _failure(job)
        return _typed(422 if type_ == "content_policy_violation" else 500, type_, msg, ["body"])
    if phase != "succeeded":
        return _detail(400, "Request is still in progress")
    data = await state.served_video(job, "ok")
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "video": {
                "url": f"{base}{MEDIA_PREFIX}/{job.id}/output.mp4",
                "content_type": "video/mp4",
                "file_name": "output.mp4",
                "file_size": len(data),
            },
            "seed": job.seq,
        },
        headers={"x-fal-request-id": job.id},
    )


async def cancel(request: Request) -> Response:
    state = state_of(request)
    job = _job(request)
    if isinstance(job, Response):
        return job
    now = state.clock()
    state.stats["fal.cancel_requests"] += 1
    if job.phase(now) != "queued":
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
    # A cancelled request ends now, as a failure the status reports.
    job.failure = "cancelled"
    job.boundaries = (now, now, now, now)
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)


async def media(request: Request) -> Response:
    """The generated file, as fal's CDN serves it: no auth, the download switches apply."""
    state = state_of(request)
    job = state.jobs.get(request.path_params["request_id"])
    if job is None or job.protocol != "fal":
        return _detail(404, "File not found")
    state.stats["fal.content_requests"] += 1
    cfg = state.config
    verdict = state.download_verdict(job, count=request.method != "HEAD")
    if verdict == "expired":
        return _detail(cfg.expired_status, "File expired")
    if verdict == "flaky":
        return _detail(cfg.flaky_status, "Bad Gateway")
    if verdict == "json_body":
        return JSONResponse({"detail": "File not available"})
    if verdict == "redirect":
        return RedirectResponse(cfg.download_redirect_url, status_code=302)
    if verdict not in ("ok", "truncated"):
        return _detail(404, "File not found")
    data = await state.served_video(job, verdict)
    return bytes_response(
        request,
        data,
        media_type="video/mp4",
        last_modified=job.end,
        pace_s=(job.directives.download_seconds or 0.0) / cfg.time_scale,
    )


def routes() -> list[BaseRoute]:
    """Mounted last: the submit route takes any POST path left over."""
    return [
        Route(f"{MEDIA_PREFIX}/{{request_id}}/output.mp4", media, methods=["GET", "HEAD"]),
        Route("/{owner}/{alias}/requests/{request_id}/status", status, methods=["GET"]),
        Route("/{owner}/{alias}/requests/{request_id}/cancel", cancel, methods=["PUT"]),
        Route("/{owner}/{alias}/requests/{request_id}", result, methods=["GET"]),
        Route("/{model:path}", submit, methods=["POST"]),
    ]
