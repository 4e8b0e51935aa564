"""openai-videos: the /v1/videos protocol (OpenAI Sora 2, Azure Sora 2, gateways).

A video's content lasts its `seconds` (a remix keeps its source's), unless
`[emulator:video_seconds=N]` or `EmulatorConfig.video_seconds` says otherwise: see
`EmulatorState.video_seconds`.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from vidpipe.dev.emulator.common import (
    Body,
    BodyError,
    bytes_response,
    drop_connection,
    error_response,
    hooks_of,
    rate_limit_headers,
    read_body,
    state_of,
)
from vidpipe.dev.emulator.config import DirectiveError, Directives, parse_directives
from vidpipe.dev.emulator.state import EmulatorState, Job
from vidpipe.media.sample import ImageFormat, VideoProbeError, image_size

__all__ = ["OPENAI_SECONDS", "OPENAI_SIZES", "routes"]

log = logging.getLogger("vidpipe.dev.emulator.openai")

OPENAI_SECONDS = ("4", "8", "12")
OPENAI_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
_FAILURE_CODES = {
    "input_moderation": (
        "moderation_blocked",
        "Your request was blocked by our moderation system.",
    ),
    "output_moderation": (
        "moderation_blocked",
        "The generated video was blocked by our moderation system.",
    ),
    "internal_error": ("internal_error", "Video generation failed due to an internal error."),
}


def _bad(
    message: str, param: str | None = None, code: str | None = "invalid_value"
) -> JSONResponse:
    return error_response(400, message, code=code, param=param)


def _auth(request: Request) -> str | Response:
    owner = state_of(request).authenticate(request.headers)
    if owner is None:
        return error_response(
            401,
            "Incorrect API key provided. You can find your API key in your account settings.",
            code="invalid_api_key",
        )
    return owner


def _not_found(video_id: str) -> JSONResponse:
    return error_response(
        404, f"Video with id '{video_id}' not found.", code="video_not_found", param="video_id"
    )


def video_json(job: Job, now: float) -> dict[str, Any]:
    phase = job.phase(now)
    status = {"queued": "queued", "succeeded": "completed", "failed": "failed"}.get(
        phase, "in_progress"
    )
    error = None
    if phase == "failed" and job.failure is not None:
        code, message = _FAILURE_CODES.get(job.failure, (job.failure, "Video generation failed."))
        error = {"code": code, "message": message}
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": status,
        "progress": job.progress(now),
        "created_at": int(job.created),
        "completed_at": int(job.end) if phase in ("succeeded", "failed") else None,
        "expires_at": int(job.assets_expire) if phase == "succeeded" else None,
        "seconds": str(job.seconds),
        "size": f"{job.width}x{job.height}",
        "prompt": job.prompt,
        "remixed_from_video_id": job.remixed_from,
        "error": error,
    }


def _event_json(job: Job, now: float) -> dict[str, Any]:
    """The `video.completed` / `video.failed` event OpenAI POSTs to the project's endpoint."""
    kind = "video.completed" if job.phase(now) == "succeeded" else "video.failed"
    return {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "created_at": int(now),
        "type": kind,
        "data": {"id": job.id},
    }


def _notify_when_done(request: Request, job: Job) -> None:
    url = state_of(request).config.openai_webhook_url
    if url:
        hooks_of(request).send_when_done(job, url, _event_json)


def _video_response(state: EmulatorState, job: Job) -> JSONResponse:
    cfg = state.config
    # The poll hint is emulated time too; floor it so SDK pollers never spin.
    poll_ms = max(10, round(state.real(cfg.poll_after_seconds) * 1000))
    return JSONResponse(
        video_json(job, state.clock()), headers={"openai-poll-after-ms": str(poll_ms)}
    )


def _rate_limited(state: EmulatorState, owner: str, forced: bool) -> Response | None:
    nth = state.count_create()
    quota = state.over_quota(owner, "openai")
    if not (forced or nth or quota):
        return None
    state.stats["openai.creates_rejected_429"] += 1
    message = (
        "You have too many video generations in progress; retry when one finishes."
        if quota and not (forced or nth)
        else "Rate limit reached for video generation requests; retry later."
    )
    return error_response(
        429,
        message,
        code="rate_limit_exceeded",
        type_="rate_limit_error" if quota else "requests",
        headers=rate_limit_headers(state.real(state.config.retry_after_seconds), with_ms=True),
    )


