"""azure-sora: Azure OpenAI Sora 1 video generation jobs, under /openai/v1/video/generations.

Each generation's video lasts the job's `n_seconds` (unless `[emulator:video_seconds=N]` or
`EmulatorConfig.video_seconds` says otherwise: see `EmulatorState.video_seconds`).
"""

from __future__ import annotations

import json
import logging
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
    rate_limit_headers,
    read_body,
    state_of,
)
from vidpipe.dev.emulator.config import DirectiveError, parse_directives
from vidpipe.dev.emulator.state import IN_FLIGHT, EmulatorState, Job

__all__ = ["AZURE_SIZES", "routes"]

log = logging.getLogger("vidpipe.dev.emulator.azure")

PREFIX = "/openai/v1/video/generations"
_SQUARE_AND_LANDSCAPE = [
    (480, 480),
    (854, 480),
    (720, 720),
    (1280, 720),
    (1080, 1080),
    (1920, 1080),
]
AZURE_SIZES: frozenset[tuple[int, int]] = frozenset(
    _SQUARE_AND_LANDSCAPE + [(h, w) for w, h in _SQUARE_AND_LANDSCAPE]
)
STATUSES = (*IN_FLIGHT, "succeeded", "failed", "cancelled")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _bad(message: str, param: str | None = None, code: str = "BadRequest") -> JSONResponse:
    return error_response(400, message, code=code, param=param)


def _precheck(request: Request) -> str | Response:
    """api-version, then auth; returns the owner fingerprint or the error response."""
    state = state_of(request)
    version = request.query_params.get("api-version")
    if not version:
        return _bad(
            "Missing required query parameter 'api-version' (use api-version=preview).",
            "api-version",
            code="MissingApiVersionParameter",
        )
    if version not in state.config.api_versions:
        return _bad(f"Unsupported api-version {version!r}.", "api-version", code="BadRequest")
    owner = state.authenticate(request.headers)
    if owner is None:
        return error_response(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to"
            " provide a valid key for an active subscription and use a correct regional API"
            " endpoint.",
            code="401",
            type_="authentication_error",
        )
    return owner


def _not_found(what: str) -> JSONResponse:
    return error_response(404, f"{what} not found.", code="NotFound")


def _generation_json(job: Job, gen_id: str) -> dict[str, Any]:
    return {
        "object": "video.generation",
        "id": gen_id,
        "job_id": job.id,
        "created_at": int(job.end),
        "width": job.width,
        "height": job.height,
        "n_seconds": job.seconds,
        "prompt": job.prompt,
    }


def job_json(job: Job, now: float) -> dict[str, Any]:
    phase = job.phase(now)
    terminal = phase in ("succeeded", "failed")
    return {
        "object": "video.generation.job",
        "id": job.id,
        "status": phase,
        "created_at": int(job.created),
        "finished_at": int(job.end) if terminal else None,
        "expires_at": int(job.assets_expire) if terminal else None,
        "prompt": job.prompt,
        "model": job.model,
        "n_variants": job.n_variants,
        "n_seconds": job.seconds,
        "width": job.width,
        "height": job.height,
        "generations": (
            [_generation_json(job, g) for g in job.generation_ids] if phase == "succeeded" else []
        ),
        "failure_reason": job.failure if phase == "failed" else None,
    }


def _int_field(fields: dict[str, Any], name: str, default: int | None) -> int | str | None:
    """An int from JSON or a form string; returns an error message string when malformed."""
    value = fields.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return f"'{name}' must be an integer."
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return f"'{name}' must be an integer."


def _validate_images(body: Body) -> str | None:
    raw_items = body.fields.get("inpaint_items")
    images = [u for u in body.files if u.field == "files"]
    if raw_items is None:
        return (
            "multipart requests need 'inpaint_items' describing the uploaded files."
            if images
            else None
        )
    try:
        items = json.loads(raw_items) if isinstance(raw_items, str) else raw_items
    except ValueError:
        return "'inpaint_items' must be a JSON array."
    if not isinstance(items, list) or not items:
        return "'inpaint_items' must be a non-empty JSON array."
    names = {u.filename for u in images}
    for item in items:
        if not isinstance(item, dict):
            return "each inpaint item must be an object."
        if item.get("type") not in ("image", "video"):
            return "inpaint item 'type' must be 'image' or 'video'."
        frame = item.get("frame_index")
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            return "inpaint item 'frame_index' must be a non-negative integer."
        if item.get("file_name") not in names:
            return f"inpaint item file_name {item.get('file_name')!r} matches no uploaded file."
    for upload in images:
        is_webp = upload.data[:4] == b"RIFF" and upload.data[8:12] == b"WEBP"
        if not (is_webp or upload.data.startswith(_IMAGE_MAGIC)):
            return f"uploaded file {upload.filename!r} is not a JPEG, PNG or WebP image."
    return None


