"""fal's official SDK (`fal-client`) against the emulator, unchanged: submit to downloaded bytes.

fal-client hard-codes `https://` and reads its queue host from `FAL_QUEUE_RUN_HOST` once, when
it is imported; so the emulator serves TLS here (a throwaway CA from trustme, trusted through
httpx's documented `SSL_CERT_FILE`), and the SDK runs in a child process whose environment says
`FAL_QUEUE_RUN_HOST=127.0.0.1:<port>`. Nothing of the SDK is patched.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.media.sample import probe_mp4

KEY = "fal-sdk-test-key-5e1b"
MODEL = "fal-ai/kling-video/v2.1/standard/text-to-video"

# What a user writes: submit, watch the status events, read the result, fetch the file.
_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import fal_client, httpx

    async def main(model, out, prompt):
        client = fal_client.AsyncClient(key=sys.argv[4])
        handle = await client.submit(model, {"prompt": prompt, "duration": "5"})
        seen = []
        async for event in handle.iter_events(interval=0.02):
            seen.append(type(event).__name__)
        result = await handle.get()
        again = await client.status(model, handle.request_id)
        async with httpx.AsyncClient() as http:
            video = await http.get(result["video"]["url"])
            video.raise_for_status()
        open(out, "wb").write(video.content)
        print(json.dumps({
            "request_id": handle.request_id,
            "seen": seen,
            "final": type(again).__name__,
            "error": getattr(again, "error", None),
            "result": result,
            "content_type": video.headers["content-type"],
        }))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
    """
)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    folder = tmp_path_factory.mktemp("fal-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    yield ca_file, cert_file, key_file


@pytest.fixture
async def tls_emulator(tls_files: tuple[Path, Path, Path]) -> AsyncIterator[EmulatorServer]:
    _, cert_file, key_file = tls_files
    config = EmulatorConfig(api_key=KEY, time_scale=50.0, max_concurrent_jobs=None)
    async with EmulatorServer(
        config, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)
    ) as server:
        yield server


async def _run_sdk(
    server: EmulatorServer, ca_file: Path, out: Path, prompt: str, key: str = KEY
) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "FAL_QUEUE_RUN_HOST": server.fal_queue_host,
        "SSL_CERT_FILE": str(ca_file),
    }
    env.pop("FAL_KEY", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SCRIPT,
        MODEL,
        str(out),
        prompt,
        key,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_fal_client_submits_polls_and_downloads_a_video(
    tls_emulator: EmulatorServer, tls_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "fal.mp4"
    code, stdout, stderr = await _run_sdk(tls_emulator, tls_files[0], out, "a fox in snow")
    assert code == 0, stderr[-2000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    # The SDK walked the queue's statuses in order and ended on Completed without an error.
    assert report["seen"][-1] == "Completed" and report["final"] == "Completed"
    assert report["error"] is None
    order = {"Queued": 0, "InProgress": 1, "Completed": 2}
    assert [order[s] for s in report["seen"]] == sorted(order[s] for s in report["seen"])
    assert report["result"]["video"]["content_type"] == "video/mp4"
    assert report["content_type"] == "video/mp4"
    assert out.stat().st_size == report["result"]["video"]["file_size"]
    probe = probe_mp4(out.read_bytes())
    assert probe["duration"] == pytest.approx(5.0, abs=0.5)
    stats = tls_emulator.state.stats
    assert stats["fal.jobs_created"] == 1 and stats["fal.content_requests"] == 1


async def test_fal_client_sees_a_failed_generation_and_a_wrong_key(
    tls_emulator: EmulatorServer, tls_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "never.mp4"
    code, _, stderr = await _run_sdk(
        tls_emulator, tls_files[0], out, "a fox [emulator:fail=internal_error]"
    )
    # handle.get() raises the result's error: the SDK's FalClientHTTPError with our detail.
    assert code != 0 and "FalClientHTTPError" in stderr, stderr[-2000:]
    assert not out.exists()
    code, _, stderr = await _run_sdk(tls_emulator, tls_files[0], out, "a fox", key="wrong")
    assert code != 0 and "Authentication is required" in stderr, stderr[-2000:]
    assert "wrong" not in str(tls_emulator.state.stats)
