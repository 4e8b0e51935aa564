"""The stages vidpipe runs, as data: one entry per stage, in pipeline order.

`vidpipe run NAME` takes its choices from here, compose.yaml runs one service per entry (a test
checks it), and the docs list the same stages. Adding a stage: a folder under services/ with an
`app.create_stage()`, and one line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from vidpipe.settings import Settings
    from vidpipe.stage import Stage

__all__ = [
    "CORE_STAGES",
    "FALLBACK_STAGES",
    "REGISTRY",
    "STAGES",
    "StageEntry",
    "create_stage",
    "describe",
    "entry",
]

StageKind = Literal["core", "fallback"]


@dataclass(frozen=True)
class StageEntry:
    """One stage: its name (also its consumer group and compose service), its kind, what it
    does in one line, and the module whose `create_stage(settings, *, bootstrap)` builds it."""

    name: str
    kind: StageKind
    summary: str
    module: str


REGISTRY: tuple[StageEntry, ...] = (
    StageEntry(
        "submitter",
        "core",
        "Turns each generation request into one provider job, within the provider's quota.",
        "services.submitter.app",
    ),
    StageEntry(
        "poller",
        "core",
        "Checks each provider job on durable timers until it succeeds or fails.",
        "services.poller.app",
    ),
    StageEntry(
        "fetcher",
        "core",
        "Downloads each generated video into storage, or reports it unavailable.",
        "services.fetcher.app",
    ),
    StageEntry(
        "recorder",
        "core",
        "Records every public event and projects each request's status into the database.",
        "services.recorder.app",
    ),
    # The ways out when a video cannot be downloaded: each its own subscriber to
    # DownloadUnavailable (or, for failover, DownloadGaveUp).
    StageEntry(
        "placeholder",
        "fallback",
        "Stores a short stand-in video when the real one cannot be downloaded.",
        "services.placeholder.app",
    ),
    StageEntry(
        "notifier",
        "fallback",
        "Tells the requester, by a signed webhook, that the video cannot be downloaded yet.",
        "services.notifier.app",
    ),
    StageEntry(
        "redownloader",
        "fallback",
        "Retries an unavailable download on durable timers at growing intervals.",
        "services.redownloader.app",
    ),
    StageEntry(
        "failover",
        "fallback",
        "Asks another provider for the video when its download is given up (or at once).",
        "services.failover.app",
    ),
)

STAGES: tuple[str, ...] = tuple(e.name for e in REGISTRY)
CORE_STAGES: tuple[str, ...] = tuple(e.name for e in REGISTRY if e.kind == "core")
FALLBACK_STAGES: tuple[str, ...] = tuple(e.name for e in REGISTRY if e.kind == "fallback")


def entry(name: str) -> StageEntry:
    """The registered stage called `name`; ValueError naming the known ones otherwise."""
    for candidate in REGISTRY:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")


def describe(name: str) -> str:
    """The stage's one-line summary (for `--help` and the docs)."""
    return entry(name).summary


def create_stage(name: str, settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    """Build the named stage (nothing is opened or connected until its app runs)."""
    module = importlib.import_module(entry(name).module)
    stage: Stage = module.create_stage(settings, bootstrap_servers=bootstrap_servers)
    return stage