async def create_job(request: Request) -> Response:
    state = state_of(request)
    owner = _precheck(request)
    if isinstance(owner, Response):
        return owner
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _bad(str(exc))
    idem_key = request.headers.get("idempotency-key") if state.config.idempotency else None
    if idem_key:
        seen = state.idempotency.get((owner, "azure", idem_key))
        if seen is not None:
            job_id, fingerprint = seen
            if fingerprint != body.fingerprint():
                return error_response(
                    409,
                    "Idempotency-Key was already used with a different request body.",
                    code="idempotency_key_reused",
                )
            job = state.jobs[job_id]
            return JSONResponse(job_json(job, state.clock()))
    fields = body.fields
    model, prompt = fields.get("model"), fields.get("prompt")
    if not isinstance(model, str) or not model:
        return _bad("'model' (the deployment name) is required.", "model")
    if not isinstance(prompt, str) or not prompt.strip():
        return _bad("'prompt' is required.", "prompt")
    width = _int_field(fields, "width", None)
    height = _int_field(fields, "height", None)
    n_seconds = _int_field(fields, "n_seconds", 5)
    n_variants = _int_field(fields, "n_variants", 1)
    for name, value in (
        ("width", width),
        ("height", height),
        ("n_seconds", n_seconds),
        ("n_variants", n_variants),
    ):
        if isinstance(value, str):
            return _bad(value, name)
        if value is None:
            return _bad(f"'{name}' is required.", name)
    assert isinstance(width, int) and isinstance(height, int)
    assert isinstance(n_seconds, int) and isinstance(n_variants, int)
    if (width, height) not in AZURE_SIZES:
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(AZURE_SIZES))
        return _bad(f"Unsupported resolution {width}x{height}. Supported: {sizes}.", "width")
    if not 1 <= n_seconds <= 20:
        return _bad("'n_seconds' must be between 1 and 20.", "n_seconds")
    max_variants = 1 if min(width, height) >= 1080 else 2  # 1080p: one variant
    if not 1 <= n_variants <= max_variants:
        return _bad(
            f"'n_variants' must be between 1 and {max_variants} at {width}x{height}.", "n_variants"
        )
    image_error = _validate_images(body) if body.multipart else None
    if image_error:
        return _bad(image_error, "inpaint_items")
    try:
        directives = parse_directives(prompt, "azure")
    except DirectiveError as exc:
        return _bad(str(exc), "prompt")
    cfg = state.config
    if cfg.deployments is not None and model not in cfg.deployments:
        return error_response(
            404,
            "The API deployment for this resource does not exist. If you created the deployment "
            "within the last 5 minutes, please wait a moment and try again.",
            code="DeploymentNotFound",
        )
    if cfg.moderation_mode == "reject" and state.moderated(prompt):
        return error_response(
            400,
            "The request was rejected by the content filter (ResponsibleAIPolicyViolation).",
            code="content_filter",
            param="prompt",
            inner_error={"code": "ResponsibleAIPolicyViolation"},
        )
    limited = _rate_limited(state, owner, directives.rate_limit)
    if limited is not None:
        return limited
    job = state.create_job(
        protocol="azure",
        owner=owner,
        prompt=prompt,
        model=model,
        width=width,
        height=height,
        seconds=n_seconds,
        n_variants=n_variants,
        directives=directives,
        input_images=sum(1 for u in body.files if u.field == "files"),
    )
    if directives.drop_after_create:
        state.stats["azure.creates_dropped"] += 1
        log.info("azure job %s created, connection dropped", job.id)
        return drop_connection()
    if idem_key:
        state.idempotency[(owner, "azure", idem_key)] = (job.id, body.fingerprint())
    log.info("azure job %s created (%dx%d, %ds)", job.id, width, height, n_seconds)
    return JSONResponse(job_json(job, state.clock()))


def _rate_limited(state: EmulatorState, owner: str, forced: bool) -> Response | None:
    nth = state.count_create()
    if forced or nth or state.over_quota(owner, "azure"):
        state.stats["azure.creates_rejected_429"] += 1
        message = (
            "Too many concurrent video generation jobs for this deployment; retry later."
            if not (forced or nth)
            else "Requests to the video generation API have exceeded the call rate limit."
        )
        return error_response(
            429,
            message,
            code="too_many_requests",
            type_="rate_limit_error",
            headers=rate_limit_headers(state.real(state.config.retry_after_seconds), with_ms=False),
        )
    return None


async def get_job(request: Request) -> Response:
    state = state_of(request)
    owner = _precheck(request)
    if isinstance(owner, Response):
        return owner
    state.stats["azure.status_requests"] += 1
    job = state.get_job(request.path_params["job_id"], owner, "azure")
    if job is None:
        return _not_found("Job")
    if state.status_error(job):
        code = state.config.status_error_code
        return error_response(
            code, "The service is temporarily unavailable.", code=str(code), type_="server_error"
        )
    return JSONResponse(job_json(job, state.clock()))


