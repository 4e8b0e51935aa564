"""The sample-video generator and the probe: real encoding and decoding through PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from vidpipe.media.sample import (
    VIDEO_CODEC,
    ImageFormat,
    VideoProbeError,
    image_size,
    looks_like_mp4,
    probe_mp4,
    render_sample_image,
    render_sample_mp4,
)


def test_default_sample_is_a_playable_mp4() -> None:
    data = render_sample_mp4()
    assert looks_like_mp4(data)
    info = probe_mp4(data)
    assert (info["width"], info["height"]) == (320, 180)
    assert info["frames"] == 24
    assert info["fps"] == pytest.approx(24.0)
    assert info["duration"] == pytest.approx(1.0, abs=0.05)
    assert "mp4" in info["format"]
    expected = "h264" if VIDEO_CODEC == "libx264" else "mpeg4"
    assert info["codec"] == expected


def test_h264_is_used_when_the_wheel_has_libx264() -> None:
    expected = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    assert expected == VIDEO_CODEC


def test_custom_size_length_and_rate() -> None:
    info = probe_mp4(render_sample_mp4(width=64, height=48, seconds=2.0, fps=10))
    assert (info["width"], info["height"], info["frames"]) == (64, 48, 20)
    assert info["duration"] == pytest.approx(2.0, abs=0.15)


def test_mpeg4_fallback_encodes_too() -> None:
    info = probe_mp4(render_sample_mp4(seconds=0.5, codec="mpeg4"))
    assert info["codec"] == "mpeg4"
    assert info["frames"] == 12


def test_the_picture_moves() -> None:
    data = render_sample_mp4(width=64, height=36, seconds=1.0, fps=12)
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = [bytes(f.planes[0]) for f in container.decode(video=0)]
    assert len(frames) == 12
    assert frames[0] != frames[-1]
    assert len(set(frames)) > 6  # not a still: most frames differ


def test_label_changes_content_and_metadata() -> None:
    plain = render_sample_mp4(seconds=0.25)
    labelled = render_sample_mp4(seconds=0.25, label="job 42")
    assert plain != labelled
    assert render_sample_mp4(seconds=0.25, label="job 42") == labelled  # cacheable: deterministic
    with av.open(io.BytesIO(labelled), mode="r") as container:
        assert container.metadata.get("title") == "job 42"


@pytest.mark.parametrize(("width", "height"), [(321, 180), (320, 181), (8, 8)])
def test_bad_sizes_are_refused(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="even"):
        render_sample_mp4(width=width, height=height)


def test_probe_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(render_sample_mp4(seconds=0.5))
    assert probe_mp4(path)["frames"] == 12
    assert probe_mp4(str(path))["width"] == 320


@pytest.mark.parametrize(
    "data",
    [
        b'{"error": {"code": "not_found", "message": "no such video"}}',
        b"",
        b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64,  # a header and nothing behind it
    ],
)
def test_probe_refuses_non_videos(data: bytes) -> None:
    with pytest.raises(VideoProbeError):
        probe_mp4(data)


def test_probe_refuses_truncated_video() -> None:
    data = render_sample_mp4()
    with pytest.raises(VideoProbeError):
        probe_mp4(data[: len(data) // 3])


def test_looks_like_mp4() -> None:
    assert looks_like_mp4(render_sample_mp4(seconds=0.1))
    assert not looks_like_mp4(b'{"error": {}}')
    assert not looks_like_mp4(b"ftyp")


@pytest.mark.parametrize(
    ("fmt", "magic"),
    [("jpeg", b"\xff\xd8\xff"), ("png", b"\x89PNG\r\n\x1a\n"), ("webp", b"RIFF")],
)
def test_images(fmt: ImageFormat, magic: bytes) -> None:
    data = render_sample_image(128, 72, fmt)
    assert data.startswith(magic)
    assert image_size(data) == (128, 72)


def test_image_size_refuses_garbage() -> None:
    with pytest.raises(VideoProbeError):
        image_size(b"not an image at all")
