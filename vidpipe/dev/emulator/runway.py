"""runway: Runway's tasks API (`api.dev.runwayml.com/v1`), and its output files.

    POST   /v1/text_to_video        {model, promptText, ratio, duration}   -> {"id"}
    POST   /v1/image_to_video       {model, promptImage, promptText?, ratio, duration} -> {"id"}
    GET    /v1/tasks/{id}           THROTTLED, PENDING, RUNNING (progress), SUCCEEDED (output URLs),
                                    FAILED (failure, failureCode), CANCELLED
    DELETE /v1/tasks/{id}           204: a task in flight is cancelled, an ended one deleted
    GET    /runway-cdn/{id}/output.mp4?_jwt=...   the output file, without auth, as Runway's CDN

Auth is `Authorization: Bearer <key>`, and every call needs `X-Runway-Version: 2024-11-06`
(the `runwayml` SDK sends both). Errors are `{"error": "message"}` (a validation failure adds
`issues`). A task waits THROTTLED for the first half of its queue time (as one over the
per-model concurrency does), then PENDING. Over `max_concurrent_jobs` a create answers 429.
Runway documents no Idempotency-Key, so none is honoured; the download switches act on the
output file, whose URL the task hands out again on every read (Runway's expire in 24-48 h).
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from vidpipe.dev.emulator.common import (
    BodyError,
    bytes_response,
    drop_connection,
    rate_limit_headers,
    read_body,
    state_of,
)
from vidpipe.dev.emulator.config import DirectiveError, parse_directives
from vidpipe.dev.emulator.state import Job

__all__ = ["CDN_PREFIX", "RUNWAY_VERSION", "routes"]

log = logging.getLogger("vidpipe.dev.emulator.runway")

CDN_PREFIX = "/runway-cdn"
RUNWAY_VERSION = "2024-11-06"
_RATIO = re.compile(r"^(\d{2,5}):(\d{2,5})$")
# Credits per second of video: an estimate to show, not Runway's price list.
_CREDITS_PER_SECOND = 10
_FAILURES = {
    "input_moderation": ("SAFETY.INPUT.TEXT", "The prompt was flagged by content moderation."),
    "output_moderation": ("SAFETY.OUTPUT.VIDEO", "The output was flagged by content moderation."),
    "internal_error": ("INTERNAL", "An unexpected error occurred."),
}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _auth(request: Request) -> str | Response:
    owner = state_of(request).authenticate(request.headers)
    if owner is None:
        return _error(401, "Incorrect or missing API key.")
    version = request.headers.get("x-runway-version")
    if version != RUNWAY_VERSION:
        return _error(
            400,
            "You must provide a valid X-Runway-Version header"
            f" (e.g. X-Runway-Version: {RUNWAY_VERSION}).",
        )
    return owner


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _invalid(path: str, message: str) -> JSONResponse:
    return _error(
        400,
        "Validation of body failed",
        issues=[{"code": "invalid", "path": [path], "message": message}],
    )


async def _create(request: Request, with_image: bool) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _error(400, str(exc))
    fields = body.fields
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("model", "Required")
    prompt = fields.get("promptText")
    if with_image:
        image = fields.get("promptImage")
        if not (isinstance(image, str) and image) and not (isinstance(image, list) and image):
            return _invalid("promptImage", "Required")
        prompt = prompt if isinstance(prompt, str) else ""
    elif not isinstance(prompt, str) or not prompt.strip():
        return _invalid("promptText", "Required")
    ratio = fields.get("ratio")
    match = _RATIO.match(ratio) if isinstance(ratio, str) else None
    if match is None:
        return _invalid("ratio", "Expected a ratio such as 1280:720")
    duration = fields.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 2 <= duration <= 60:
        return _invalid("duration", "Expected an integer from 2 to 60")
    try:
        directives = parse_directives(prompt, "runway")
    except DirectiveError as exc:
        return _invalid("promptText", str(exc))
    cfg = state.config
    if cfg.deployments is not None and model not in cfg.deployments:
        return _invalid("model", f"Invalid model {model!r}")
    if cfg.moderation_mode == "reject" and state.moderated(prompt):
        return _error(
            400, "The prompt was flagged by content moderation.", code="SAFETY.INPUT.TEXT"
        )
    nth = state.count_create()
    if directives.rate_limit or nth or state.over_quota(owner, "runway"):
        state.stats["runway.creates_rejected_429"] += 1
        return _error(
            429,
            "You have exceeded the concurrency limit for this model. Try again later.",
            headers=rate_limit_headers(state.real(cfg.retry_after_seconds), with_ms=False),
        )
    job = state.create_job(
        protocol="runway",
        owner=owner,
        prompt=prompt,
        model=model,
        width=int(match.group(1)),
        height=int(match.group(2)),
        seconds=duration,
        n_variants=1,
        directives=directives,
        input_images=1 if with_image else 0,
    )
    if directives.drop_after_create:
        state.stats["runway.creates_dropped"] += 1
        return drop_connection()
    log.info("runway task %s created for %s", job.id, model)
    return JSONResponse({"id": job.id})


async def text_to_video(request: Request) -> Response:
    return await _create(request, with_image=False)


async def image_to_video(request: Request) -> Response:
    return await _create(request, with_image=True)


def task_json(request: Request, job: Job, now: float) -> dict[str, Any]:
    data: dict[str, Any] = {"id": job.id, "createdAt": _iso(job.created)}
    credits = job.seconds * _CREDITS_PER_SECOND
    phase = job.phase(now)
    if phase == "queued":
        # The first half of the queue time waiting for a concurrency slot, then pending.
        half = job.created + (job.boundaries[0] - job.created) / 2
        data["status"] = "THROTTLED" if now < half else "PENDING"
        data["estimatedCost"] = {"credits": credits}
    elif phase == "succeeded":
        # A fresh signed URL on every read, as Runway's CDN links are.
        base = str(request.base_url).rstrip("/")
        token = secrets.token_urlsafe(12)
        data.update(
            status="SUCCEEDED",
            output=[f"{base}{CDN_PREFIX}/{job.id}/output.mp4?_jwt={token}"],
            cost={"credits": credits},
        )
    elif phase == "failed" and job.failure == "cancelled":
        data.update(status="CANCELLED", cost={"credits": 0})
    elif phase == "failed":
        code, message = _FAILURES.get(
            job.failure or "", ((job.failure or "internal").upper(), "The task failed.")
        )
        data.update(status="FAILED", failure=message, failureCode=code, cost={"credits": 0})
    else:
        data.update(
            status="RUNNING",
            progress=round(job.progress(now) / 100, 2),
            estimatedCost={"credits": credits},
        )
    return data


def _job(request: Request) -> Job | Response:
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    job = state_of(request).get_job(request.path_params["task_id"], owner, "runway")
    if job is None:
        return _error(404, "Task not found.")
    return job


async def get_task(request: Request) -> Response:
    state = state_of(request)
    job = _job(request)
    if isinstance(job, Response):
        return job
    state.stats["runway.status_requests"] += 1
    if state.status_error(job):
        return _error(state.config.status_error_code, "Internal server error.")
    return JSONResponse(task_json(request, job, state.clock()))


async def delete_task(request: Request) -> Response:
    state = state_of(request)
    job = _job(request)
    if isinstance(job, Response):
        return job
    now = state.clock()
    if job.terminal(now):
        state.delete_job(job)  # an ended task is deleted: its outputs go with it
    else:
        job.failure = "cancelled"
        job.boundaries = (now, now, now, now)
    return Response(status_code=204)


async def cdn(request: Request) -> Response:
    """The output file, as Runway's CDN serves it: no auth, the download switches apply."""
    state = state_of(request)
    job = state.jobs.get(request.path_params["task_id"])
    if job is None or job.protocol != "runway" or not request.query_params.get("_jwt"):
        return Response("Forbidden", status_code=403, media_type="text/plain")
    state.stats["runway.content_requests"] += 1
    cfg = state.config
    verdict = state.download_verdict(job, count=request.method != "HEAD")
    if verdict == "expired":
        return Response("Expired", status_code=cfg.expired_status, media_type="text/plain")
    if verdict == "flaky":
        return Response("Bad Gateway", status_code=cfg.flaky_status, media_type="text/plain")
    if verdict == "json_body":
        return JSONResponse({"error": "File not available"})
    if verdict == "redirect":
        return RedirectResponse(cfg.download_redirect_url, status_code=302)
    if verdict not in ("ok", "truncated"):
        return Response("Not Found", status_code=404, media_type="text/plain")
    data = await state.served_video(job, verdict)
    return bytes_response(
        request,
        data,
        media_type="video/mp4",
        last_modified=job.end,
        pace_s=(job.directives.download_seconds or 0.0) / cfg.time_scale,
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/text_to_video", text_to_video, methods=["POST"]),
        Route("/v1/image_to_video", image_to_video, methods=["POST"]),
        Route("/v1/tasks/{task_id}", get_task, methods=["GET"]),
        Route("/v1/tasks/{task_id}", delete_task, methods=["DELETE"]),
        Route(f"{CDN_PREFIX}/{{task_id}}/output.mp4", cdn, methods=["GET", "HEAD"]),
    ]
