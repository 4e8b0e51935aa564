"""The Docker tests' shared setup: an engine that answers and the local images, made by the
same script CI runs (scripts/ensure-docker.sh: idempotent, seconds when everything is cached).

These tests are not part of `make test` (they need root for the engine the first time); `make
test-docker` runs them. Like every test here they never skip: no engine is an error.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What ensure-docker.sh builds (docker/build-local.sh), and what the tests run instead of the
# public images, since there is no registry here.
LOCAL_IMAGES = {
    "VIDPIPE_KAFKA_IMAGE": "vidpipe/kafka:local",
    "VIDPIPE_POSTGRES_IMAGE": "vidpipe/postgres:local",
    "VIDPIPE_IMAGE": "vidpipe:local",
    "VIDPIPE_BASE_IMAGE": "vidpipe/debian-base:bookworm",
}


@pytest.fixture(scope="session")
def docker_ready() -> dict[str, str]:
    """Run ensure-docker.sh once per session; the local image names, for compose's environment."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-docker.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
        env={**os.environ, "VIDPIPE_BASE_IMAGE": LOCAL_IMAGES["VIDPIPE_BASE_IMAGE"]},
    )
    print(done.stdout, end="")
    assert done.returncode == 0, f"ensure-docker.sh failed:\n{done.stdout}\n{done.stderr}"
    print(f"ensure-docker.sh: {time.monotonic() - started:.1f} s")
    # An image named in the environment wins (e.g. one built another way).
    return {name: os.environ.get(name) or image for name, image in LOCAL_IMAGES.items()}