def _prechecks(state: EmulatorState, model: str, prompt: str) -> Directives | Response:
    """Directives, deployment and moderation checks common to create and remix."""
    try:
        directives = parse_directives(prompt, "openai")
    except DirectiveError as exc:
        return _bad(str(exc), "prompt")
    cfg = state.config
    if cfg.deployments is not None and model not in cfg.deployments:
        return error_response(
            404,
            f"The model or deployment '{model}' does not exist.",
            code="DeploymentNotFound",
            param="model",
        )
    if cfg.moderation_mode == "reject" and state.moderated(prompt):
        return error_response(
            400,
            "Your request was blocked by our moderation system.",
            code="moderation_blocked",
            param="prompt",
        )
    return directives


def _replay(state: EmulatorState, request: Request, owner: str, body: Body) -> Response | None:
    key = request.headers.get("idempotency-key") if state.config.idempotency else None
    seen = state.idempotency.get((owner, "openai", key)) if key else None
    if seen is None:
        return None
    job_id, fingerprint = seen
    if fingerprint != body.fingerprint():
        return error_response(
            409,
            "Idempotency-Key was already used with a different request.",
            code="idempotency_key_reused",
        )
    return _video_response(state, state.jobs[job_id])


def _remember(state: EmulatorState, request: Request, owner: str, body: Body, job: Job) -> None:
    key = request.headers.get("idempotency-key") if state.config.idempotency else None
    if key:
        state.idempotency[(owner, "openai", key)] = (job.id, body.fingerprint())


