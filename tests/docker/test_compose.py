"""compose.yaml, run for real: `docker compose up -d --wait` brings up the broker, PostgreSQL,
the emulator, every stage (each healthy by its own /readyz) and the gateway; requests published
from the host, and one sent through the gateway's HTTP API, end `stored`, with the MP4 in the
volume opening in PyAV and the row in PostgreSQL; three pollers, one killed mid-flight, lose
nothing and make no provider job twice; `down -v` leaves no container, volume or network of the
project behind. Each step's time is printed (run with -s) and kept in
.vidpipe/docker/compose-steps.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import httpx
import pytest

from services.registry import STAGES
from vidpipe import RequestPublisher, new_request
from vidpipe.dev.processes import free_ports

ROOT = Path(__file__).resolve().parents[2]
STEPS_FILE = ROOT / ".vidpipe" / "docker" / "compose-steps.json"
EMULATOR_KEY = "local-emulator-key"  # compose.yaml's default for the emulator and the stages
GATEWAY_KEY = "local-gateway-key"  # the key whose digest compose.yaml gives the gateway
DEADLINE_S = 300.0  # a loaded 2-core machine: generous, and only ever waited on a condition
TERMINAL = {"stored", "failed", "expired", "gave_up"}
# The images are built beforehand (ensure-docker.sh); a stage that never gets healthy fails the
# wait instead of hanging the run.
UP = ("up", "-d", "--wait", "--wait-timeout", "420", "--no-build", "--pull", "never")


class Compose:
    """`docker compose` on compose.yaml as one throwaway project, with the local images."""

    def __init__(self, images: dict[str, str]) -> None:
        self.project = f"vidpipe-test-{uuid.uuid4().hex[:8]}"
        kafka_port, emulator_port, gateway_port = free_ports(3)
        self.kafka_bootstrap = f"localhost:{kafka_port}"
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        # The host's VIDPIPE_* must not leak into compose's interpolation (provider endpoints).
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPIPE_")}
        env.update(images)
        env.update(
            VIDPIPE_KAFKA_HOST_PORT=str(kafka_port),
            VIDPIPE_EMULATOR_HOST_PORT=str(emulator_port),
            VIDPIPE_GATEWAY_HOST_PORT=str(gateway_port),
            DOCKER_BUILDKIT="0",  # no buildx here; the classic builder
        )
        self.env = env
        self.steps: list[tuple[str, float]] = []

    def run(self, *args: str, timeout: float = 600, check: bool = True, stdin: str = "") -> str:
        cmd = ["docker", "compose", "-p", self.project, "-f", str(ROOT / "compose.yaml"), *args]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=ROOT,
            input=stdin,
        )  # fmt: skip
        if check and done.returncode != 0:
            logs = subprocess.run(
                [*cmd[:6], "logs", "--no-color", "--tail", "30"],
                capture_output=True,
                text=True,
                timeout=120,
                env=self.env,
            ).stdout
            raise AssertionError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}\n"
                f"--- logs ---\n{logs[-6000:]}"
            )
        return done.stdout

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        self.steps.append((name, took))
        print(f"compose step: {name}: {took:.1f} s", flush=True)

    def sql(self, query: str, ids: list[str]) -> list[list[str]]:
        """Run `query` in the stack's database; `:'ids'` in it is `ids`, quoted by psql."""
        out = self.run(
            "exec", "-T", "postgres", "psql", "-U", "vidpipe", "-d", "vidpipe", "-At",
            "-F", "\t", "-v", "ON_ERROR_STOP=1", "-v", f"ids={','.join(ids)}", "-f", "-",
            stdin=query,
        )  # fmt: skip
        return [line.split("\t") for line in out.splitlines() if line]

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).split()

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, cmd in (
            ("containers", ["docker", "ps", "-aq", "--filter", label]),
            ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
            ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
        ):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
            found[kind] = out.stdout.split()
        return found


