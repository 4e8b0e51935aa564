"""Small real videos and images made with PyAV, and a probe that checks a file really plays.

The emulator serves these as "generated" videos. Storage runs `probe_first_frame` on every
download before it is kept (open, decode one frame, read the duration); tests use `probe_mp4`
(decode every frame) and `looks_like_mp4` to refuse anything that is not a playable MP4.
"""

from __future__ import annotations

import io
import os
import zlib
from fractions import Fraction
from pathlib import Path
from typing import IO, Literal, TypedDict

import av

from vidpipe.errors import VideoProbeError

__all__ = [
    "VIDEO_CODEC",
    "ImageFormat",
    "VideoInfo",
    "VideoProbeError",
    "image_size",
    "looks_like_mp4",
    "probe_first_frame",
    "probe_mp4",
    "render_sample_image",
    "render_sample_mp4",
]

ImageFormat = Literal["jpeg", "png", "webp"]

# H.264 plays everywhere; mpeg4 part 2 is the fallback for av wheels built without libx264.
VIDEO_CODEC: str = "libx264" if "libx264" in av.codecs_available else "mpeg4"

_IMAGE_CODECS: dict[str, tuple[str, str]] = {
    # format -> (encoder, pixel format)
    "jpeg": ("mjpeg", "yuvj420p"),
    "png": ("png", "rgb24"),
    "webp": ("libwebp", "yuv420p"),
}


class VideoInfo(TypedDict):
    duration: float  # seconds
    width: int
    height: int
    codec: str  # decoder name, e.g. "h264"
    frames: int  # frames actually decoded
    fps: float
    format: str  # container format names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"


def looks_like_mp4(data: bytes) -> bool:
    """True when `data` starts like an ISO-BMFF file: a box whose type is `ftyp`."""
    return len(data) >= 12 and data[4:8] == b"ftyp"


def _seed(label: str | None) -> int:
    return zlib.crc32(label.encode()) if label else 0


