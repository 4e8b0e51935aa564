"""Emulator behaviour: the start-up/runtime config and the per-request prompt directives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from vidpipe.errors import DirectiveError

__all__ = [
    "DEV_WEBHOOK_SECRET",
    "DOWNLOAD_MODES",
    "DirectiveError",
    "Directives",
    "DownloadMode",
    "EmulatorConfig",
    "parse_directives",
]

# "truncated": a real MP4 cut at 40 %, served whole (its Content-Length is the cut length);
# "redirect": 302 to `download_redirect_url` (by default the cloud metadata address).
DownloadMode = Literal["ok", "missing", "delayed", "flaky", "json_body", "truncated", "redirect"]
# The emulator's webhook signing secret unless told otherwise: a development value, known to
# `vidpipe up` and the tests (VIDPIPE_REPLICATE_WEBHOOK_SECRET, VIDPIPE_OPENAI_WEBHOOK_SECRET).
DEV_WEBHOOK_SECRET = "whsec_ZW11bGF0b3Itd2ViaG9vay1zZWNyZXQtZm9yLWRldg=="  # noqa: S105
# Bounds of a served video's duration: the longest any request may ask for (schemas/events.py
# takes 1-60 seconds), and a few frames at the shortest.
MAX_VIDEO_SECONDS = 60.0
MIN_VIDEO_SECONDS = 0.1
DOWNLOAD_MODES: tuple[str, ...] = (
    "ok",
    "missing",
    "delayed",
    "flaky",
    "json_body",
    "truncated",
    "redirect",
)


class EmulatorConfig(BaseModel):
    """Everything the emulator can be told. Durations are in *emulated* seconds.

    Real time = emulated time / `time_scale`. Timestamps in responses are real wall-clock unix
    seconds, so a client's own clock agrees with `expires_at`; only durations are compressed.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # None disables the check (any or no key is accepted).
    api_key: SecretStr | None = SecretStr("emulator-key")
    time_scale: float = Field(default=1.0, gt=0)

    # Job schedule: queued -> preprocessing -> running -> processing -> done.
    queued_seconds: float = Field(default=1.0, ge=0)
    preprocessing_seconds: float = Field(default=1.0, ge=0)
    running_seconds: float = Field(default=4.0, ge=0)
    processing_seconds: float = Field(default=1.0, ge=0)
    slow_factor: float = Field(default=10.0, ge=1)  # [emulator:slow] multiplies the schedule
    # Sent as openai-poll-after-ms (scaled to real time).
    poll_after_seconds: float = Field(default=5.0, gt=0)

    # Downloads.
    download: DownloadMode = "ok"
    download_delay_seconds: float = Field(
        default=60.0, ge=0
    )  # "delayed": 404 until this long after completion
    retention_seconds: float = Field(
        default=86_400.0, gt=0
    )  # assets expire this long after creation/completion
    expired_status: Literal[404, 410] = 410
    flaky_status: int = Field(default=502, ge=500, le=599)
    # Where "redirect" sends a content request: absolute, or a path on the emulator itself
    # (e.g. /_emulator/sample.mp4, the sample video as a pre-signed blob URL would serve it).
    download_redirect_url: str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"

    # Failures and moderation.
    fail: str | None = Field(default=None, pattern=r"^[a-z_]+$")  # every job fails with this reason
    moderation_words: list[str] = Field(default_factory=lambda: ["forbidden"])
    # "job": the job is accepted then fails with input_moderation; "reject": create answers 400.
    moderation_mode: Literal["job", "reject"] = "job"

    # Rate limits and injected errors.
    rate_limit_every: int | None = Field(default=None, ge=1)  # every Nth create answers 429
    max_concurrent_jobs: int | None = Field(default=2, ge=1)  # in-flight jobs per key and protocol
    retry_after_seconds: float = Field(default=10.0, gt=0)
    status_error_rate: float = Field(default=0.0, ge=0, le=1)  # share of job GETs answering 5xx
    status_error_code: int = Field(default=503, ge=500, le=599)
    seed: int | None = None  # seeds the status-error dice, for repeatable runs
    # False: Idempotency-Key is ignored, as a provider that does not honour it would (neither real
    # API promises to); vidpipe must still start one job per request.
    idempotency: bool = True

    # Provider-wide faults, drawn per API request (see faults.py); a fault test turns them on
    # for a burst and off again. Shares are 0..1; rate limit and server error together <= 1.
    fault_rate_limit_share: float = Field(default=0.0, ge=0, le=1)
    fault_server_error_share: float = Field(default=0.0, ge=0, le=1)
    fault_drop_after_create_share: float = Field(default=0.0, ge=0, le=1)
    fault_slow_share: float = Field(default=0.0, ge=0, le=1)
    fault_slow_seconds: float = Field(default=0.0, ge=0, le=600)  # real seconds, not emulated

    # The providers' own webhooks (vidpipe/dev/emulator/webhooks.py): "ok" sends them signed,
    # "lost" never sends them, "forged" sends them with a signature that does not verify.
    webhooks: Literal["ok", "lost", "forged"] = "ok"
    # Signs replicate's and openai's webhooks (Standard Webhooks); a development value.
    webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    # Where every /v1/videos job's video.completed / video.failed goes (OpenAI sets this per
    # project in its dashboard, not per request); None: none is sent.
    openai_webhook_url: str | None = None

    # gemini's Interactions API: a finished video up to this size comes inline (base64) in the
    # interaction; a larger one, or one the download switches hold back, as a URI. 0: always a URI.
    interactions_inline_max_bytes: int = Field(default=20 * 1024 * 1024, ge=0)

    # Routing checks.
    deployments: list[str] | None = None  # None: any model / deployment name is accepted
    api_versions: list[str] = Field(default_factory=lambda: ["preview"])  # azure-sora only

    # The sample video every job "generates".
    video_width: int = Field(default=320, ge=16)
    video_height: int = Field(default=180, ge=16)
    # None: each job's video lasts what the job asked for (Azure n_seconds, /v1/videos seconds);
    # a number forces that duration on every job, as a provider ignoring the request would.
    video_seconds: float | None = Field(default=None, gt=0, le=MAX_VIDEO_SECONDS)
    video_fps: int = Field(default=24, ge=1, le=60)

    @field_validator("video_width", "video_height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (yuv420p)")
        return value

    @model_validator(mode="after")
    def _fault_shares_fit(self) -> EmulatorConfig:
        # One draw decides between a 429 and a 5xx, so their shares share one unit interval.
        if self.fault_rate_limit_share + self.fault_server_error_share > 1:
            raise ValueError("fault_rate_limit_share + fault_server_error_share must be <= 1")
        return self

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready view for GET /_emulator/config; the key is masked, never echoed."""
        data = self.model_dump(mode="json")
        data["api_key"] = None if self.api_key is None else "**********"
        data["webhook_secret"] = "**********"  # noqa: S105 - the mask, not a secret
        return data

    def updated(self, changes: dict[str, Any]) -> EmulatorConfig:
        """A validated copy with `changes` applied (unknown fields are refused)."""
        merged = self.model_dump()
        merged.update(changes)
        return EmulatorConfig.model_validate(merged)


# `[emulator:key=value]`, or `[emulator:azure.key=value]` / `[emulator:openai.key=value]` /
# `[emulator:fal.key=value]` / `[emulator:replicate.key=value]` / `[emulator:gemini.key=value]` /
# `[emulator:runway.key=value]` to apply
# to one protocol only (a failed-over request keeps its prompt but changes provider).
_DIRECTIVE = re.compile(
    r"\[emulator:(?:(azure|openai|fal|replicate|gemini|runway)\.)?([A-Za-z_]+)(?:=([^\]\s]*))?\]"
)


@dataclass(frozen=True)
class Directives:
    """Per-job overrides parsed from `[emulator:key=value]` markers in the prompt.

    Supported: download=MODE, download_delay=SECONDS, fail=REASON, slow[=FACTOR],
    duration=SECONDS (whole in-flight time), retention=SECONDS, rate_limit (this create
    answers 429), status_errors=N (the first N status GETs of the job answer 5xx),
    drop_after_create (the job is created, then the connection drops before the answer, and
    the Idempotency-Key is not remembered: a provider that does not honour it),
    download_seconds=SECONDS (the video's body is sent slowly, spread over that long),
    video_seconds=SECONDS (the served video lasts this long, whatever the job asked for: a
    provider that returns a video of the wrong length).
    """

    download: DownloadMode | None = None
    download_delay: float | None = None
    fail: str | None = None
    slow: bool = False
    slow_factor: float | None = None  # None: the configured slow_factor
    duration: float | None = None
    retention: float | None = None
    rate_limit: bool = False
    status_errors: int = 0
    drop_after_create: bool = False
    download_seconds: float | None = None
    video_seconds: float | None = None  # None: EmulatorConfig.video_seconds, else the job's own


def _number(key: str, raw: str | None, *, minimum: float = 0.0) -> float:
    try:
        value = float(raw) if raw is not None else float("nan")
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also false for NaN
        raise DirectiveError(f"[emulator:{key}=...] needs a number >= {minimum:g}")
    return value


def parse_directives(prompt: str, protocol: str | None = None) -> Directives:
    """Read the directives out of a prompt; unknown or malformed ones raise DirectiveError.

    A directive scoped to a protocol (`azure.` / `openai.`) is ignored by the other one."""
    fields: dict[str, Any] = {}
    for match in _DIRECTIVE.finditer(prompt):
        scope, key, raw = match.group(1), match.group(2).lower(), match.group(3)
        if scope is not None and protocol is not None and scope != protocol:
            continue
        if key == "download":
            if raw not in DOWNLOAD_MODES:
                raise DirectiveError(f"[emulator:download=...] must be one of {DOWNLOAD_MODES}")
            fields["download"] = raw
        elif key == "download_delay":
            fields["download_delay"] = _number(key, raw)
        elif key == "fail":
            if not raw or not re.fullmatch(r"[a-z_]+", raw):
                raise DirectiveError("[emulator:fail=...] needs a reason like internal_error")
            fields["fail"] = raw
        elif key == "slow":
            fields["slow"] = True
            if raw is not None:
                fields["slow_factor"] = _number(key, raw, minimum=1.0)
        elif key == "duration":
            fields["duration"] = _number(key, raw)
        elif key == "retention":
            fields["retention"] = _number(key, raw, minimum=1e-9)
        elif key == "rate_limit":
            fields["rate_limit"] = True
        elif key == "status_errors":
            fields["status_errors"] = int(_number(key, raw))
        elif key == "drop_after_create":
            fields["drop_after_create"] = True
        elif key == "download_seconds":
            fields["download_seconds"] = _number(key, raw)
        elif key == "video_seconds":
            seconds = _number(key, raw, minimum=MIN_VIDEO_SECONDS)
            if seconds > MAX_VIDEO_SECONDS:
                raise DirectiveError(
                    f"[emulator:video_seconds=...] must be at most {MAX_VIDEO_SECONDS:g}"
                )
            fields["video_seconds"] = seconds
        else:
            raise DirectiveError(f"unknown emulator directive {key!r}")
    return Directives(**fields)
