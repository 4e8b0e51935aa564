"""replicate: the predictions API (`api.replicate.com/v1`), and its output files.

    POST /v1/models/{owner}/{name}/predictions   create from an official model: {"input": {...}}
    POST /v1/predictions                         create from a version: {"version", "input"}
    GET  /v1/predictions                         newest first, {"next", "previous", "results"}
    GET  /v1/predictions/{id}                    starting, processing, succeeded, failed, canceled
    POST /v1/predictions/{id}/cancel             the prediction, canceled (or as it ended)
    GET  /replicate-delivery/{id}/output.mp4     the output file, without auth

Auth is `Authorization: Bearer <token>`. Errors are RFC 7807 problem details
(`{"title", "detail", "status"}`). Replicate deletes API outputs an hour after the prediction
completes (`data_removed` then turns true and the output goes), so the assets' retention here is
at most an hour, whatever `retention_seconds` says. No Idempotency-Key (Replicate documents none);
`Prefer: wait` is accepted and ignored (the answer never waits).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

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

__all__ = ["DELIVERY_PREFIX", "OUTPUT_RETENTION_SECONDS", "routes"]

log = logging.getLogger("vidpipe.dev.emulator.replicate")

DELIVERY_PREFIX = "/replicate-delivery"
#: Replicate deletes an API prediction's output files an hour after it completes.
OUTPUT_RETENTION_SECONDS = 3600.0
_PAGE = 100
_ASPECTS = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
_SENSITIVE = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"title": title, "detail": detail, "status": status},
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


def _auth(request: Request) -> str | Response:
    owner = state_of(request).authenticate(request.headers)
    if owner is None:
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    return owner


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def _status(job: Job, now: float) -> str:
    phase = job.phase(now)
    if phase == "queued":
        return "starting"
    if phase == "succeeded":
        return "succeeded"
    if phase == "failed":
        return "canceled" if job.failure == "canceled" else "failed"
    return "processing"


def prediction_json(request: Request, job: Job, now: float) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    status = _status(job, now)
    removed = status == "succeeded" and now >= job.assets_expire
    output = None
    if status == "succeeded" and not removed:
        output = f"{base}{DELIVERY_PREFIX}/{job.id}/output.mp4"
    error = None
    if status == "failed":
        error = (
            _SENSITIVE
            if job.failure in ("input_moderation", "output_moderation")
            else (f"Prediction failed: {job.failure}")
        )
    terminal = job.terminal(now)
    started = job.boundaries[0] if now >= job.boundaries[0] else None
    model, _, version = job.model.partition(":")
    return {
        "id": job.id,
        "model": model,
        "version": version or "hidden",
        "input": dict(job.input),
        "logs": "",
        "output": output,
        "data_removed": removed,
        "error": error,
        "status": status,
        "source": "api",
        "created_at": _iso(job.created),
        "started_at": _iso(started),
        "completed_at": _iso(job.end) if terminal else None,
        "urls": {
            "get": f"{base}/v1/predictions/{job.id}",
            "cancel": f"{base}/v1/predictions/{job.id}/cancel",
            "web": f"{base}/p/{job.id}",
        },
        "metrics": {"predict_time": job.end - job.boundaries[0]} if terminal else {},
    }


async def _create(request: Request, model: str | None) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _problem(400, "Bad request", str(exc))
    if model is None:
        version = body.fields.get("version")
        if not isinstance(version, str) or not version:
            return _problem(422, "Input validation failed", "version is required")
        model = version if ":" in version else f"unknown/unknown:{version}"
    inputs = body.fields.get("input")
    if not isinstance(inputs, dict):
        return _problem(422, "Input validation failed", "input is required")
    prompt = inputs.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _problem(422, "Input validation failed", "- input: prompt is required")
    try:
        directives = parse_directives(prompt, "replicate")
    except DirectiveError as exc:
        return _problem(422, "Input validation failed", f"- input.prompt: {exc}")
    cfg = state.config
    if cfg.deployments is not None and model.partition(":")[0] not in cfg.deployments:
        return _problem(404, "Not found", "The requested resource could not be found.")
    duration = inputs.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 1 <= duration <= 60:
        return _problem(422, "Input validation failed", "- input.duration: must be an integer")
    aspect = inputs.get("aspect_ratio", "16:9")
    if aspect not in _ASPECTS:
        return _problem(
            422,
            "Input validation failed",
            f"- input.aspect_ratio: must be one of {', '.join(_ASPECTS)}",
        )
    if cfg.moderation_mode == "reject" and state.moderated(prompt):
        return _problem(422, "Input validation failed", _SENSITIVE)
    nth = state.count_create()
    if directives.rate_limit or nth or state.over_quota(owner, "replicate"):
        state.stats["replicate.creates_rejected_429"] += 1
        wait = state.real(cfg.retry_after_seconds)
        return _problem(
            429,
            "Request was throttled",
            f"Request was throttled. Expected available in {max(1, round(wait))} second.",
            headers=rate_limit_headers(wait, with_ms=False),
        )
    width, height = _ASPECTS[str(aspect)]
    job = state.create_job(
        protocol="replicate",
        owner=owner,
        prompt=prompt,
        model=model,
        width=width,
        height=height,
        seconds=duration,
        n_variants=1,
        directives=directives,
        input_images=1 if inputs.get("image") else 0,
    )
    job.input = {k: v for k, v in inputs.items() if k != "image"}
    # API outputs are deleted an hour after completion (in emulated seconds, like the rest).
    job.retention = min(job.retention, OUTPUT_RETENTION_SECONDS / job.scale)
    if directives.drop_after_create:
        state.stats["replicate.creates_dropped"] += 1
        return drop_connection()
    webhook = body.fields.get("webhook")
    events = body.fields.get("webhook_events_filter") or ["start", "output", "logs", "completed"]
    if isinstance(webhook, str) and webhook and isinstance(events, list) and "completed" in events:
        # Only the "completed" event is sent (the one a job's end is announced by).
        hooks_of(request).send_when_done(
            job, webhook, lambda done, now: prediction_json(request, done, now)
        )
    log.info("replicate prediction %s created for %s", job.id, model)
    return JSONResponse(prediction_json(request, job, state.clock()), status_code=201)


async def create_for_model(request: Request) -> Response:
    params = request.path_params
    return await _create(request, f"{params['owner']}/{params['name']}")


async def create_for_version(request: Request) -> Response:
    return await _create(request, None)


def _job(request: Request) -> Job | Response:
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    job = state_of(request).get_job(request.path_params["prediction_id"], owner, "replicate")
    if job is None:
        return _problem(404, "Not found", "The requested resource could not be found.")
    return job


async def get_prediction(request: Request) -> Response:
    state = state_of(request)
    job = _job(request)
    if isinstance(job, Response):
        return job
    state.stats["replicate.status_requests"] += 1
    if state.status_error(job):
        code = state.config.status_error_code
        return _problem(code, "Internal server error", "Something went wrong. Try again.")
    return JSONResponse(prediction_json(request, job, state.clock()))


async def cancel_prediction(request: Request) -> Response:
    state = state_of(request)
    job = _job(request)
    if isinstance(job, Response):
        return job
    now = state.clock()
    state.stats["replicate.cancel_requests"] += 1
    if not job.terminal(now):
        job.failure = "canceled"
        job.boundaries = (now, now, now, now)
    return JSONResponse(prediction_json(request, job, now))


async def list_predictions(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    jobs = state.list_jobs(owner, "replicate")  # newest first
    cursor = request.query_params.get("cursor", "0")
    start = int(cursor) if cursor.isdigit() else 0
    page = jobs[start : start + _PAGE]
    base = str(request.base_url).rstrip("/")
    more = start + _PAGE < len(jobs)
    now = state.clock()
    return JSONResponse(
        {
            "next": f"{base}/v1/predictions?cursor={start + _PAGE}" if more else None,
            "previous": f"{base}/v1/predictions?cursor={max(0, start - _PAGE)}" if start else None,
            "results": [prediction_json(request, j, now) for j in page],
        }
    )


async def delivery(request: Request) -> Response:
    """The output file, as replicate.delivery serves it: no auth, the download switches apply."""
    state = state_of(request)
    job = state.jobs.get(request.path_params["prediction_id"])
    if job is None or job.protocol != "replicate":
        return _problem(404, "Not found", "File not found")
    state.stats["replicate.content_requests"] += 1
    cfg = state.config
    verdict = state.download_verdict(job, count=request.method != "HEAD")
    if verdict == "expired":
        return _problem(cfg.expired_status, "Gone", "The file was deleted")
    if verdict == "flaky":
        return _problem(cfg.flaky_status, "Bad gateway", "Bad gateway")
    if verdict == "json_body":
        return JSONResponse({"detail": "File not available"})
    if verdict == "redirect":
        return RedirectResponse(cfg.download_redirect_url, status_code=302)
    if verdict not in ("ok", "truncated"):
        return _problem(404, "Not found", "File not found")
    data = await state.served_video(job, verdict)
    return bytes_response(
        request,
        data,
        media_type="video/mp4",
        last_modified=job.end,
        pace_s=(job.directives.download_seconds or 0.0) / cfg.time_scale,
    )


async def webhook_secret(request: Request) -> Response:
    """`GET /v1/webhooks/default/secret`: the key the account's webhooks are signed with."""
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    return JSONResponse({"key": state_of(request).config.webhook_secret.get_secret_value()})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/webhooks/default/secret", webhook_secret, methods=["GET"]),
        Route("/v1/models/{owner}/{name}/predictions", create_for_model, methods=["POST"]),
        Route("/v1/predictions", create_for_version, methods=["POST"]),
        Route("/v1/predictions", list_predictions, methods=["GET"]),
        Route("/v1/predictions/{prediction_id}", get_prediction, methods=["GET"]),
        Route("/v1/predictions/{prediction_id}/cancel", cancel_prediction, methods=["POST"]),
        Route(f"{DELIVERY_PREFIX}/{{prediction_id}}/output.mp4", delivery, methods=["GET", "HEAD"]),
    ]