async def delete_job(request: Request) -> Response:
    state = state_of(request)
    owner = _precheck(request)
    if isinstance(owner, Response):
        return owner
    job = state.get_job(request.path_params["job_id"], owner, "azure")
    if job is None:
        return _not_found("Job")
    state.stats["azure.deletes"] += 1
    state.delete_job(job)
    return Response(status_code=204)


async def list_jobs(request: Request) -> Response:
    state = state_of(request)
    owner = _precheck(request)
    if isinstance(owner, Response):
        return owner
    query = request.query_params
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        return _bad("'limit' must be an integer.", "limit")
    if not 1 <= limit <= 100:
        return _bad("'limit' must be between 1 and 100.", "limit")
    statuses = [s for s in query.get("statuses", "").split(",") if s]
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        return _bad(f"unknown status {unknown[0]!r}.", "statuses")
    now = state.clock()
    jobs = state.list_jobs(owner, "azure")  # newest first
    if statuses:
        jobs = [j for j in jobs if j.phase(now) in statuses]
    ids = [j.id for j in jobs]
    for cursor_name in ("after", "before"):
        cursor = query.get(cursor_name)
        if cursor:
            if cursor not in ids:
                return _bad(f"'{cursor_name}' is not a known job id.", cursor_name)
            at = ids.index(cursor)
            jobs, ids = (
                (jobs[at + 1 :], ids[at + 1 :]) if cursor_name == "after" else (jobs[:at], ids[:at])
            )
    if query.get("before") and not query.get("after"):
        page = jobs[-limit:]  # the page closest to the cursor
        has_more = len(jobs) > limit
    else:
        page = jobs[:limit]
        has_more = len(jobs) > limit
    return JSONResponse(
        {
            "object": "list",
            "data": [job_json(j, now) for j in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
    )


def _generation(request: Request, owner: str) -> tuple[Job, str] | Response:
    state = state_of(request)
    gen_id = request.path_params["generation_id"]
    job_id = state.generations.get(gen_id)
    job = state.get_job(job_id, owner, "azure") if job_id else None
    if job is None or job.phase(state.clock()) != "succeeded":
        return _not_found("Generation")
    return job, gen_id


async def get_generation(request: Request) -> Response:
    owner = _precheck(request)
    if isinstance(owner, Response):
        return owner
    found = _generation(request, owner)
    if isinstance(found, Response):
        return found
    job, gen_id = found
    return JSONResponse(_generation_json(job, gen_id))


async def get_video_content(request: Request) -> Response:
    state = state_of(request)
    owner = _precheck(request)
    if isinstance(owner, Response):
        return owner
    quality = request.query_params.get("quality", "high")
    if quality not in ("high", "low"):
        return _bad("'quality' must be 'high' or 'low'.", "quality")
    found = _generation(request, owner)
    if isinstance(found, Response):
        return found
    job, _ = found
    state.stats["azure.content_requests"] += 1
    verdict = state.download_verdict(job, count=request.method != "HEAD")
    cfg = state.config
    if verdict == "expired":
        return error_response(
            cfg.expired_status, "The generated content has expired.", code="expired"
        )
    if verdict == "flaky":
        return error_response(
            cfg.flaky_status, "Bad gateway.", code="bad_gateway", type_="server_error"
        )
    if verdict == "json_body":
        return error_response(200, "The content is not available.", code="content_not_available")
    if verdict == "redirect":
        return RedirectResponse(cfg.download_redirect_url, status_code=302)
    if verdict not in ("ok", "truncated"):
        return _not_found("Content")
    data = await state.served_video(job, verdict)
    pace_s = (job.directives.download_seconds or 0.0) / cfg.time_scale
    return bytes_response(
        request, data, media_type="video/mp4", last_modified=job.end, pace_s=pace_s
    )


async def get_thumbnail(request: Request) -> Response:
    state = state_of(request)
    owner = _precheck(request)
    if isinstance(owner, Response):
        return owner
    found = _generation(request, owner)
    if isinstance(found, Response):
        return found
    job, _ = found
    if state.clock() >= job.assets_expire:
        return error_response(
            state.config.expired_status, "The generated content has expired.", code="expired"
        )
    data = await state.sample_image("jpeg")
    return bytes_response(request, data, media_type="image/jpeg", last_modified=job.end)


def routes() -> list[BaseRoute]:
    return [
        Route(f"{PREFIX}/jobs", create_job, methods=["POST"]),
        Route(f"{PREFIX}/jobs", list_jobs, methods=["GET"]),
        Route(f"{PREFIX}/jobs/{{job_id}}", get_job, methods=["GET"]),
        Route(f"{PREFIX}/jobs/{{job_id}}", delete_job, methods=["DELETE"]),
        Route(f"{PREFIX}/{{generation_id}}", get_generation, methods=["GET"]),
        Route(
            f"{PREFIX}/{{generation_id}}/content/video", get_video_content, methods=["GET", "HEAD"]
        ),
        Route(
            f"{PREFIX}/{{generation_id}}/content/thumbnail", get_thumbnail, methods=["GET", "HEAD"]
        ),
    ]
