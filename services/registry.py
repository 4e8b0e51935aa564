"""The registry of stages `vidpipe run NAME` and `vidpipe up` know about."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidpipe.settings import Settings
    from vidpipe.stage import Stage

__all__ = ["CORE_STAGES", "FALLBACK_STAGES", "STAGES", "create_stage"]

# In pipeline order. Each entry is a package under services/ with an app.create_stage().
CORE_STAGES: tuple[str, ...] = ("submitter", "poller", "fetcher", "recorder")
# The ways out when a video cannot be downloaded: each its own subscriber to DownloadUnavailable.
FALLBACK_STAGES: tuple[str, ...] = ("placeholder", "notifier", "redownloader", "failover")
STAGES: tuple[str, ...] = CORE_STAGES + FALLBACK_STAGES


def create_stage(name: str, settings: Settings, *, bootstrap: str | None = None) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    module = importlib.import_module(f"services.{name}.app")
    stage: Stage = module.create_stage(settings, bootstrap=bootstrap)
    return stage
