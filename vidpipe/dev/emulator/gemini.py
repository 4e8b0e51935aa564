"""gemini: the Gemini API's video routes (`generativelanguage.googleapis.com/v1beta`).

Veo, a long-running operation (the `google-genai` SDK's `models.generate_videos`, then
`operations.get`, then `files.download`):

    POST /v1beta/models/{model}:predictLongRunning   {instances: [{prompt, image?}], parameters}
                                                      -> {"name": "models/{model}/operations/{id}"}
    GET  /v1beta/models/{model}/operations/{id}      until "done": true; the videos at
                                                      response.generateVideoResponse
                                                      .generatedSamples[].video.uri
    GET  /v1beta/files/{file}:download?alt=media     the video, with the key (as the real API)

Gemini Omni, the Interactions API (the SDK's `interactions.create(..., background=True)`):

    POST   /v1beta/interactions              {model, input, response_modalities, background}
    GET    /v1beta/interactions/{id}         in_progress, completed, failed, cancelled
    POST   /v1beta/interactions/{id}/cancel  the interaction, cancelled (or as it ended)
    DELETE /v1beta/interactions/{id}         {}

A completed interaction carries the MP4 in its last `model_output` step: inline as base64 (`data`)
up to `interactions_inline_max_bytes`, else as a `uri` on the files route above.

Auth is `x-goog-api-key` (or `key=` in the query). Errors are Google's
`{"error": {"code", "message", "status", "details"}}`; a wrong key is a 400 with the ErrorInfo
reason `API_KEY_INVALID`, as the real API answers, and a 429 says when to come back in a RetryInfo
detail (`retryDelay`) as well as `Retry-After`. Neither API honours an Idempotency-Key, so neither
does this; the download switches act on the files route.
"""

from __future__ import annotations

import base64
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
    rate_limit_headers,
    read_body,
    state_of,
)
from vidpipe.dev.emulator.config import DirectiveError, parse_directives
from vidpipe.dev.emulator.state import Job

__all__ = ["OMNI_SECONDS", "routes"]

log = logging.getLogger("vidpipe.dev.emulator.gemini")

_ASPECTS = {"16:9": (1280, 720), "9:16": (720, 1280)}
_RESOLUTIONS = {"720p": 720, "1080p": 1080}
#: Veo's default length when a create names none (Veo 3's).
VEO_DEFAULT_SECONDS = 8
#: An Omni clip's length: the Interactions API takes no duration.
OMNI_SECONDS = 10
_USAGE = (
    "The prompt could not be submitted. This prompt contains words that violate the usage "
    "guidelines. Try rephrasing the prompt."
)
_RAI_REASON = (
    "We encountered an issue with the generated video. The video could not be shown because "
    "it violates the usage guidelines."
)
_RESPONSE_TYPE = (
    "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
)
# google.rpc.Code numbers, for an operation's error.
_RPC = {"internal_error": 13, "deadline_exceeded": 4, "resource_exhausted": 8}


def _error(
    http_status: int,
    message: str,
    status: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=http_status, headers=headers)


def _auth(request: Request) -> str | Response:
    supplied = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    owner = state_of(request).authenticate({"api-key": supplied} if supplied else {})
    if owner is not None:
        return owner
    if not supplied:
        return _error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API.",
            "PERMISSION_DENIED",
        )
    return _error(
        400,
        "API key not valid. Please pass a valid API key.",
        "INVALID_ARGUMENT",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    )


def _rate_limited(request: Request) -> Response:
    state = state_of(request)
    state.stats["gemini.creates_rejected_429"] += 1
    wait = state.real(state.config.retry_after_seconds)
    return _error(
        429,
        "Resource has been exhausted (e.g. check quota).",
        "RESOURCE_EXHAUSTED",
        details=[
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait:.3f}s"}
        ],
        headers=rate_limit_headers(wait, with_ms=False),
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def _file_id(job: Job, index: int) -> str:
    # Lowercase letters and digits only: the SDK reads a file id out of the URI that way.
    return f"{job.id}v{index}"


def _file_uri(request: Request, job: Job, index: int) -> str:
    base = str(request.base_url).rstrip("/")
    return f"{base}/v1beta/files/{_file_id(job, index)}:download?alt=media"