async def create_video(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _bad(str(exc), code="invalid_request_body")
    replay = _replay(state, request, owner, body)
    if replay is not None:
        return replay
    fields = body.fields
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    model = fields.get("model", "sora-2")
    if not isinstance(model, str) or not model:
        return _bad("Invalid type for 'model': expected a string.", "model", "invalid_type")
    seconds = fields.get("seconds", "4")
    if not isinstance(seconds, str):
        return _bad(
            "Invalid type for 'seconds': expected one of '4', '8', '12' (a string).",
            "seconds",
            "invalid_type",
        )
    if seconds not in OPENAI_SECONDS:
        return _bad(
            f"Invalid value: '{seconds}'. Supported values are: '4', '8', and '12'.", "seconds"
        )
    size = fields.get("size", "720x1280")
    if size not in OPENAI_SIZES:
        return _bad(
            f"Invalid value: '{size}'. Supported values are: {', '.join(OPENAI_SIZES)}.", "size"
        )
    width, height = (int(part) for part in str(size).split("x"))
    references = [u for u in body.files if u.field == "input_reference"]
    if references:
        try:
            got = image_size(references[0].data)
        except VideoProbeError:
            return _bad("input_reference must be a JPEG, PNG or WebP image.", "input_reference")
        if got != (width, height):
            return _bad(
                "Inpaint image must match the requested width and height.", "input_reference"
            )
    checked = _prechecks(state, model, prompt)
    if isinstance(checked, Response):
        return checked
    limited = _rate_limited(state, owner, checked.rate_limit)
    if limited is not None:
        return limited
    job = state.create_job(
        protocol="openai",
        owner=owner,
        prompt=prompt,
        model=model,
        width=width,
        height=height,
        seconds=int(seconds),
        n_variants=1,
        directives=checked,
        input_images=len(references),
    )
    if checked.drop_after_create:
        state.stats["openai.creates_dropped"] += 1
        log.info("openai video %s created, connection dropped", job.id)
        return drop_connection()
    _remember(state, request, owner, body, job)
    _notify_when_done(request, job)
    log.info("openai video %s created (%s, %ss)", job.id, size, seconds)
    return _video_response(state, job)


async def remix_video(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _bad(str(exc), code="invalid_request_body")
    source_id = request.path_params["video_id"]
    source = state.get_job(source_id, owner, "openai")
    if source is None:
        return _not_found(source_id)
    replay = _replay(state, request, owner, body)
    if replay is not None:
        return replay
    prompt = body.fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if source.phase(state.clock()) != "succeeded":
        return _bad("Only completed videos can be remixed.", "video_id", "invalid_video_state")
    checked = _prechecks(state, source.model, prompt)
    if isinstance(checked, Response):
        return checked
    limited = _rate_limited(state, owner, checked.rate_limit)
    if limited is not None:
        return limited
    job = state.create_job(
        protocol="openai",
        owner=owner,
        prompt=prompt,
        model=source.model,
        width=source.width,
        height=source.height,
        seconds=source.seconds,
        n_variants=1,
        directives=checked,
        remixed_from=source.id,
    )
    _remember(state, request, owner, body, job)
    _notify_when_done(request, job)
    return _video_response(state, job)


async def retrieve_video(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    state.stats["openai.status_requests"] += 1
    video_id = request.path_params["video_id"]
    job = state.get_job(video_id, owner, "openai")
    if job is None:
        return _not_found(video_id)
    if state.status_error(job):
        code = state.config.status_error_code
        return error_response(
            code,
            "The server is temporarily unable to handle the request.",
            code=None,
            type_="server_error",
        )
    return _video_response(state, job)


async def delete_video(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    video_id = request.path_params["video_id"]
    job = state.get_job(video_id, owner, "openai")
    if job is None:
        return _not_found(video_id)
    state.stats["openai.deletes"] += 1
    state.delete_job(job)
    return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})


async def list_videos(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    query = request.query_params
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        return _bad("Invalid type for 'limit': expected an integer.", "limit", "invalid_type")
    if not 1 <= limit <= 100:
        return _bad("'limit' must be between 1 and 100.", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        return _bad("'order' must be 'asc' or 'desc'.", "order")
    jobs = state.list_jobs(owner, "openai", newest_first=order == "desc")
    after = query.get("after")
    if after:
        ids = [j.id for j in jobs]
        if after not in ids:
            return _bad(f"No video found with id '{after}'.", "after")
        jobs = jobs[ids.index(after) + 1 :]
    page = jobs[:limit]
    now = state.clock()
    return JSONResponse(
        {
            "object": "list",
            "data": [video_json(j, now) for j in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(jobs) > limit,
        }
    )


async def download_content(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    video_id = request.path_params["video_id"]
    variant = request.query_params.get("variant", "video")
    if variant not in ("video", "thumbnail", "spritesheet"):
        return _bad("'variant' must be one of video, thumbnail, spritesheet.", "variant")
    job = state.get_job(video_id, owner, "openai")
    if job is None:
        return _not_found(video_id)
    state.stats["openai.content_requests"] += 1
    cfg = state.config
    phase = job.phase(state.clock())
    if phase == "failed":
        return error_response(
            404, "Video generation failed; there is no content.", code="video_failed"
        )
    if phase != "succeeded":
        return error_response(
            409,
            "Video is not ready yet; poll GET /videos/{video_id} until it completes.",
            code="video_not_ready",
        )
    if variant != "video":
        # Download-mode switches model the video asset; previews follow only expiry.
        if state.clock() >= job.assets_expire:
            return error_response(
                cfg.expired_status, "The video's assets have expired.", code="video_expired"
            )
        fmt: ImageFormat
        fmt, media_type = (
            ("webp", "image/webp") if variant == "thumbnail" else ("jpeg", "image/jpeg")
        )
        image = await state.sample_image(fmt)
        return bytes_response(request, image, media_type=media_type, last_modified=job.end)
    verdict = state.download_verdict(job, count=request.method != "HEAD")
    if verdict == "expired":
        return error_response(
            cfg.expired_status, "The video's assets have expired.", code="video_expired"
        )
    if verdict == "flaky":
        return error_response(cfg.flaky_status, "Bad gateway.", code=None, type_="server_error")
    if verdict == "json_body":
        return error_response(
            200, "The video content is not available.", code="content_not_available"
        )
    if verdict == "redirect":
        return RedirectResponse(cfg.download_redirect_url, status_code=302)
    if verdict not in ("ok", "truncated"):
        return error_response(404, "Video content not found.", code="content_not_found")
    data = await state.served_video(job, verdict)
    return bytes_response(
        request,
        data,
        media_type="video/mp4",
        last_modified=job.end,
        extra_headers={"content-disposition": f'attachment; filename="{job.id}.mp4"'},
        pace_s=(job.directives.download_seconds or 0.0) / cfg.time_scale,
    )


def routes(prefix: str) -> list[BaseRoute]:
    return [
        Route(f"{prefix}/videos", create_video, methods=["POST"]),
        Route(f"{prefix}/videos", list_videos, methods=["GET"]),
        Route(f"{prefix}/videos/{{video_id}}", retrieve_video, methods=["GET"]),
        Route(f"{prefix}/videos/{{video_id}}", delete_video, methods=["DELETE"]),
        Route(f"{prefix}/videos/{{video_id}}/remix", remix_video, methods=["POST"]),
        Route(f"{prefix}/videos/{{video_id}}/content", download_content, methods=["GET", "HEAD"]),
    ]
