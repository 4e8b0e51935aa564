"""The provider emulator over real loopback HTTP: the official openai client and raw httpx.

Time is compressed with `time_scale`; waits are bounded polling loops, never bare sleeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import openai
import pytest

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer, EmulatorThread, parse_directives
from vidpipe.dev.emulator.config import DirectiveError
from vidpipe.media.sample import VideoProbeError, looks_like_mp4, probe_mp4, render_sample_image

# The SDK marks the whole Videos API deprecated (OpenAI's own service shut down); the wire lives on.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KEY = "test-key-0123456789"
# 7 emulated seconds of schedule take 70 ms of real time.
BASE = EmulatorConfig(api_key=KEY, time_scale=100.0)
AZURE_ORDER = ["queued", "preprocessing", "running", "processing", "succeeded"]

T = TypeVar("T")


async def wait_until(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 5.0
) -> list[T]:
    """Call `fetch` until `done` holds; return every value seen. Fails at the deadline."""
    seen: list[T] = []
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        seen.append(value)
        if done(value):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(0.005)  # polling pace only; correctness comes from the condition


def is_ordered_subsequence(seen: list[str], order: list[str]) -> bool:
    """Every observed status appears in `order`, never going backwards."""
    positions = [order.index(v) for v in seen if v in order]
    return len(positions) == len(seen) and positions == sorted(positions)


class ManualClock:
    """A wall clock the test moves by hand, for exact phase boundaries with no waiting."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def dedupe(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(BASE) as srv:
        yield srv


@pytest.fixture
async def emu(server: EmulatorServer) -> EmulatorServer:
    server.state.set_config(BASE)
    server.state.reset()
    server.state.clock = time.time
    return server


@pytest.fixture
def clock(emu: EmulatorServer) -> ManualClock:
    manual = ManualClock(time.time())
    emu.state.clock = manual
    return manual


@pytest.fixture
async def az(emu: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{emu.azure_endpoint}/openai/v1/video/generations",
        params={"api-version": "preview"},
        headers={"api-key": KEY},
    ) as client:
        yield client


@pytest.fixture
async def oa_http(emu: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=emu.openai_base_url, headers={"authorization": f"Bearer {KEY}"}
    ) as client:
        yield client


@pytest.fixture
async def oa(emu: EmulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key=KEY, max_retries=0)
    yield client
    await client.close()


async def az_create(
    az: httpx.AsyncClient, prompt: str = "a red fox", **fields: Any
) -> dict[str, Any]:
    body = {"model": "sora", "prompt": prompt, "width": 480, "height": 480, **fields}
    response = await az.post("/jobs", json=body)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def az_wait(az: httpx.AsyncClient, job_id: str, within: float = 5.0) -> list[dict[str, Any]]:
    async def fetch() -> dict[str, Any]:
        response = await az.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return await wait_until(fetch, lambda j: j["status"] in ("succeeded", "failed"), within)


async def oa_wait(oa_http: httpx.AsyncClient, video_id: str) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        body: dict[str, Any] = (await oa_http.get(f"/videos/{video_id}")).json()
        return body

    seen = await wait_until(fetch, lambda v: v["status"] in ("completed", "failed"))
    return seen[-1]


