"""The result of a chaos run: figures read from the books, a table to print, JSON to keep."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ChaosReport"]


@dataclass
class ChaosReport:
    seed: int
    requests: int
    statuses: dict[str, int]
    #: Requests not terminal when the drain timed out.
    lost: int
    lost_ids: list[str]
    #: `projects` rows: requests without one, and rows beyond one per request.
    missing_rows: int
    extra_rows: int
    #: Requests with more than one real video (distinct VideoStored URLs or stored objects).
    duplicated: int
    requests_without_job: int
    #: Provider jobs beyond one per request, from the emulator's own books.
    extra_provider_jobs: int
    dead_letters: int
    dead_letter_reasons: dict[str, int]
    kills: int
    #: Stage processes that exited without being killed.
    stage_crashes: int
    broker_restarts: int
    publish_retries: int
    rate_limited: int
    server_errors: int
    creates_dropped: int
    slowed: int
    provider_jobs: int
    drain_s: float
    window_s: float
    plan: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Each broken promise, in words; empty when the run kept every one."""
        found = []
        if self.lost:
            found.append(f"{self.lost} requests never reached a terminal state: {self.lost_ids}")
        not_stored = {s: n for s, n in self.statuses.items() if s != "stored"}
        if not_stored:
            found.append(f"requests that did not end stored: {not_stored}")
        if self.missing_rows or self.extra_rows:
            found.append(f"projects rows: {self.missing_rows} missing, {self.extra_rows} extra")
        if self.stage_crashes:
            found.append(f"{self.stage_crashes} stage processes exited on their own")
        if self.duplicated:
            found.append(f"{self.duplicated} requests have their video stored twice")
        if self.extra_provider_jobs:
            found.append(f"{self.extra_provider_jobs} provider jobs beyond one per request")
        if self.dead_letters:
            found.append(
                f"{self.dead_letters} valid messages dead-lettered: {self.dead_letter_reasons}"
            )
        return found

    def table(self) -> str:
        rows = [
            ("requests", self.requests),
            ("stored", self.statuses.get("stored", 0)),
            ("stage kills (SIGKILL)", self.kills),
            ("stage crashes (not killed)", self.stage_crashes),
            ("broker restarts", self.broker_restarts),
            ("429 served", self.rate_limited),
            ("5xx served", self.server_errors),
            ("creates dropped after create", self.creates_dropped),
            ("answers held past the timeout", self.slowed),
            ("publish retries (upstream)", self.publish_retries),
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("extra provider jobs", self.extra_provider_jobs),
            ("dead letters", self.dead_letters),
            ("time to drain (s)", self.drain_s),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"chaos run, seed {self.seed}, fault window {self.window_s:g} s"]
        lines += [f"  {name:<{width}}  {value:>8}" for name, value in rows]
        return "\n".join(lines)

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"chaos-{self.requests}-seed{self.seed}.json"
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        (directory / f"chaos-{self.requests}-seed{self.seed}.txt").write_text(self.table() + "\n")
        return path