def _yuv_frame(width: int, height: int, index: int, total: int, seed: int) -> av.VideoFrame:
    """One frame of moving colour bars with a bright box crossing the picture.

    Built row-wise from byte slices: numpy is not a dependency and per-pixel Python is slow.
    """
    frame = av.VideoFrame(width, height, "yuv420p")
    shift = (index * 4) % width
    # Luma: eight vertical bars, scrolled left by `shift`.
    bars = bytes(16 + ((x * 8 // width) * 28 + seed) % 200 for x in range(width))
    row = (bars + bars)[shift : shift + width]
    luma = bytearray(row * height)
    # A white box moving diagonally, so consecutive frames differ everywhere it passes.
    box = max(2, min(width, height) // 6)
    progress = index / max(1, total - 1)
    bx = int((width - box) * progress)
    by = int((height - box) * progress)
    for y in range(by, by + box):
        start = y * width + bx
        luma[start : start + box] = b"\xeb" * box
    cw, ch = width // 2, height // 2
    u_row = bytes((64 + x * 128 // cw + seed + index * 3) % 256 for x in range(cw))
    v_row = bytes((192 - x * 128 // cw + (seed >> 8) + index * 2) % 256 for x in range(cw))
    for plane, data in zip(frame.planes, (bytes(luma), u_row * ch, v_row * ch), strict=True):
        line = plane.line_size
        plane_w = plane.width
        if line == plane_w:
            plane.update(data)
        else:  # encoder-aligned rows: pad each row to the line size
            padded = b"".join(
                data[r * plane_w : (r + 1) * plane_w].ljust(line, b"\x00")
                for r in range(plane.height)
            )
            plane.update(padded)
    frame.pts = index
    return frame


def _check_size(width: int, height: int) -> None:
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and >= 16, got {width}x{height}")


def render_sample_mp4(
    width: int = 320,
    height: int = 180,
    seconds: float = 1.0,
    fps: int = 24,
    label: str | None = None,
    *,
    codec: str | None = None,
) -> bytes:
    """Encode a short, real, playable MP4 (H.264 when available) entirely in memory.

    `label` is stored as the container title and also tints the picture, so differently
    labelled samples differ in content as well as metadata. `codec` overrides the encoder.
    """
    encoder = codec or VIDEO_CODEC
    _check_size(width, height)
    if seconds <= 0 or fps <= 0:
        raise ValueError("seconds and fps must be positive")
    total = max(1, round(seconds * fps))
    seed = _seed(label)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        if label:
            container.metadata["title"] = label
        stream = container.add_stream(encoder, rate=fps)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"{encoder} is not a video encoder")
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        if encoder == "libx264":
            # Small and fast; baseline-compatible settings so any player opens it.
            stream.options = {"preset": "veryfast", "crf": "30", "tune": "zerolatency"}
        for i in range(total):
            frame = _yuv_frame(width, height, i, total, seed)
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def render_sample_image(
    width: int = 320,
    height: int = 180,
    fmt: ImageFormat = "jpeg",
    label: str | None = None,
) -> bytes:
    """A still of the sample pattern (for thumbnails and spritesheets), as JPEG, PNG or WebP."""
    _check_size(width, height)
    encoder, pix_fmt = _IMAGE_CODECS[fmt]
    if encoder not in av.codecs_available:
        raise ValueError(f"this PyAV build cannot encode {fmt}")
    frame = _yuv_frame(width, height, 0, 1, _seed(label)).reformat(format=pix_fmt)
    codec = av.CodecContext.create(encoder, "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width = width
    codec.height = height
    codec.pix_fmt = pix_fmt
    codec.time_base = Fraction(1, 1)
    frame.pts = 0
    frame.time_base = codec.time_base
    packets = list(codec.encode(frame)) + list(codec.encode(None))
    data = b"".join(bytes(p) for p in packets)
    if not data:
        raise ValueError(f"encoder {encoder} produced no data")
    return data


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a JPEG, PNG or WebP image. Raises VideoProbeError if undecodable."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise VideoProbeError("not an image")
            frame = next(container.decode(container.streams.video[0]))
            return int(frame.width), int(frame.height)
    except VideoProbeError:
        raise
    except (av.FFmpegError, OSError, ValueError, StopIteration) as exc:
        raise VideoProbeError(f"not a decodable image: {type(exc).__name__}") from exc


def probe_first_frame(source: str | os.PathLike[str] | IO[bytes]) -> float:
    """Open a video with PyAV, decode its first frame only, and return its duration in seconds.

    Cheap whatever the length (storage runs it on every download). `source` is a path or a
    seekable binary file, which is left open. Raises VideoProbeError when the file does not open,
    has no video stream, no decodable frame, or no known duration (reported as 0).
    """
    target: str | IO[bytes] = source if not isinstance(source, str | os.PathLike) else str(source)
    try:
        with av.open(target, mode="r") as container:
            if not container.streams.video:
                raise VideoProbeError("no video stream")
            stream = container.streams.video[0]
            if next(container.decode(stream), None) is None:
                raise VideoProbeError("video stream has no decodable frames")
            if container.duration is not None:
                return float(container.duration / av.time_base)
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return 0.0
    except VideoProbeError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise VideoProbeError(f"{type(exc).__name__} while decoding") from exc


def probe_mp4(source: bytes | str | os.PathLike[str]) -> VideoInfo:
    """Open a video with PyAV, decode every frame, and report what is really there.

    Raises VideoProbeError when the data is not a decodable video (e.g. a JSON error body).
    """
    target: io.BytesIO | str
    if isinstance(source, bytes | bytearray | memoryview):
        target = io.BytesIO(bytes(source))
    else:
        target = str(Path(source))
    try:
        with av.open(target, mode="r") as container:
            if not container.streams.video:
                raise VideoProbeError("no video stream")
            stream = container.streams.video[0]
            frames = 0
            last_time = 0.0
            for frame in container.decode(stream):
                frames += 1
                if frame.time is not None:
                    last_time = max(last_time, float(frame.time))
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = last_time + (1 / fps if fps else 0.0)
            info = VideoInfo(
                duration=float(duration),
                width=int(stream.codec_context.width),
                height=int(stream.codec_context.height),
                codec=str(stream.codec_context.name),
                frames=frames,
                fps=fps,
                format=str(container.format.name),
            )
    except VideoProbeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoProbeError(f"not a playable video: {type(exc).__name__}") from exc
    if frames == 0:
        raise VideoProbeError("video stream has no decodable frames")
    return info
