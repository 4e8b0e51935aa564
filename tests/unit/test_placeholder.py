"""The placeholder fallback: real rendering (PyAV + Pillow) and real local storage, no Kafka."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import av
import httpx
import pytest
from faststream.kafka.subscriber.usecase import LogicSubscriber
from PIL import Image, ImageFont
from structlog.testing import capture_logs

from schemas.events import (
    DownloadUnavailable,
    FallbackName,
    RequestSnapshot,
    VideoStored,
    derive_event_id,
)
from services.placeholder.app import create_stage
from services.placeholder.handlers import (
    ImageFetcher,
    PlaceholderDeps,
    handle_download_unavailable,
    placeholder_key,
)
from vidpipe.media import placeholder as rendering
from vidpipe.media.placeholder import (
    PlaceholderJob,
    RenderedPlaceholder,
    placeholder_size,
    render_placeholder,
    wrap_text,
)
from vidpipe.media.sample import probe_mp4, render_sample_image, render_sample_mp4
from vidpipe.net.images import InputImage, InputImageFetcher
from vidpipe.policy.messages import (
    SUPPORTED_LANGUAGES,
    Language,
    placeholder_caption,
    resolve_language,
)
from vidpipe.settings import Settings
from vidpipe.storage import LocalFolderStorage
from vidpipe.testing import MemoryPublisher

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IMAGE_URL = "https://img.example.com/cat.jpg"
PUBLIC_V4 = "93.184.216.34"


def _event(
    *,
    size: str = "320x180",
    image_url: str | None = None,
    fallbacks: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    generation_id: str = "gen_1",
    request: bool = True,
) -> DownloadUnavailable:
    snapshot = RequestSnapshot.model_validate(
        {
            "prompt": "A red fox running through fresh snow at dawn",
            "input_image_url": image_url,
            "size": size,
            "fallbacks": fallbacks,
            "metadata": metadata or {},
        }
    )
    return DownloadUnavailable(
        event_id=uuid.uuid4(),
        request_id="req-1",
        provider="azure-sora",
        provider_job_id="task_1",
        generation_id=generation_id,
        reason_code="not_found",
        http_status=404,
        message="404",
        attempted_at=NOW,
        request=snapshot if request else None,
    )


class CountingRenderer:
    """The real renderer, counted, remembering what it made and on which thread."""

    def __init__(self) -> None:
        self.results: list[RenderedPlaceholder] = []
        self.threads: list[int] = []

    def __call__(self, job: PlaceholderJob) -> RenderedPlaceholder:
        self.threads.append(threading.get_ident())
        result = render_placeholder(job)
        self.results.append(result)
        return result


def _deps(
    tmp_path: Path,
    *,
    fetch_image: ImageFetcher | None = None,
    default: Sequence[FallbackName] = ("placeholder", "notify"),
    seconds: float = 1.0,
) -> tuple[PlaceholderDeps, MemoryPublisher, CountingRenderer]:
    publisher = MemoryPublisher()
    renderer = CountingRenderer()
    deps = PlaceholderDeps(
        storage=LocalFolderStorage(tmp_path),
        publisher=publisher,
        fallback_default=list(default),
        fetch_image=fetch_image,
        render=renderer,
        seconds=seconds,
        clock=lambda: NOW,
    )
    return deps, publisher, renderer


def _image_client(
    status: int = 200, body: bytes | None = None
) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    data = body if body is not None else render_sample_image(640, 360, "jpeg")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers={"Content-Type": "image/jpeg"}, content=data)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


async def _public(host: str, port: int) -> Sequence[str]:
    assert host == "img.example.com"
    return [PUBLIC_V4]


def _frames(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(frame.planes[0]) for frame in container.decode(video=0)]


async def test_title_card_is_stored_and_announced(tmp_path: Path) -> None:
    deps, publisher, renderer = _deps(tmp_path, seconds=3.0)
    event = _event(size="1280x720")
    await handle_download_unavailable(event, deps)

    (stored,) = publisher.events
    assert isinstance(stored, VideoStored)
    assert stored.placeholder is True
    assert stored.variant_index == 0
    assert stored.event_id == derive_event_id("req-1", "VideoStored", "placeholder")
    assert stored.causation_id == event.event_id
    assert stored.occurred_at == NOW  # the stage's clock
    assert (stored.provider, stored.provider_job_id, stored.generation_id) == (
        "azure-sora",
        "task_1",
        "gen_1",
    )
    path = tmp_path / placeholder_key("req-1")
    assert stored.storage_url == path.as_uri()
    data = path.read_bytes()
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.content_type == "video/mp4"

    info = probe_mp4(path)
    assert (info["width"], info["height"]) == (640, 360)  # 1280x720 capped, aspect kept
    assert info["frames"] == 72  # 3 s at 24 fps
    assert info["codec"] in {"h264", "mpeg4"}
    (result,) = renderer.results
    assert result.kind == "title_card"
    # CPU work ran in a worker thread, not on the event loop's thread.
    assert renderer.threads[0] != threading.get_ident()


async def test_input_image_makes_a_moving_pan_and_zoom(tmp_path: Path) -> None:
    client, seen = _image_client()
    async with client:
        fetch = InputImageFetcher(
            max_bytes=1_000_000, allow_private=False, timeout_s=5, resolver=_public, client=client
        )
        deps, publisher, renderer = _deps(tmp_path, fetch_image=fetch)
        await handle_download_unavailable(_event(size="480x480", image_url=IMAGE_URL), deps)

    assert len(seen) == 1
    assert seen[0].url.host == PUBLIC_V4  # went through the SSRF guard's pinned address
    (result,) = renderer.results
    assert (result.kind, result.image_error) == ("image", None)
    (stored,) = publisher.of_type(VideoStored)
    assert isinstance(stored, VideoStored) and stored.placeholder
    path = tmp_path / placeholder_key("req-1")
    info = probe_mp4(path)
    assert (info["width"], info["height"], info["frames"]) == (480, 480, 24)
    frames = _frames(path)
    assert frames[0] != frames[-1]


async def test_unreachable_image_falls_back_to_title_card(tmp_path: Path) -> None:
    client, seen = _image_client(status=404)
    async with client:
        fetch = InputImageFetcher(
            max_bytes=1_000_000, allow_private=False, timeout_s=5, resolver=_public, client=client
        )
        deps, publisher, renderer = _deps(tmp_path, fetch_image=fetch)
        with capture_logs() as logs:
            await handle_download_unavailable(_event(image_url=IMAGE_URL), deps)

    assert len(seen) == 1
    assert [r.kind for r in renderer.results] == ["title_card"]
    assert len(publisher.of_type(VideoStored)) == 1
    warning = next(e for e in logs if e["event"] == "placeholder_image_unavailable")
    assert warning["request_id"] == "req-1"
    assert "404" in warning["reason"]


async def test_private_image_url_is_refused_and_title_card_used(tmp_path: Path) -> None:
    client, seen = _image_client()
    async with client:
        fetch = InputImageFetcher(
            max_bytes=1_000_000, allow_private=False, timeout_s=5, client=client
        )
        deps, publisher, renderer = _deps(tmp_path, fetch_image=fetch)
        await handle_download_unavailable(_event(image_url="https://127.0.0.1/x.png"), deps)

    assert seen == []  # the guard refused before any request
    assert [r.kind for r in renderer.results] == ["title_card"]
    assert len(publisher.events) == 1


async def test_undecodable_image_is_logged_and_title_card_used(tmp_path: Path) -> None:
    async def fetch(url: str) -> InputImage:
        return InputImage(b"\xff\xd8\xff not really a jpeg", "image/jpeg", "input.jpg")

    deps, publisher, renderer = _deps(tmp_path, fetch_image=fetch)
    with capture_logs() as logs:
        await handle_download_unavailable(_event(image_url=IMAGE_URL), deps)
    assert renderer.results[0].kind == "title_card"
    assert any(e["event"] == "placeholder_image_unusable" for e in logs)
    assert len(publisher.events) == 1


@pytest.mark.parametrize(
    ("fallbacks", "default"),
    [(["notify", "retry"], ("placeholder",)), (None, ("notify", "retry"))],
)
async def test_policy_excluding_placeholder_does_nothing(
    tmp_path: Path, fallbacks: list[str] | None, default: tuple[FallbackName, ...]
) -> None:
    deps, publisher, renderer = _deps(tmp_path, default=default)
    with capture_logs() as logs:
        await handle_download_unavailable(_event(fallbacks=fallbacks), deps)
    assert publisher.events == []
    assert renderer.results == []
    assert await deps.storage.stat(placeholder_key("req-1")) is None
    (entry,) = [e for e in logs if e["event"] == "policy_excludes"]
    assert entry["request_id"] == "req-1"


async def test_request_without_snapshot_uses_the_default_policy(tmp_path: Path) -> None:
    deps, publisher, renderer = _deps(tmp_path, default=("placeholder",))
    await handle_download_unavailable(_event(request=False), deps)
    assert [r.kind for r in renderer.results] == ["title_card"]
    (stored,) = publisher.events
    assert isinstance(stored, VideoStored) and stored.placeholder


async def test_second_event_reannounces_without_rendering_again(tmp_path: Path) -> None:
    deps, publisher, renderer = _deps(tmp_path)
    await handle_download_unavailable(_event(), deps)
    path = tmp_path / placeholder_key("req-1")
    first_mtime = path.stat().st_mtime_ns
    # A redelivery, then the unavailable second variant of the same request.
    await handle_download_unavailable(_event(), deps)
    await handle_download_unavailable(_event(generation_id="gen_2"), deps)

    assert len(renderer.results) == 1
    assert path.stat().st_mtime_ns == first_mtime
    announced = publisher.of_type(VideoStored)
    assert len(announced) == 3
    assert len({e.event_id for e in announced}) == 1  # the recorder dedupes them to one
    assert len({(e.sha256, e.storage_url) for e in announced if isinstance(e, VideoStored)}) == 1


def test_stage_reads_download_unavailable_in_its_own_group() -> None:
    stage = create_stage(Settings(topic_prefix="t."), bootstrap_servers="127.0.0.1:9")
    (subscriber,) = stage.broker.subscribers
    assert isinstance(subscriber, LogicSubscriber)
    assert stage.name == "placeholder"
    assert subscriber.group_id == "t.placeholder"
    assert subscriber.topic_names == ["t.download.unavailable"]


# --- rendering helpers ---------------------------------------------------------------------


def test_sizes_keep_aspect_within_the_cap() -> None:
    assert placeholder_size("1280x720") == (640, 360)
    assert placeholder_size("720x1280") == (360, 640)
    assert placeholder_size("1920x1080") == (640, 360)
    assert placeholder_size("480x480") == (480, 480)
    assert all(side % 2 == 0 for side in placeholder_size("321x179"))  # yuv420p needs even
    assert placeholder_size("garbage") == (640, 360)
    width, height = placeholder_size("99999x10")
    assert width == 640 and height >= 64 and height % 2 == 0


@pytest.mark.parametrize(
    ("metadata", "language"),
    [
        ({"lang": "fr-FR"}, "fr"),
        ({"Locale": "fr_CA"}, "fr"),
        ({"lang": "es"}, "es"),  # once an English caption under a Spanish message
        ({"language": "de-DE"}, "de"),
        ({"language": "French"}, "en"),  # a language name, not a tag: once French here only
        ({"lang": "fresh"}, "en"),  # once French: it starts with "fr"
        ({"country": "fr"}, "en"),
        ({}, "en"),
    ],
)
async def test_the_caption_speaks_the_language_of_the_notifiers_message(
    tmp_path: Path, metadata: dict[str, str], language: Language
) -> None:
    jobs: list[PlaceholderJob] = []

    def remember(job: PlaceholderJob) -> RenderedPlaceholder:
        jobs.append(job)
        return RenderedPlaceholder(render_sample_mp4(), "title_card", 320, 180, 24)

    deps, _publisher, _renderer = _deps(tmp_path)
    deps.render = remember
    await handle_download_unavailable(_event(metadata=metadata), deps)
    (job,) = jobs
    # One resolver for both fallbacks: the notifier resolves the same metadata the same way.
    assert job.language == resolve_language(metadata) == language


def test_every_supported_language_has_its_own_caption(monkeypatch: pytest.MonkeyPatch) -> None:
    captions = {language: placeholder_caption(language) for language in SUPPORTED_LANGUAGES}
    assert set(SUPPORTED_LANGUAGES) == {"en", "fr", "es", "de"}
    assert len(set(captions.values())) == len(captions)
    assert placeholder_caption("xx") == captions["en"]
    drawn: list[str] = []

    def band(width: int, height: int, caption: str) -> Image.Image:
        drawn.append(caption)
        return Image.new("RGBA", (width, max(20, height // 7)), (0, 0, 0, 0))

    monkeypatch.setattr(rendering, "_caption_band", band)
    for language in SUPPORTED_LANGUAGES:
        render_placeholder(
            PlaceholderJob(prompt="p", size="128x72", language=language, seconds=0.1)
        )
    assert [rendering._drawable(c) for c in captions.values()] == drawn


def test_long_prompts_wrap_and_truncate() -> None:
    font = ImageFont.load_default(size=16)
    lines = wrap_text("word " * 200, font, 200, 3)
    assert len(lines) == 3
    assert lines[-1].endswith("…")
    assert all(font.getlength(line) <= 200 for line in lines)
    # An unbroken run is split rather than overflowing.
    assert all(font.getlength(line) <= 200 for line in wrap_text("x" * 300, font, 200, 10))
    assert wrap_text("short\nprompt\x00", font, 200, 3) == ["short prompt"]


def test_french_title_card_and_transparent_png_render() -> None:
    png = io.BytesIO()
    Image.new("RGBA", (200, 100), (255, 0, 0, 0)).save(png, format="PNG")
    result = render_placeholder(
        PlaceholderJob(
            prompt="un renard", size="320x180", language="fr", image=png.getvalue(), seconds=0.5
        )
    )
    assert result.kind == "image"
    assert probe_mp4(result.data)["frames"] == 12
