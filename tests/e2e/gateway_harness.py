"""The gateway under test: `vidpipe gateway` as its own process beside a pipeline's stages."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import httpx

from services.gateway.handlers import hash_key
from tests.e2e.harness import Pipeline
from vidpipe.cli.processes import ManagedProcess
from vidpipe.dev.processes import free_ports

# Two keys: the tests' own, and one kept for the rate-limit test so the others never run out.
API_KEY = "vp-test-key-0123456789abcdefghijklmnopqrstuv"
BURST_KEY = "vp-burst-key-0123456789abcdefghijklmnopqrst"
RATE_BURST = 30


@dataclass
class Gateway:
    url: str
    process: ManagedProcess

    def headers(self, key: str = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def client(self, key: str | None = API_KEY) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers=self.headers(key) if key else {}, timeout=30.0
        )


def start_gateway(
    pipeline: Pipeline, extra_env: dict[str, str] | None = None, *, port: int | None = None
) -> Gateway:
    """Start the gateway on `port` (default: a free one) and wait until it answers /healthz
    (its lifespan has made the topics and tables by then)."""
    if port is None:
        (port,) = free_ports(1)
    env = {
        **pipeline.stack.env,
        "VIDPIPE_KAFKA_BOOTSTRAP": pipeline.bootstrap_servers,
        "VIDPIPE_GATEWAY_API_KEYS": f"tests:{hash_key(API_KEY)},burst:{hash_key(BURST_KEY)}",
        "VIDPIPE_GATEWAY_PORT": str(port),
        "VIDPIPE_GATEWAY_RATE_PER_MINUTE": "60",
        "VIDPIPE_GATEWAY_RATE_BURST": str(RATE_BURST),
        "VIDPIPE_GATEWAY_MAX_BODY_BYTES": "4096",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    process = ManagedProcess(
        "gateway",
        [sys.executable, "-m", "vidpipe", "gateway"],
        env,
        pipeline.stack.logs_dir / "gateway.log",
    ).start()
    # The stack stops it with the stages.
    pipeline.stack.processes["gateway"] = process
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if not process.running:
            raise AssertionError(f"the gateway exited:\n{process.log_tail()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return Gateway(url, process)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the gateway never answered /healthz:\n{process.log_tail()}")