def assert_error_body(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert {"code", "message", "param", "type"} <= set(error)
    if code is not None:
        assert error["code"] == code
    return error


# -- the official openai client ---------------------------------------------------------------


async def test_openai_client_create_poll_download(
    emu: EmulatorServer, oa: openai.AsyncOpenAI
) -> None:
    video = await oa.videos.create(
        prompt="a lighthouse at dusk", model="sora-2", seconds="8", size="1280x720"
    )
    assert video.id.startswith("video_")
    assert (video.object, video.status, video.progress) == ("video", "queued", 0)
    assert (video.seconds, video.size, video.model) == ("8", "1280x720", "sora-2")

    done = await asyncio.wait_for(oa.videos.poll(video.id), timeout=10)
    assert done.status == "completed" and done.progress == 100 and done.error is None
    assert done.completed_at is not None and done.expires_at is not None
    # 24 emulated hours after completion, i.e. 864 real seconds at time_scale 100.
    assert done.expires_at - done.completed_at == pytest.approx(864, abs=1)

    content = await oa.videos.download_content(done.id)
    data = content.read()
    assert looks_like_mp4(data)
    info = probe_mp4(data)
    assert (info["width"], info["height"]) == (320, 180)
    # As long as asked (8 s); 15 fps rather than 24 keeps the encode at 120 frames.
    assert info["duration"] == pytest.approx(8, abs=0.05) and info["frames"] == 120

    thumb = (await oa.videos.download_content(done.id, variant="thumbnail")).read()
    assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"
    sprites = (await oa.videos.download_content(done.id, variant="spritesheet")).read()
    assert sprites[:3] == b"\xff\xd8\xff"

    remix = await oa.videos.remix(done.id, prompt="the same lighthouse at dawn")
    assert (
        remix.remixed_from_video_id == done.id and remix.size == "1280x720" and remix.seconds == "8"
    )

    listed = [v.id async for v in oa.videos.list(limit=1)]  # pages through after=last_id
    assert listed == [remix.id, done.id]

    deleted = await oa.videos.delete(done.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (done.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        await oa.videos.retrieve(done.id)


async def test_openai_client_wrong_key_is_authentication_error(emu: EmulatorServer) -> None:
    client = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="wrong-key", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.videos.create(prompt="x")
    finally:
        await client.close()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert "wrong-key" not in caught.value.response.text and KEY not in caught.value.response.text


async def test_openai_client_under_azure_style_base(emu: EmulatorServer) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{emu.base_url}/openai/v1", api_key="unused", default_headers={"api-key": KEY}
    )
    # Azure Sora 2 authenticates with api-key; the SDK's own bearer is ignored when api-key is set.
    try:
        video = await client.videos.create(prompt="azure sora 2", seconds="4", size="720x1280")
        assert video.status == "queued"
    finally:
        await client.close()


def test_sync_client_against_emulator_thread() -> None:
    with EmulatorThread(BASE) as srv:
        client = openai.OpenAI(base_url=srv.openai_base_url, api_key=KEY, max_retries=0)
        with client:
            video = client.videos.create_and_poll(prompt="a sync client", seconds="4")
            assert video.status == "completed"
            assert looks_like_mp4(client.videos.download_content(video.id).read())
            srv.update_config(download="missing")
            with pytest.raises(openai.NotFoundError):
                client.videos.download_content(video.id)


async def test_openai_progress_rises_with_headers(
    emu: EmulatorServer, oa_http: httpx.AsyncClient
) -> None:
    emu.update_config(time_scale=10.0)  # 0.7 s of real schedule: every phase is observable
    created = await oa_http.post(
        "/videos", files={"prompt": (None, "waves"), "seconds": (None, "4")}
    )
    assert created.status_code == 200
    assert created.headers["openai-poll-after-ms"] == "500"  # 5 emulated s at time_scale 10
    assert created.headers["x-request-id"].startswith("req_")
    video_id = created.json()["id"]

    async def fetch() -> httpx.Response:
        return await oa_http.get(f"/videos/{video_id}")

    seen = await wait_until(fetch, lambda r: r.json()["status"] == "completed")
    bodies = [created.json()] + [r.json() for r in seen]
    statuses = dedupe([b["status"] for b in bodies])
    assert is_ordered_subsequence(statuses, ["queued", "in_progress", "completed"])
    assert statuses[0] == "queued" and statuses[-1] == "completed"
    progress = [b["progress"] for b in bodies]
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(r.headers["x-request-id"] for r in seen)
    assert len({r.headers["x-request-id"] for r in seen}) == len(seen)


async def test_openai_validation(
    emu: EmulatorServer, oa: openai.AsyncOpenAI, oa_http: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oa.videos.create(prompt="x", seconds="5")  # type: ignore[arg-type]
    assert caught.value.param == "seconds"

    as_int = await oa_http.post("/videos", json={"prompt": "x", "seconds": 4})
    assert_error_body(as_int, 400, "invalid_type")
    missing = await oa_http.post("/videos", json={"seconds": "4"})
    assert assert_error_body(missing, 400)["param"] == "prompt"
    bad_size = await oa_http.post("/videos", json={"prompt": "x", "size": "640x480"})
    assert assert_error_body(bad_size, 400)["param"] == "size"

    wrong = render_sample_image(64, 36, "png")
    mismatch = await oa_http.post(
        "/videos",
        data={"prompt": "x", "size": "1280x720"},
        files={"input_reference": ("ref.png", wrong, "image/png")},
    )
    assert assert_error_body(mismatch, 400)["param"] == "input_reference"

    right = render_sample_image(1280, 720, "jpeg")
    video = await oa.videos.create(
        prompt="from an image", size="1280x720", input_reference=("ref.jpg", right, "image/jpeg")
    )
    assert video.status == "queued"
    json_create = await oa_http.post(
        "/videos", json={"prompt": "json body", "seconds": "12", "size": "1792x1024"}
    )
    assert json_create.status_code == 200 and json_create.json()["seconds"] == "12"


# -- azure-sora over httpx ------------------------------------------------------------------------


async def test_azure_job_lifecycle(emu: EmulatorServer, az: httpx.AsyncClient) -> None:
    emu.update_config(time_scale=10.0)  # each phase >= 100 ms, so polling sees all of them
    job = await az_create(az, n_seconds=5)
    assert job["object"] == "video.generation.job" and job["id"].startswith("task_")
    assert set(job) == {
        "object", "id", "status", "created_at", "finished_at", "expires_at", "prompt", "model",
        "n_variants", "n_seconds", "width", "height", "generations", "failure_reason",
    }  # fmt: skip
    assert (job["status"], job["generations"], job["finished_at"], job["expires_at"]) == (
        "queued",
        [],
        None,
        None,
    )

    seen = await az_wait(az, job["id"])
    statuses = dedupe(["queued"] + [j["status"] for j in seen])
    assert is_ordered_subsequence(statuses, AZURE_ORDER) and statuses[-1] == "succeeded"
    final = seen[-1]
    assert final["failure_reason"] is None and final["finished_at"] >= final["created_at"]
    assert final["expires_at"] - final["created_at"] == pytest.approx(8640, abs=1)  # 24 h / 10
    (generation,) = final["generations"]
    assert generation["object"] == "video.generation" and generation["id"].startswith("gen_")

    meta = await az.get(f"/{generation['id']}")
    assert meta.status_code == 200
    assert meta.json() == generation
    assert set(meta.json()) == {
        "object",
        "id",
        "job_id",
        "created_at",
        "width",
        "height",
        "n_seconds",
        "prompt",
    }

    head = await az.head(f"/{generation['id']}/content/video")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "video/mp4"
    assert head.headers["accept-ranges"] == "bytes"
    parsedate_to_datetime(head.headers["last-modified"])
    body = await az.get(f"/{generation['id']}/content/video", params={"quality": "low"})
    assert body.status_code == 200
    assert (
        int(head.headers["content-length"])
        == int(body.headers["content-length"])
        == len(body.content)
    )
    assert probe_mp4(body.content)["frames"] > 0

    ranged = await az.get(f"/{generation['id']}/content/video", headers={"range": "bytes=0-99"})
    assert ranged.status_code == 206 and ranged.content == body.content[:100]
    assert ranged.headers["content-range"] == f"bytes 0-99/{len(body.content)}"
    unsatisfiable = await az.get(
        f"/{generation['id']}/content/video", headers={"range": "bytes=999999-"}
    )
    assert unsatisfiable.status_code == 416

    thumb = await az.get(f"/{generation['id']}/content/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff"


async def test_exact_phases_on_a_manual_clock(
    emu: EmulatorServer, clock: ManualClock, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    # Default schedule 1/1/4/1 emulated s at time_scale 100: boundaries at +10/20/60/70 ms.
    start = clock.now
    job_id = (await az_create(az))["id"]
    video_id = (await oa_http.post("/videos", json={"prompt": "p"})).json()["id"]
    azure: list[str] = []
    videos: list[tuple[str, int]] = []
    for at in (0.0, 0.015, 0.0313, 0.0653, 0.075):  # queued, pre, running, processing, done
        clock.now = start + at
        azure.append((await az.get(f"/jobs/{job_id}")).json()["status"])
        video = (await oa_http.get(f"/videos/{video_id}")).json()
        videos.append((video["status"], video["progress"]))
    assert azure == AZURE_ORDER
    # Progress rises linearly over the 60 ms after the queue.
    assert videos == [
        ("queued", 0),
        ("in_progress", 8),
        ("in_progress", 35),
        ("in_progress", 92),
        ("completed", 100),
    ]


async def test_azure_multipart_with_image(emu: EmulatorServer, az: httpx.AsyncClient) -> None:
    image = render_sample_image(480, 480, "png")
    items = [{"frame_index": 0, "type": "image", "file_name": "start.png", "crop_bounds": None}]
    form = {
        "model": "sora",
        "prompt": "animate this",
        "width": "480",
        "height": "480",
        "n_seconds": "5",
    }
    ok = await az.post(
        "/jobs",
        data={**form, "inpaint_items": json.dumps(items)},
        files=[("files", ("start.png", image, "image/png"))],
    )
    assert ok.status_code == 200, ok.text
    assert (ok.json()["width"], ok.json()["n_seconds"]) == (480, 5)
    assert (await az_wait(az, ok.json()["id"]))[-1]["status"] == "succeeded"

    bad_name = [{**items[0], "file_name": "other.png"}]
    mismatch = await az.post(
        "/jobs",
        data={**form, "inpaint_items": json.dumps(bad_name)},
        files=[("files", ("start.png", image, "image/png"))],
    )
    assert assert_error_body(mismatch, 400)["param"] == "inpaint_items"
    not_image = await az.post(
        "/jobs",
        data={**form, "inpaint_items": json.dumps(items)},
        files=[("files", ("start.png", b'{"not": "an image"}', "image/png"))],
    )
    assert_error_body(not_image, 400)


async def test_azure_validation_and_auth(emu: EmulatorServer, az: httpx.AsyncClient) -> None:
    no_version = await az.get("/jobs", params={"api-version": ""})
    assert assert_error_body(no_version, 400)["param"] == "api-version"
    raw = httpx.AsyncClient(base_url=emu.azure_endpoint, headers={"api-key": KEY})
    async with raw:
        missing = await raw.get("/openai/v1/video/generations/jobs")
        assert_error_body(missing, 400, "MissingApiVersionParameter")
        wrong_key = await raw.get(
            "/openai/v1/video/generations/jobs",
            params={"api-version": "preview"},
            headers={"api-key": "nope"},
        )
        assert_error_body(wrong_key, 401)
        no_key = await httpx.AsyncClient(base_url=emu.azure_endpoint).get(
            "/openai/v1/video/generations/jobs", params={"api-version": "preview"}
        )
        assert_error_body(no_key, 401)
        bearer = await raw.get(
            "/openai/v1/video/generations/jobs",
            params={"api-version": "preview"},
            headers={"api-key": "", "authorization": f"Bearer {KEY}"},
        )
        assert bearer.status_code == 200

    base = {"model": "sora", "prompt": "x"}
    bad_size = await az.post("/jobs", json={**base, "width": 1000, "height": 1000})
    assert assert_error_body(bad_size, 400)["param"] == "width"
    too_many_1080 = await az.post(
        "/jobs", json={**base, "width": 1920, "height": 1080, "n_variants": 2}
    )
    assert assert_error_body(too_many_1080, 400)["param"] == "n_variants"
    too_many_720 = await az.post(
        "/jobs", json={**base, "width": 1280, "height": 720, "n_variants": 3}
    )
    assert assert_error_body(too_many_720, 400)["param"] == "n_variants"
    too_long = await az.post("/jobs", json={**base, "width": 480, "height": 480, "n_seconds": 21})
    assert assert_error_body(too_long, 400)["param"] == "n_seconds"
    no_model = await az.post("/jobs", json={"prompt": "x", "width": 480, "height": 480})
    assert assert_error_body(no_model, 400)["param"] == "model"

    two = await az_create(az, width=1280, height=720, n_variants=2)
    final = (await az_wait(az, two["id"]))[-1]
    assert len(final["generations"]) == 2
    portrait = await az_create(az, width=1080, height=1920)
    assert (portrait["width"], portrait["height"]) == (1080, 1920)

    emu.update_config(deployments=["sora"])
    unknown = await az.post(
        "/jobs", json={**base, "model": "sora-typo", "width": 480, "height": 480}
    )
    assert_error_body(unknown, 404, "DeploymentNotFound")


async def test_azure_list_and_delete(emu: EmulatorServer, az: httpx.AsyncClient) -> None:
    emu.update_config(max_concurrent_jobs=None)
    ids = [(await az_create(az, prompt=f"clip {i}"))["id"] for i in range(3)]
    first = (await az.get("/jobs", params={"limit": 2})).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [j["id"] for j in first["data"]] == [ids[2], ids[1]]  # newest first
    assert (first["first_id"], first["last_id"]) == (ids[2], ids[1])
    rest = (await az.get("/jobs", params={"limit": 2, "after": first["last_id"]})).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    before = (await az.get("/jobs", params={"before": ids[0]})).json()
    assert [j["id"] for j in before["data"]] == [ids[2], ids[1]]

    await az_wait(az, ids[0])
    done = (await az.get("/jobs", params={"statuses": "succeeded"})).json()
    assert ids[0] in [j["id"] for j in done["data"]]
    assert all(j["status"] == "succeeded" for j in done["data"])
    assert_error_body(await az.get("/jobs", params={"statuses": "bogus"}), 400)

    deleted = await az.delete(f"/jobs/{ids[1]}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error_body(await az.get(f"/jobs/{ids[1]}"), 404)
    assert_error_body(await az.delete(f"/jobs/{ids[1]}"), 404)
    remaining = (await az.get("/jobs")).json()
    assert ids[1] not in [j["id"] for j in remaining["data"]] and len(remaining["data"]) == 2


# -- behaviour switches ---------------------------------------------------------------------


async def az_content(az: httpx.AsyncClient, job_id: str) -> httpx.Response:
    job = (await az.get(f"/jobs/{job_id}")).json()
    return await az.get(f"/{job['generations'][0]['id']}/content/video")


async def test_download_missing_for_good(
    emu: EmulatorServer, az: httpx.AsyncClient, oa: openai.AsyncOpenAI
) -> None:
    job = await az_create(az, prompt="lost video [emulator:download=missing]")
    final = (await az_wait(az, job["id"]))[-1]
    assert final["status"] == "succeeded"  # generated fine...
    for _ in range(3):  # ...but never downloadable
        assert_error_body(await az_content(az, job["id"]), 404)
    gen_id = final["generations"][0]["id"]
    assert (await az.head(f"/{gen_id}/content/video")).status_code == 404
    assert (await az.get(f"/{gen_id}")).status_code == 200  # metadata still answers

    # The same switch set globally at runtime, seen through the openai client.
    assert (
        await emu_admin(emu, "POST", "/_emulator/config", {"download": "missing"})
    ).status_code == 200
    video = await oa.videos.create(prompt="also lost")
    assert (await asyncio.wait_for(oa.videos.poll(video.id), 10)).status == "completed"
    with pytest.raises(openai.NotFoundError):
        await oa.videos.download_content(video.id)


async def test_download_delayed_then_ok(
    emu: EmulatorServer, clock: ManualClock, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    # Done at +70 ms; 100 emulated seconds later (1 s real at time_scale 100) it downloads.
    start = clock.now
    job = await az_create(
        az, prompt="slow cdn [emulator:download=delayed] [emulator:download_delay=100]"
    )
    emu.update_config(download="delayed", download_delay_seconds=50)  # the global switch
    video_id = (await oa_http.post("/videos", json={"prompt": "also delayed"})).json()["id"]
    clock.now = start + 0.08
    assert (await az.get(f"/jobs/{job['id']}")).json()["status"] == "succeeded"
    assert_error_body(await az_content(az, job["id"]), 404)
    assert (await oa_http.get(f"/videos/{video_id}/content")).status_code == 404
    clock.now = start + 0.58  # 0.5 s after completion: the openai side is ready
    assert (await oa_http.get(f"/videos/{video_id}/content")).status_code == 200
    clock.now = start + 1.06
    assert (await az_content(az, job["id"])).status_code == 404
    clock.now = start + 1.08
    ready = await az_content(az, job["id"])
    assert ready.status_code == 200 and looks_like_mp4(ready.content)


async def test_download_flaky_every_other(emu: EmulatorServer, oa_http: httpx.AsyncClient) -> None:
    emu.update_config(download="flaky")
    video_id = (await oa_http.post("/videos", json={"prompt": "flaky"})).json()["id"]
    await oa_wait(oa_http, video_id)
    codes = [(await oa_http.get(f"/videos/{video_id}/content")).status_code for _ in range(4)]
    assert codes == [502, 200, 502, 200]


async def test_download_json_body(
    emu: EmulatorServer, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    job = await az_create(az, prompt="the trap [emulator:download=json_body]")
    await az_wait(az, job["id"])
    response = await az_content(az, job["id"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json() and not looks_like_mp4(response.content)
    with pytest.raises(VideoProbeError):
        probe_mp4(response.content)

    video_id = (
        await oa_http.post("/videos", json={"prompt": "trap [emulator:download=json_body]"})
    ).json()["id"]
    await oa_wait(oa_http, video_id)
    oa_response = await oa_http.get(f"/videos/{video_id}/content")
    assert (
        oa_response.status_code == 200 and oa_response.headers["content-type"] == "application/json"
    )


async def test_moderation_failures(
    emu: EmulatorServer, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    clock = ManualClock(time.time())
    emu.state.clock = clock
    start = clock.now
    blocked = (await az_create(az, prompt="something FORBIDDEN here"))["id"]
    out = (await az_create(az, prompt="ok prompt [emulator:fail=output_moderation]"))["id"]
    video_id = (
        await oa_http.post("/videos", json={"prompt": "x [emulator:fail=internal_error]"})
    ).json()["id"]

    async def azure_at(at: float, job_id: str) -> dict[str, Any]:
        clock.now = start + at
        body: dict[str, Any] = (await az.get(f"/jobs/{job_id}")).json()
        return body

    # Input moderation ends the job when preprocessing ends (+20 ms): it never runs.
    assert (await azure_at(0.015, blocked))["status"] == "preprocessing"
    failed_in = await azure_at(0.025, blocked)
    assert (failed_in["status"], failed_in["failure_reason"]) == ("failed", "input_moderation")
    assert failed_in["generations"] == [] and failed_in["finished_at"] is not None
    # Output moderation only strikes after processing (+70 ms).
    assert (await azure_at(0.065, out))["status"] == "processing"
    failed_out = await azure_at(0.075, out)
    assert (failed_out["status"], failed_out["failure_reason"]) == ("failed", "output_moderation")

    # internal_error strikes when running ends (+60 ms); progress stops where it was.
    clock.now = start + 0.075
    failed = (await oa_http.get(f"/videos/{video_id}")).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "internal_error"
    assert failed["expires_at"] is None and failed["progress"] == 83
    assert (await oa_http.get(f"/videos/{video_id}/content")).status_code == 404

    emu.update_config(moderation_mode="reject", moderation_words=["kraken"])
    rejected = await az.post(
        "/jobs", json={"model": "sora", "prompt": "a Kraken", "width": 480, "height": 480}
    )
    error = assert_error_body(rejected, 400, "content_filter")
    assert error["inner_error"]["code"] == "ResponsibleAIPolicyViolation"
    oa_rejected = await oa_http.post("/videos", json={"prompt": "the kraken wakes"})
    assert_error_body(oa_rejected, 400, "moderation_blocked")


async def test_rate_limit_every_nth_create(
    emu: EmulatorServer, az: httpx.AsyncClient, oa: openai.AsyncOpenAI
) -> None:
    emu.update_config(rate_limit_every=2, max_concurrent_jobs=None, retry_after_seconds=30)
    await az_create(az)
    limited = await az.post(
        "/jobs", json={"model": "sora", "prompt": "x", "width": 480, "height": 480}
    )
    assert_error_body(limited, 429)
    assert (
        limited.headers["retry-after"] == "1"
    )  # 30 emulated s = 0.3 s, rounded up to whole seconds
    await az_create(az)  # the 3rd create passes again

    with pytest.raises(openai.RateLimitError) as caught:
        await oa.videos.create(prompt="the 4th create")
    assert caught.value.response.headers["retry-after-ms"] == "300"
    assert caught.value.code == "rate_limit_exceeded"

    directive = await az.post(
        "/jobs",
        json={"model": "sora", "prompt": "[emulator:rate_limit]", "width": 480, "height": 480},
    )
    assert directive.status_code == 429


async def test_concurrent_job_quota(
    emu: EmulatorServer, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    slow = "long one [emulator:slow=1000]"  # 7000 emulated s = 70 s real: stays in flight
    first = await az_create(az, prompt=slow)
    await az_create(az, prompt=slow)
    third = await az.post(
        "/jobs", json={"model": "sora", "prompt": slow, "width": 480, "height": 480}
    )
    assert_error_body(third, 429)
    assert int(third.headers["retry-after"]) >= 1
    # Quotas are per protocol: the /v1/videos side still has room.
    assert (await oa_http.post("/videos", json={"prompt": slow})).status_code == 200
    assert (await az.delete(f"/jobs/{first['id']}")).status_code == 204
    await az_create(az, prompt=slow)  # a freed slot admits the next job


async def test_injected_status_errors(
    emu: EmulatorServer, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    job = await az_create(az, prompt="[emulator:status_errors=2]")
    codes = [(await az.get(f"/jobs/{job['id']}")).status_code for _ in range(3)]
    assert codes == [503, 503, 200]

    emu.update_config(status_error_rate=1.0, status_error_code=500)
    video_id = (await oa_http.post("/videos", json={"prompt": "x"})).json()["id"]
    response = await oa_http.get(f"/videos/{video_id}")
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    emu.update_config(status_error_rate=0.5, seed=7)
    codes = [(await oa_http.get(f"/videos/{video_id}")).status_code for _ in range(40)]
    assert 5 < codes.count(500) < 35 and codes.count(200) + codes.count(500) == 40


async def test_expiry(
    emu: EmulatorServer, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    emu.update_config(time_scale=43_200.0)  # half a day per second: assets live 2 s
    job = await az_create(az)
    video_id = (await oa_http.post("/videos", json={"prompt": "short-lived"})).json()["id"]
    final = (await az_wait(az, job["id"]))[-1]
    assert final["expires_at"] - final["created_at"] == 2
    assert (await az_content(az, job["id"])).status_code == 200
    assert (await oa_wait(oa_http, video_id))["status"] == "completed"

    gone = await wait_until(lambda: az_content(az, job["id"]), lambda r: r.status_code != 200)
    assert_error_body(gone[-1], 410, "expired")
    oa_gone = await wait_until(
        lambda: oa_http.get(f"/videos/{video_id}/content"), lambda r: r.status_code != 200
    )
    assert_error_body(oa_gone[-1], 410)
    still = await az.get(f"/jobs/{job['id']}")  # the job record outlives its assets
    assert still.status_code == 200 and still.json()["status"] == "succeeded"
    assert still.json()["expires_at"] <= time.time() + 1
    assert (await oa_http.get(f"/videos/{video_id}")).json()["status"] == "completed"


async def test_idempotency_key(
    emu: EmulatorServer, az: httpx.AsyncClient, oa: openai.AsyncOpenAI
) -> None:
    body = {"model": "sora", "prompt": "once only", "width": 480, "height": 480}
    first = await az.post("/jobs", json=body, headers={"idempotency-key": "req-1"})
    again = await az.post("/jobs", json=body, headers={"idempotency-key": "req-1"})
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    listed = (await az.get("/jobs")).json()["data"]
    assert [j["id"] for j in listed] == [first.json()["id"]]
    reused = await az.post(
        "/jobs", json={**body, "prompt": "different"}, headers={"idempotency-key": "req-1"}
    )
    assert_error_body(reused, 409, "idempotency_key_reused")

    a = await oa.videos.create(prompt="dedupe me", extra_headers={"Idempotency-Key": "oa-1"})
    b = await oa.videos.create(prompt="dedupe me", extra_headers={"Idempotency-Key": "oa-1"})
    c = await oa.videos.create(prompt="dedupe me")
    assert a.id == b.id != c.id
    stats = (await emu_admin(emu, "GET", "/_emulator/stats")).json()
    assert stats["azure.jobs_created"] == 1 and stats["openai.jobs_created"] == 2


async def test_drop_after_create_makes_the_job_then_loses_the_answer(
    emu: EmulatorServer, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    prompt = "unanswered [emulator:drop_after_create]"
    body = {"model": "sora", "prompt": prompt, "width": 480, "height": 480}
    with pytest.raises(httpx.RemoteProtocolError):
        await az.post("/jobs", json=body, headers={"idempotency-key": "lost-1"})
    # The key was not remembered (a provider that does not honour it): a re-send is a new job.
    with pytest.raises(httpx.RemoteProtocolError):
        await az.post("/jobs", json=body, headers={"idempotency-key": "lost-1"})
    listed = (await az.get("/jobs")).json()["data"]
    assert [j["prompt"] for j in listed] == [prompt, prompt]
    with pytest.raises(httpx.RemoteProtocolError):
        await oa_http.post("/videos", files={"prompt": (None, prompt.encode())})
    videos = (await oa_http.get("/videos")).json()["data"]
    assert [v["prompt"] for v in videos] == [prompt]
    stats = (await emu_admin(emu, "GET", "/_emulator/stats")).json()
    assert stats["azure.jobs_created"] == stats["azure.creates_dropped"] == 2
    assert stats["openai.jobs_created"] == stats["openai.creates_dropped"] == 1
    assert parse_directives(prompt).drop_after_create


async def test_idempotency_can_be_switched_off(
    emu: EmulatorServer, az: httpx.AsyncClient, oa_http: httpx.AsyncClient
) -> None:
    emu.state.set_config(BASE.updated({"idempotency": False}))
    body = {"model": "sora", "prompt": "twice", "width": 480, "height": 480}
    first = await az.post("/jobs", json=body, headers={"idempotency-key": "k"})
    again = await az.post("/jobs", json=body, headers={"idempotency-key": "k"})
    assert first.json()["id"] != again.json()["id"]
    form = {"prompt": (None, b"twice")}
    a = await oa_http.post("/videos", files=form, headers={"idempotency-key": "k"})
    b = await oa_http.post("/videos", files=form, headers={"idempotency-key": "k"})
    assert a.json()["id"] != b.json()["id"]


async def test_slow_directive_and_unknown_directive(
    emu: EmulatorServer, az: httpx.AsyncClient
) -> None:
    slow = await az_create(az, prompt="[emulator:slow]")  # 10x: 0.7 s instead of 0.07 s
    slower = await az_create(az, prompt="[emulator:slow=100]")  # 7 s
    clock = ManualClock(time.time() + 0.1)
    emu.state.clock = clock
    assert (await az.get(f"/jobs/{slow['id']}")).json()["status"] in ("preprocessing", "running")
    assert (await az.get(f"/jobs/{slower['id']}")).json()["status"] == "queued"
    clock.advance(0.7)  # +0.8 s
    assert (await az.get(f"/jobs/{slow['id']}")).json()["status"] == "succeeded"
    assert (await az.get(f"/jobs/{slower['id']}")).json()["status"] == "queued"
    clock.advance(1.7)  # +2.5 s: queued 1 s, preprocessing 1 s, then running
    assert (await az.get(f"/jobs/{slower['id']}")).json()["status"] == "running"
    clock.advance(4.8)  # +7.3 s
    assert (await az.get(f"/jobs/{slower['id']}")).json()["status"] == "succeeded"
    typo = await az.post(
        "/jobs",
        json={"model": "sora", "prompt": "[emulator:dowload=missing]", "width": 480, "height": 480},
    )
    assert assert_error_body(typo, 400)["param"] == "prompt"


# -- admin endpoint and secrets ------------------------------------------------------------------


async def emu_admin(
    emu: EmulatorServer, method: str, path: str, body: Any = None, key: str = KEY
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=emu.base_url, headers={"api-key": key}) as client:
        return await client.request(method, path, json=body)


async def test_admin_config(emu: EmulatorServer) -> None:
    current = (await emu_admin(emu, "GET", "/_emulator/config")).json()
    assert current["api_key"] == "**********" and current["time_scale"] == 100.0
    updated = await emu_admin(
        emu, "POST", "/_emulator/config", {"download": "flaky", "rate_limit_every": 5}
    )
    assert updated.status_code == 200 and updated.json()["download"] == "flaky"
    assert emu.config.rate_limit_every == 5 and emu.config.time_scale == 100.0  # partial update
    invalid = await emu_admin(emu, "POST", "/_emulator/config", {"download": "sometimes"})
    assert invalid.status_code == 422 and emu.config.download == "flaky"
    unknown = await emu_admin(emu, "POST", "/_emulator/config", {"no_such_switch": 1})
    assert unknown.status_code == 422
    assert (await emu_admin(emu, "GET", "/_emulator/config", key="bad")).status_code == 401
    health = await httpx.AsyncClient(base_url=emu.base_url).get("/_emulator/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}


async def test_key_never_leaks(
    emu: EmulatorServer, az: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = [
        (await az_create(az)).__repr__(),
        (await az.get("/jobs")).text,
        (await az.get("/jobs", headers={"api-key": KEY + "x"})).text,
        (await emu_admin(emu, "GET", "/_emulator/config")).text,
        (await emu_admin(emu, "POST", "/_emulator/config", {"api_key": 12})).text,
    ]
    assert caplog.records  # something was logged, and none of it is the key
    assert all(KEY not in t for t in texts)
    assert KEY not in caplog.text


def test_directive_parsing() -> None:
    d = parse_directives(
        "a cat [emulator:download=delayed] [emulator:download_delay=5] [emulator:slow=3]"
    )
    assert (d.download, d.download_delay, d.slow, d.slow_factor) == ("delayed", 5.0, True, 3.0)
    d = parse_directives(
        "[emulator:fail=output_moderation][emulator:status_errors=2][emulator:rate_limit]"
    )
    assert (d.fail, d.status_errors, d.rate_limit) == ("output_moderation", 2, True)
    assert parse_directives("no directives [emulator] at all") == parse_directives("")
    for bad in (
        "[emulator:download=sometimes]",
        "[emulator:slow=0.5]",
        "[emulator:nope]",
        "[emulator:duration=x]",
    ):
        with pytest.raises(DirectiveError):
            parse_directives(bad)
