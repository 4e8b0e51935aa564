"""The emulator's in-memory world: jobs, their schedules, quotas and injected faults.

Nothing runs in the background: a job's status is a pure function of the wall clock and the
schedule fixed when it was created, so the emulator behaves the same under any load.

A job's video lasts what the job asked for (`Job.seconds`), unless `[emulator:video_seconds=N]`
or `EmulatorConfig.video_seconds` says otherwise (`EmulatorState.video_seconds`). Each duration
is encoded once per (width, height, seconds, fps) and cached; longer videos get fewer frames per
second (`sample_fps`) so no encode costs more than about `SAMPLE_FRAME_BUDGET` frames.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import itertools
import logging
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vidpipe.dev.emulator.config import Directives, DownloadMode, EmulatorConfig
from vidpipe.media.sample import ImageFormat, render_sample_image, render_sample_mp4

__all__ = [
    "DEFAULT_SAMPLE_SECONDS",
    "IN_FLIGHT",
    "SAMPLE_FRAME_BUDGET",
    "EmulatorState",
    "Job",
    "Phase",
    "Protocol",
    "Verdict",
    "new_ulid",
    "sample_fps",
]

log = logging.getLogger("vidpipe.dev.emulator")

Protocol = Literal["azure", "openai", "fal", "replicate", "gemini", "runway"]
Phase = Literal["queued", "preprocessing", "running", "processing", "succeeded", "failed"]
IN_FLIGHT: tuple[Phase, ...] = ("queued", "preprocessing", "running", "processing")
# What a content request gets; see EmulatorState.download_verdict.
Verdict = Literal[
    "ok", "not_ready", "failed", "expired", "missing", "flaky", "json_body", "truncated", "redirect"
]
# "truncated" serves this share of the sample video.
TRUNCATED_SHARE = 0.4

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_ulid(now: float) -> str:
    """A lowercase ULID (48-bit ms time + 80 random bits), like Azure's task_/gen_ ids."""
    value = (int(now * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


# The bare sample video (/_emulator/sample.mp4, no job to take a duration from) lasts this long
# unless EmulatorConfig.video_seconds is set.
DEFAULT_SAMPLE_SECONDS = 1.0
# Frames are drawn in Python (about 1 ms each at 320x180) then encoded: a long video gets fewer
# frames per second so that one encode stays near this many frames (~0.1-0.2 s of CPU).
SAMPLE_FRAME_BUDGET = 120
# One encode at a time: a burst of first downloads of one duration waits for a single encode
# instead of running it once per worker thread (on 2 cores they would only slow each other).
_ENCODE_LOCK = threading.Lock()


def sample_fps(seconds: float, fps: int) -> int:
    """The frame rate a `seconds`-long sample is encoded at: `fps`, lowered so the video has at
    most SAMPLE_FRAME_BUDGET frames, never below 1 fps. The duration stays `seconds`."""
    return max(1, min(fps, int(SAMPLE_FRAME_BUDGET / seconds)))


@functools.lru_cache(maxsize=64)  # a few hundred KB each; durations in use are a handful
def _encode_sample_video(width: int, height: int, seconds: float, fps: int) -> bytes:
    started = time.perf_counter()
    data = render_sample_mp4(width, height, seconds, fps, label="vidpipe emulator")
    log.info(
        "sample video encoded: %dx%d, %gs at %d fps, %d bytes in %.0f ms",
        width,
        height,
        seconds,
        fps,
        len(data),
        (time.perf_counter() - started) * 1000,
    )
    return data


def _sample_video(width: int, height: int, seconds: float, fps: int) -> bytes:
    with _ENCODE_LOCK:
        return _encode_sample_video(width, height, seconds, sample_fps(seconds, fps))


@functools.lru_cache(maxsize=8)
def _sample_image(width: int, height: int, fmt: ImageFormat) -> bytes:
    return render_sample_image(width, height, fmt, label="vidpipe emulator")


@dataclass
class Job:
    id: str
    protocol: Protocol
    owner: str  # fingerprint of the caller's key; never the key itself
    seq: int  # creation order, for listing
    created: float  # wall clock
    # Wall-clock ends of queued, preprocessing, running, processing.
    boundaries: tuple[float, float, float, float]
    scale: float  # time_scale when created; converts this job's emulated durations
    retention: float  # real seconds the assets live
    failure: str | None
    prompt: str
    model: str
    width: int
    height: int
    seconds: int
    n_variants: int
    directives: Directives
    remixed_from: str | None = None
    input_images: int = 0
    generation_ids: list[str] = field(default_factory=list)
    content_gets: int = 0
    status_errors_left: int = 0
    # The model input as sent, where the protocol echoes it (replicate's `input`).
    input: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        """When the job reaches its terminal state."""
        if self.failure == "input_moderation":
            return self.boundaries[1]
        if self.failure is not None and self.failure != "output_moderation":
            return self.boundaries[2]
        return self.boundaries[3]

    def phase(self, now: float) -> Phase:
        if now >= self.end:
            return "failed" if self.failure else "succeeded"
        for name, boundary in zip(IN_FLIGHT, self.boundaries, strict=True):
            if now < boundary:
                return name
        return "processing"  # unreachable: end <= boundaries[3]

    def terminal(self, now: float) -> bool:
        return now >= self.end

    def progress(self, now: float) -> int:
        """0-100, rising linearly through the in-flight phases after the queue."""
        if self.phase(now) == "succeeded":
            return 100
        start, stop = self.boundaries[0], self.boundaries[3]
        t = min(now, self.end)
        if t <= start:
            return 0
        if stop <= start:
            return 99
        return min(99, int(100 * (t - start) / (stop - start)))

    @property
    def assets_expire(self) -> float:
        # Azure keeps jobs 24 h after creation; the /v1/videos protocol counts from completion.
        base = self.created if self.protocol == "azure" else self.end
        return base + self.retention


class EmulatorState:
    """All mutable emulator state. Used only from the server's event loop."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.generations: dict[str, str] = {}  # generation id -> job id
        # (owner, protocol, Idempotency-Key) -> (job id, request fingerprint)
        self.idempotency: dict[tuple[str, Protocol, str], tuple[str, str]] = {}
        self.stats: Counter[str] = Counter()
        self._creates = 0
        self._seq = itertools.count()
        self._rng = random.Random(config.seed)

    # -- configuration -------------------------------------------------------------------
    def set_config(self, config: EmulatorConfig) -> None:
        if config.seed != self.config.seed:
            self._rng = random.Random(config.seed)
        self.config = config

    def reset(self) -> None:
        """Forget every job and counter (the config stays)."""
        self.jobs.clear()
        self.generations.clear()
        self.idempotency.clear()
        self.stats.clear()
        self._creates = 0
        self._rng = random.Random(self.config.seed)

    def real(self, emulated_seconds: float, scale: float | None = None) -> float:
        """Emulated seconds -> real seconds."""
        return emulated_seconds / (scale or self.config.time_scale)

    # -- auth ----------------------------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        """The caller's owner fingerprint, or None when the key is missing or wrong."""
        supplied = headers.get("api-key")
        if not supplied:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            supplied = token.strip() if scheme.lower() == "bearer" else None
        expected = self.config.api_key
        if expected is None:
            supplied = supplied or "anonymous"
        elif not supplied or not hmac.compare_digest(
            supplied.encode(), expected.get_secret_value().encode()
        ):
            return None
        return hashlib.sha256(supplied.encode()).hexdigest()[:16]

    # -- creation ------------------------------------------------------------------------
    def moderated(self, prompt: str) -> bool:
        lowered = prompt.lower()
        return any(word.lower() in lowered for word in self.config.moderation_words if word)

    def count_create(self) -> bool:
        """Count a create attempt; True when it is the Nth and must answer 429."""
        self._creates += 1
        every = self.config.rate_limit_every
        return every is not None and self._creates % every == 0

    def in_flight(self, owner: str, protocol: Protocol) -> int:
        now = self.clock()
        return sum(
            1
            for job in self.jobs.values()
            if job.owner == owner and job.protocol == protocol and not job.terminal(now)
        )

    def over_quota(self, owner: str, protocol: Protocol) -> bool:
        limit = self.config.max_concurrent_jobs
        return limit is not None and self.in_flight(owner, protocol) >= limit

    def create_job(
        self,
        *,
        protocol: Protocol,
        owner: str,
        prompt: str,
        model: str,
        width: int,
        height: int,
        seconds: int,
        n_variants: int,
        directives: Directives,
        input_images: int = 0,
        remixed_from: str | None = None,
    ) -> Job:
        cfg = self.config
        now = self.clock()
        phases = [
            cfg.queued_seconds,
            cfg.preprocessing_seconds,
            cfg.running_seconds,
            cfg.processing_seconds,
        ]
        if directives.duration is not None:
            total = sum(phases)
            phases = (
                [directives.duration * p / total for p in phases]
                if total > 0
                else [directives.duration / 4] * 4
            )
        if directives.slow:
            factor = directives.slow_factor or cfg.slow_factor
            phases = [p * factor for p in phases]
        scale = cfg.time_scale
        ends = [now + t for t in itertools.accumulate(p / scale for p in phases)]
        boundaries = (ends[0], ends[1], ends[2], ends[3])
        failure = directives.fail
        if failure is None and self.moderated(prompt):
            failure = "input_moderation"
        if failure is None:
            failure = cfg.fail
        retention = (
            directives.retention if directives.retention is not None else cfg.retention_seconds
        )
        if protocol in ("fal", "runway"):
            job_id = str(uuid.uuid4())  # fal's request ids and Runway's task ids are UUIDs
        elif protocol == "gemini":
            job_id = secrets.token_hex(8)  # an operation's or interaction's id: lowercase hex
        elif protocol == "replicate":
            job_id = new_ulid(now)  # Replicate's ids: 26 lowercase base-32 characters
        else:
            prefix = "task_" if protocol == "azure" else "video_"
            job_id = prefix + (new_ulid(now) if protocol == "azure" else secrets.token_hex(16))
        job = Job(
            id=job_id,
            protocol=protocol,
            owner=owner,
            seq=next(self._seq),
            created=now,
            boundaries=boundaries,
            scale=scale,
            retention=retention / scale,
            failure=failure,
            prompt=prompt,
            model=model,
            width=width,
            height=height,
            seconds=seconds,
            n_variants=n_variants,
            directives=directives,
            remixed_from=remixed_from,
            input_images=input_images,
            status_errors_left=directives.status_errors,
        )
        if protocol == "azure":
            job.generation_ids = ["gen_" + new_ulid(now) for _ in range(n_variants)]
            for gen_id in job.generation_ids:
                self.generations[gen_id] = job.id
        self.jobs[job.id] = job
        self.stats[f"{protocol}.jobs_created"] += 1
        return job

    def delete_job(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        for gen_id in job.generation_ids:
            self.generations.pop(gen_id, None)
        for key, (job_id, _) in list(self.idempotency.items()):
            if job_id == job.id:
                del self.idempotency[key]

    def get_job(self, job_id: str, owner: str, protocol: Protocol) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner or job.protocol != protocol:
            return None
        return job

    def list_jobs(self, owner: str, protocol: Protocol, *, newest_first: bool = True) -> list[Job]:
        jobs = [j for j in self.jobs.values() if j.owner == owner and j.protocol == protocol]
        jobs.sort(key=lambda j: j.seq, reverse=newest_first)
        return jobs

    # -- faults --------------------------------------------------------------------------
    def status_error(self, job: Job) -> bool:
        """Whether this status GET must answer 5xx (directive budget first, then the dice)."""
        if job.status_errors_left > 0:
            job.status_errors_left -= 1
            return True
        rate = self.config.status_error_rate
        return rate > 0 and self._rng.random() < rate

    def download_mode(self, job: Job) -> DownloadMode:
        return job.directives.download or self.config.download

    def download_verdict(self, job: Job, *, count: bool = True) -> Verdict:
        """What a request for the job's video gets now. `count=False` for HEAD (no flake tick)."""
        now = self.clock()
        phase = job.phase(now)
        if phase == "failed":
            return "failed"
        if phase != "succeeded":
            return "not_ready"
        if now >= job.assets_expire:
            return "expired"
        mode = self.download_mode(job)
        if mode == "missing":
            return "missing"
        if mode == "delayed":
            delay = job.directives.download_delay
            if delay is None:
                delay = self.config.download_delay_seconds
            if now < job.end + delay / job.scale:
                return "missing"
        if mode == "flaky" and count:
            job.content_gets += 1
            if job.content_gets % 2 == 1:  # 1st, 3rd, ... fail
                return "flaky"
        if mode in ("json_body", "truncated", "redirect"):
            return mode
        return "ok"

    # -- assets --------------------------------------------------------------------------
    def video_seconds(self, job: Job | None = None) -> float:
        """How long `job`'s video lasts: its `[emulator:video_seconds]`, else the configured
        `video_seconds`, else what the job asked for. Without a job (the bare sample video):
        the configured `video_seconds`, else DEFAULT_SAMPLE_SECONDS."""
        if job is not None and job.directives.video_seconds is not None:
            return job.directives.video_seconds
        if self.config.video_seconds is not None:
            return self.config.video_seconds
        return float(job.seconds) if job is not None else DEFAULT_SAMPLE_SECONDS

    async def sample_video(self, seconds: float | None = None) -> bytes:
        """A sample MP4 lasting `seconds` (default: `video_seconds()`), at the configured size."""
        cfg = self.config
        duration = self.video_seconds() if seconds is None else seconds
        # Encoding takes up to a few hundred ms once per duration; keep it off the event loop.
        return await asyncio.to_thread(
            _sample_video, cfg.video_width, cfg.video_height, duration, cfg.video_fps
        )

    async def served_video(self, job: Job, verdict: Verdict) -> bytes:
        """The bytes a content request for `job` with `verdict` "ok" or "truncated" gets."""
        data = await self.sample_video(self.video_seconds(job))
        return data[: int(len(data) * TRUNCATED_SHARE)] if verdict == "truncated" else data

    async def sample_image(self, fmt: ImageFormat) -> bytes:
        cfg = self.config
        return await asyncio.to_thread(_sample_image, cfg.video_width, cfg.video_height, fmt)