def _moderated(job: Job) -> bool:
    return job.failure in ("input_moderation", "output_moderation")


def _kind(job: Job) -> str:
    return str(job.input.get("kind", "operation"))


def _admitted(request: Request, owner: str, prompt: str) -> Response | None:
    """Directives, moderation at create, and the rate and concurrency limits."""
    state = state_of(request)
    try:
        directives = parse_directives(prompt, "gemini")
    except DirectiveError as exc:
        return _error(400, str(exc), "INVALID_ARGUMENT")
    cfg = state.config
    if cfg.moderation_mode == "reject" and state.moderated(prompt):
        return _error(400, _USAGE, "INVALID_ARGUMENT")
    nth = state.count_create()
    if directives.rate_limit or nth or state.over_quota(owner, "gemini"):
        return _rate_limited(request)
    return None


# -- Veo: predictLongRunning ---------------------------------------------------------------


async def predict_long_running(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    model = request.path_params["model"]
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _error(400, str(exc), "INVALID_ARGUMENT")
    instances = body.fields.get("instances")
    instance = instances[0] if isinstance(instances, list) and instances else None
    if not isinstance(instance, dict):
        return _error(400, "* instances: at least one instance is required", "INVALID_ARGUMENT")
    prompt = instance.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _error(400, "* instances[0].prompt: a prompt is required", "INVALID_ARGUMENT")
    cfg = state.config
    if cfg.deployments is not None and model not in cfg.deployments:
        return _error(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "predictLongRunning. Call ListModels to see the list of available models.",
            "NOT_FOUND",
        )
    params = body.fields.get("parameters") or {}
    if not isinstance(params, dict):
        return _error(400, "* parameters: must be an object", "INVALID_ARGUMENT")
    aspect = params.get("aspectRatio", "16:9")
    if aspect not in _ASPECTS:
        return _error(400, f"aspectRatio must be one of {', '.join(_ASPECTS)}", "INVALID_ARGUMENT")
    seconds = params.get("durationSeconds", VEO_DEFAULT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 60:
        return _error(400, "durationSeconds must be a whole number of seconds", "INVALID_ARGUMENT")
    resolution = params.get("resolution", "720p")
    if resolution not in _RESOLUTIONS:
        return _error(
            400, f"resolution must be one of {', '.join(_RESOLUTIONS)}", "INVALID_ARGUMENT"
        )
    samples = params.get("sampleCount", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 4:
        return _error(400, "sampleCount must be 1 to 4", "INVALID_ARGUMENT")
    refused = _admitted(request, owner, prompt)
    if refused is not None:
        return refused
    width, height = _ASPECTS[str(aspect)]
    if _RESOLUTIONS[str(resolution)] == 1080:
        width, height = width * 3 // 2, height * 3 // 2
    job = state.create_job(
        protocol="gemini",
        owner=owner,
        prompt=prompt,
        model=model,
        width=width,
        height=height,
        seconds=seconds,
        n_variants=samples,
        directives=parse_directives(prompt, "gemini"),
        input_images=1 if isinstance(instance.get("image"), dict) else 0,
    )
    job.input = {"kind": "operation"}
    if job.directives.drop_after_create:
        state.stats["gemini.creates_dropped"] += 1
        return drop_connection()
    log.info("gemini operation %s created for %s", job.id, model)
    return JSONResponse({"name": f"models/{model}/operations/{job.id}"})


def _operation_json(request: Request, job: Job, now: float) -> dict[str, Any]:
    data: dict[str, Any] = {"name": f"models/{job.model}/operations/{job.id}"}
    phase = job.phase(now)
    if phase not in ("succeeded", "failed"):
        return data
    data["done"] = True
    if phase == "failed" and not _moderated(job):
        code = _RPC.get(job.failure or "", 13)
        data["error"] = {"code": code, "message": f"Video generation failed: {job.failure}"}
        return data
    video: dict[str, Any] = {"@type": _RESPONSE_TYPE}
    if phase == "failed":  # moderated: done, with the videos filtered out
        video["generateVideoResponse"] = {
            "raiMediaFilteredCount": job.n_variants,
            "raiMediaFilteredReasons": [_RAI_REASON],
        }
    else:
        video["generateVideoResponse"] = {
            "generatedSamples": [
                {"video": {"uri": _file_uri(request, job, i)}} for i in range(job.n_variants)
            ]
        }
    data["response"] = video
    return data


def _job(request: Request, job_id: str, kind: str) -> Job | Response:
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    job = state_of(request).get_job(job_id, owner, "gemini")
    if job is None or _kind(job) != kind:
        what = "Operation" if kind == "operation" else "Interaction"
        return _error(404, f"{what} not found: {job_id}", "NOT_FOUND")
    return job


def _status_error(request: Request, job: Job) -> Response | None:
    state = state_of(request)
    state.stats["gemini.status_requests"] += 1
    if state.status_error(job):
        code = state.config.status_error_code
        return _error(code, "The service is currently unavailable.", "UNAVAILABLE")
    return None


async def get_operation(request: Request) -> Response:
    params = request.path_params
    job = _job(request, params["operation_id"], "operation")
    if isinstance(job, Response):
        return job
    if job.model != params["model"]:
        return _error(404, f"Operation not found: {params['operation_id']}", "NOT_FOUND")
    failed = _status_error(request, job)
    if failed is not None:
        return failed
    return JSONResponse(_operation_json(request, job, state_of(request).clock()))


async def download_file(request: Request) -> Response:
    """A generated video, with the key; the download switches apply."""
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    job_id, _, index = request.path_params["file_id"].rpartition("v")
    job = state.get_job(job_id, owner, "gemini")
    if job is None or not index.isdigit() or int(index) >= job.n_variants:
        return _error(404, "File not found.", "NOT_FOUND")
    state.stats["gemini.content_requests"] += 1
    cfg = state.config
    verdict = state.download_verdict(job, count=request.method != "HEAD")
    if verdict == "expired":
        return _error(cfg.expired_status, "The file has expired.", "NOT_FOUND")
    if verdict == "flaky":
        return _error(cfg.flaky_status, "Bad gateway.", "UNAVAILABLE")
    if verdict == "json_body":
        return JSONResponse({"error": {"code": 404, "message": "File not available."}})
    if verdict == "redirect":
        return RedirectResponse(cfg.download_redirect_url, status_code=302)
    if verdict not in ("ok", "truncated"):
        return _error(404, "File not found.", "NOT_FOUND")
    data = await state.served_video(job, verdict)
    return bytes_response(
        request,
        data,
        media_type="video/mp4",
        last_modified=job.end,
        pace_s=(job.directives.download_seconds or 0.0) / cfg.time_scale,
    )


# -- Omni: the Interactions API ------------------------------------------------------------


def _input_parts(value: object) -> tuple[str, int]:
    """The prompt text and the number of images in an interaction's `input`."""
    if isinstance(value, str):
        return value, 0
    items: list[Any] = []
    if isinstance(value, dict):
        items = [value]
    elif isinstance(value, list):
        for item in value:
            # A list of steps carries its content inside each step.
            content = item.get("content") if isinstance(item, dict) else None
            items.extend(content if isinstance(content, list) else [item])
    texts = [
        str(i.get("text", "")) for i in items if isinstance(i, dict) and i.get("type") == "text"
    ]
    images = sum(1 for i in items if isinstance(i, dict) and i.get("type") == "image")
    return " ".join(t for t in texts if t), images


def _interaction_json(request: Request, job: Job, now: float) -> dict[str, Any]:
    phase = job.phase(now)
    status = "in_progress"
    if phase == "succeeded":
        status = "completed"
    elif phase == "failed":
        status = "cancelled" if job.failure == "cancelled" else "failed"
    data: dict[str, Any] = {
        "id": job.id,
        "model": job.model,
        "status": status,
        "created": _iso(job.created),
        "updated": _iso(min(now, job.end)),
        "response_modalities": ["video"],
        "steps": [{"type": "user_input", "content": [{"type": "text", "text": job.prompt}]}],
    }
    if status == "failed":
        code = "SAFETY" if _moderated(job) else "INTERNAL"
        message = _RAI_REASON if _moderated(job) else f"Video generation failed: {job.failure}"
        data["errors"] = [{"code": code, "message": message}]
    return data


async def create_interaction(request: Request) -> Response:
    state = state_of(request)
    owner = _auth(request)
    if isinstance(owner, Response):
        return owner
    try:
        body = await read_body(request)
    except BodyError as exc:
        return _error(400, str(exc), "INVALID_ARGUMENT")
    fields = body.fields
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        return _error(400, "* model: a model is required", "INVALID_ARGUMENT")
    model = model.removeprefix("models/")
    prompt, images = _input_parts(fields.get("input"))
    if not prompt.strip():
        return _error(400, "* input: a text prompt is required", "INVALID_ARGUMENT")
    modalities = fields.get("response_modalities")
    if not isinstance(modalities, list) or "video" not in modalities:
        return _error(400, "* response_modalities: this emulator makes videos", "INVALID_ARGUMENT")
    if fields.get("background") is not True:
        # A video takes longer than a request may stay open.
        return _error(
            400, "* background: video generation runs in the background only", "INVALID_ARGUMENT"
        )
    cfg = state.config
    if cfg.deployments is not None and model not in cfg.deployments:
        return _error(404, f"models/{model} is not found for API version v1beta", "NOT_FOUND")
    refused = _admitted(request, owner, prompt)
    if refused is not None:
        return refused
    job = state.create_job(
        protocol="gemini",
        owner=owner,
        prompt=prompt,
        model=model,
        width=1280,
        height=720,
        seconds=OMNI_SECONDS,
        n_variants=1,
        directives=parse_directives(prompt, "gemini"),
        input_images=images,
    )
    job.input = {"kind": "interaction"}
    if job.directives.drop_after_create:
        state.stats["gemini.creates_dropped"] += 1
        return drop_connection()
    log.info("gemini interaction %s created for %s", job.id, model)
    return JSONResponse(_interaction_json(request, job, state.clock()))


async def get_interaction(request: Request) -> Response:
    state = state_of(request)
    job = _job(request, request.path_params["interaction_id"], "interaction")
    if isinstance(job, Response):
        return job
    failed = _status_error(request, job)
    if failed is not None:
        return failed
    data = _interaction_json(request, job, state.clock())
    if data["status"] != "completed":
        return JSONResponse(data)
    # The video, in the last model_output step: inline while small, else as a URI.
    video: dict[str, Any] = {"type": "video", "mime_type": "video/mp4"}
    verdict = state.download_verdict(job, count=False)
    size = len(await state.served_video(job, "ok"))
    if verdict == "ok" and size <= state.config.interactions_inline_max_bytes:
        state.stats["gemini.content_requests"] += 1
        video["data"] = base64.b64encode(await state.served_video(job, "ok")).decode("ascii")
    else:
        video["uri"] = _file_uri(request, job, 0)
    data["steps"].append({"type": "model_output", "content": [video]})
    return JSONResponse(data)


async def cancel_interaction(request: Request) -> Response:
    state = state_of(request)
    job = _job(request, request.path_params["interaction_id"], "interaction")
    if isinstance(job, Response):
        return job
    now = state.clock()
    if not job.terminal(now):
        job.failure = "cancelled"
        job.boundaries = (now, now, now, now)
    return JSONResponse(_interaction_json(request, job, now))


async def delete_interaction(request: Request) -> Response:
    state = state_of(request)
    job = _job(request, request.path_params["interaction_id"], "interaction")
    if isinstance(job, Response):
        return job
    state.delete_job(job)
    return JSONResponse({})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1beta/models/{model}:predictLongRunning", predict_long_running, methods=["POST"]),
        Route("/v1beta/models/{model}/operations/{operation_id}", get_operation, methods=["GET"]),
        Route("/v1beta/files/{file_id}:download", download_file, methods=["GET", "HEAD"]),
        Route("/v1beta/interactions", create_interaction, methods=["POST"]),
        Route("/v1beta/interactions/{interaction_id}", get_interaction, methods=["GET"]),
        Route("/v1beta/interactions/{interaction_id}", delete_interaction, methods=["DELETE"]),
        Route("/v1beta/interactions/{interaction_id}/cancel", cancel_interaction, methods=["POST"]),
    ]