def _statuses(compose: Compose, ids: list[str]) -> dict[str, tuple[str, str]]:
    rows = compose.sql(
        "select request_id, status, coalesce(output_image_url, '') from projects "
        "where request_id = any(string_to_array(:'ids', ','));",
        ids,
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def _wait_terminal(compose: Compose, ids: list[str]) -> dict[str, tuple[str, str]]:
    deadline = time.monotonic() + DEADLINE_S
    seen: dict[str, tuple[str, str]] = {}
    while time.monotonic() < deadline:
        seen = _statuses(compose, ids)
        if len(seen) == len(ids) and all(status in TERMINAL for status, _ in seen.values()):
            return seen
        time.sleep(1)
    raise AssertionError(f"not every request ended within {DEADLINE_S:.0f} s: {seen}")


def _publish(bootstrap: str, prompts: list[str]) -> list[str]:
    requests = [new_request(p, provider="azure-sora", seconds=2) for p in prompts]

    async def send() -> None:
        async with RequestPublisher(bootstrap) as publisher:
            for request in requests:
                await publisher.publish(request)

    asyncio.run(send())
    return [r.request_id for r in requests]


def _provider_jobs(compose: Compose) -> list[str]:
    """The prompts of every job the emulator was asked for: the provider's own books."""
    answer = httpx.get(
        f"{compose.emulator_url}/openai/v1/video/generations/jobs",
        params={"api-version": "preview", "limit": "100"},
        headers={"api-key": EMULATOR_KEY},
        timeout=30,
    )
    answer.raise_for_status()
    return [str(job["prompt"]) for job in answer.json()["data"]]


def _open_mp4(compose: Compose, url: str, into: Path) -> float:
    """Copy a stored video out of the volume and decode it; its duration in seconds."""
    assert url.startswith("file:///data/videos/"), url
    local = into / Path(url).name
    compose.run("cp", f"fetcher:{url.removeprefix('file://')}", str(local))
    with av.open(str(local)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        duration = float(container.duration or 0) / av.time_base
    assert frames > 0
    return duration


@pytest.mark.timeout(1800)
def test_compose_stack_end_to_end(docker_ready: dict[str, str], tmp_path: Path) -> None:
    compose = Compose(docker_ready)
    try:
        with compose.step("up -d --wait (broker, PostgreSQL, emulator, 8 stages, gateway)"):
            compose.run(*UP, timeout=900)
        for service in ("kafka", "postgres", "emulator", *STAGES, "gateway"):
            (cid,) = compose.containers(service)
            health = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", cid],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()
            assert health == "healthy", (service, health)

        with compose.step("one request from the host ends stored"):
            tag = uuid.uuid4().hex[:8]
            (rid,) = _publish(compose.kafka_bootstrap, [f"a fox in snow {tag}"])
            ((status, url),) = _wait_terminal(compose, [rid]).values()
        assert status == "stored", (rid, status)
        with compose.step("its MP4 copied out of the volume and decoded with PyAV"):
            assert _open_mp4(compose, url, tmp_path) > 0
        ((rows,),) = compose.sql(
            "select count(*) from projects where request_id = any(string_to_array(:'ids', ','));",
            [rid],
        )
        assert rows == "1"

        with compose.step("one request through the gateway's HTTP API ends stored"):
            gateway_rid = f"compose-gw-{uuid.uuid4().hex[:8]}"
            answer = httpx.post(
                f"{compose.gateway_url}/v1/generations",
                json={"request_id": gateway_rid, "prompt": "a heron at dawn"},
                headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            ((status, _),) = _wait_terminal(compose, [gateway_rid]).values()
            assert status == "stored", (gateway_rid, status)
            record = httpx.get(
                f"{compose.gateway_url}/v1/generations/{gateway_rid}",
                headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                timeout=30,
            ).json()
            assert record["status"] == "stored", record

        with compose.step("up --scale poller=3"):
            compose.run(*UP, "--scale", "poller=3", timeout=900)
        pollers = compose.containers("poller")
        assert len(pollers) == 3, pollers

        with compose.step("8 requests, one of 3 pollers killed mid-flight, all stored"):
            tag = uuid.uuid4().hex[:8]
            prompts = [f"scaled {tag} {n}" for n in range(8)]
            ids = _publish(compose.kafka_bootstrap, prompts)
            # Kill once the pollers have work: a request past `submitted` has a poll timer.
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline:
                if any(s != "requested" for s, _ in _statuses(compose, ids).values()):
                    break
                time.sleep(0.5)
            subprocess.run(["docker", "kill", pollers[0]], check=True, timeout=60,
                           capture_output=True)  # fmt: skip
            final = _wait_terminal(compose, ids)
        assert {rid: s for rid, (s, _) in final.items() if s != "stored"} == {}
        assert len({u for _, u in final.values()}) == len(ids), "a video stored twice"
        jobs = _provider_jobs(compose)
        per_prompt = {p: jobs.count(p) for p in prompts}
        assert per_prompt == dict.fromkeys(prompts, 1), per_prompt  # no extra provider job
        for _, stored_url in list(final.values())[:2]:
            assert _open_mp4(compose, stored_url, tmp_path) > 0
    finally:
        with compose.step("down -v"):
            compose.run("down", "-v", "--remove-orphans", "--timeout", "20", timeout=600)
        STEPS_FILE.parent.mkdir(parents=True, exist_ok=True)
        STEPS_FILE.write_text(json.dumps(dict(compose.steps), indent=2) + "\n")
    assert compose.leftovers() == {"containers": [], "volumes": [], "networks": []}
