"""Fixtures of the fault suite: a broker of its own (so restarting it disturbs no other test),
an emulator whose faults the run switches, and the run's size from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.kafka import LocalKafka

CHAOS_KEY = "chaos-emulator-key-5678"
#: Jobs the emulator runs at once per key and protocol, and the quota vidpipe is given: equal,
#: so a quota slot vidpipe leaks shows up as jobs that never start.
CONCURRENT_JOBS = 8


@dataclass(frozen=True)
class ChaosSize:
    """How big a run is. `make test` runs the short default; `make chaos` sets the long one."""

    requests: int
    window_s: float
    seed: int
    kills: int
    broker_restarts: int
    bursts: int
    drain_timeout_s: float

    @classmethod
    def from_env(cls, stages: int) -> ChaosSize:
        requests = int(os.environ.get("VIDPIPE_CHAOS_REQUESTS", "80"))
        window_s = float(os.environ.get("VIDPIPE_CHAOS_WINDOW_S", str(max(30.0, requests / 4))))
        return cls(
            requests=requests,
            window_s=window_s,
            seed=int(os.environ.get("VIDPIPE_CHAOS_SEED", "20261201")),
            kills=max(stages + 2, requests // 20),
            broker_restarts=max(1, int(window_s // 45)),
            bursts=max(6, int(window_s // 8)),
            drain_timeout_s=float(os.environ.get("VIDPIPE_CHAOS_DRAIN_S", str(120 + requests / 2))),
        )


@pytest.fixture
def chaos_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    """A single broker whose log is kept in tmp_path, so a restart comes back with its data on
    the same port."""
    kafka = LocalKafka(data_dir=tmp_path / "kafka", keep=True)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def chaos_emulator() -> Iterator[EmulatorThread]:
    config = EmulatorConfig(
        api_key=CHAOS_KEY,
        time_scale=10.0,  # a 7 s job takes 0.7 s; Retry-After of 10 s becomes 1 s
        max_concurrent_jobs=CONCURRENT_JOBS,
        fault_slow_seconds=3.0,  # past the stages' 2 s HTTP timeout
        seed=1,
    )
    with EmulatorThread(config) as server:
        yield server
