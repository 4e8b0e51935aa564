"""Placeholder videos: a short stand-in MP4 shown while the real video cannot be had.

Two looks, both a few seconds of H.264 (PyAV) with a caption band ("Video on its way", in the
request's language: `vidpipe.policy.messages`):
- with an input image: a slow pan and zoom over it (the "Ken Burns" effect);
- without one, or when the image cannot be decoded: a title card showing the prompt.

Pictures are drawn with Pillow and handed to PyAV as RGB frames. Everything here is CPU work and
blocking: callers in async code run `render_placeholder` in a worker thread.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import av
from PIL import Image, ImageDraw, ImageFont, ImageOps

from vidpipe.errors import PlaceholderImageError
from vidpipe.media.sample import VIDEO_CODEC
from vidpipe.policy.messages import Language, placeholder_caption

__all__ = [
    "MAX_SIDE",
    "PlaceholderImageError",
    "PlaceholderJob",
    "RenderedPlaceholder",
    "load_image",
    "placeholder_size",
    "render_placeholder",
    "wrap_text",
]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: The placeholder fits in a MAX_SIDE x MAX_SIDE box: it is a stand-in, small and quick to make.
MAX_SIDE = 640
_MIN_SIDE = 64
# A bigger source only costs decoding time and memory: refuse it rather than risk a pixel bomb.
_MAX_SOURCE_PIXELS = 64_000_000
# Only what netguard lets through, so no other (rarer, riskier) Pillow decoder ever runs.
_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
_MAX_PROMPT_CHARS = 600
_ZOOM = 0.18  # the picture ends 18% closer than it starts
_PAN = 0.6  # and drifts over 60% of the margin the zoom opens up
_BACKGROUND = (18, 22, 40)
_BACKGROUND_BOTTOM = (52, 30, 78)
_TEXT = (240, 240, 245)
_ACCENT = (120, 170, 255)


@dataclass(frozen=True, slots=True)
class PlaceholderJob:
    """What to render. `size` is the request's "WIDTHxHEIGHT"; the output is a capped copy."""

    prompt: str
    size: str = "1280x720"
    language: Language = "en"
    image: bytes | None = None
    seconds: float = 3.0
    fps: int = 24


@dataclass(frozen=True, slots=True)
class RenderedPlaceholder:
    data: bytes
    kind: Literal["image", "title_card"]
    width: int
    height: int
    frames: int
    #: Why the input image was not used (None when there was none, or when it was used).
    image_error: str | None = None


def _even(value: float) -> int:
    return max(_MIN_SIDE, min(MAX_SIDE, round(value / 2) * 2))


def placeholder_size(size: str | None) -> tuple[int, int]:
    """The request's aspect ratio, scaled to fit MAX_SIDE, with even sides of at least 64 px."""
    try:
        width_text, height_text = (size or "").lower().split("x")
        width, height = int(width_text), int(height_text)
    except ValueError:
        width, height = 1280, 720
    if width <= 0 or height <= 0:
        width, height = 1280, 720
    scale = min(1.0, MAX_SIDE / max(width, height))
    return _even(width * scale), _even(height * scale)


def render_placeholder(job: PlaceholderJob) -> RenderedPlaceholder:
    """Encode the placeholder MP4 (blocking). An unusable image falls back to the title card."""
    if job.seconds <= 0 or job.fps <= 0:
        raise ValueError("seconds and fps must be positive")
    width, height = placeholder_size(job.size)
    total = max(2, round(job.seconds * job.fps))
    caption = _drawable(placeholder_caption(job.language))
    image_error: str | None = None
    if job.image is not None:
        try:
            source = load_image(job.image, draft=(width * 2, height * 2))
        except PlaceholderImageError as exc:
            image_error = str(exc)
        else:
            frames = _ken_burns(source, width, height, total, caption)
            data = _encode(frames, width, height, job.fps)
            return RenderedPlaceholder(data, "image", width, height, total)
    frames = _title_card(job.prompt, width, height, total, caption)
    data = _encode(frames, width, height, job.fps)
    return RenderedPlaceholder(data, "title_card", width, height, total, image_error)


def load_image(data: bytes, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode a JPEG, PNG or WebP into RGB, upright (EXIF orientation), transparency flattened.

    `draft` lets JPEG decode at a reduced scale that still covers that size (much faster).
    """
    try:
        opened = Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS)
        # Checked on the header, before any pixel is decoded.
        if opened.width * opened.height > _MAX_SOURCE_PIXELS:
            raise PlaceholderImageError(
                f"input image is {opened.width}x{opened.height}, more pixels than allowed"
            )
        if draft is not None:
            opened.draft("RGB", draft)
        return _flatten(ImageOps.exif_transpose(opened))
    except PlaceholderImageError:
        raise
    except Exception as exc:
        # Pillow reports bad input through many types (OSError, SyntaxError, ValueError, bomb
        # errors...); for a placeholder they all mean the same thing: use the title card.
        raise PlaceholderImageError(f"input image cannot be decoded: {type(exc).__name__}") from exc


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        backdrop.alpha_composite(rgba)
        return backdrop.convert("RGB")
    return image.convert("RGB")


# Scalable fonts with accented Latin (the French and Spanish captions), found by name in the
# system font folders. Without any of them, Pillow's bundled font is used, which only has ASCII
# glyphs.
_FONT_NAMES = (
    "DejaVuSans.ttf",
    "LiberationSans-Regular.ttf",
    "NotoSans-Regular.ttf",
    "FreeSans.ttf",
    "Arial.ttf",
)


@lru_cache(maxsize=1)
def _font_name() -> str | None:
    for name in _FONT_NAMES:
        try:
            ImageFont.truetype(name, 12)
        except OSError:
            continue
        return name
    return None


@lru_cache(maxsize=32)
def _font(size: int) -> Font:
    name = _font_name()
    return ImageFont.truetype(name, size) if name else ImageFont.load_default(size=size)


def _drawable(text: str) -> str:
    """`text` as the chosen font can draw it: ASCII-folded ("é" -> "e") for the bundled font,
    so a missing glyph reads as a plain letter rather than a box."""
    if _font_name() is not None:
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii())


def _ellipsize(text: str, font: Font, max_width: float) -> str:
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def _split_long_word(word: str, font: Font, max_width: float) -> list[str]:
    pieces: list[str] = []
    current = ""
    for char in word:
        if current and font.getlength(current + char) > max_width:
            pieces.append(current)
            current = char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def wrap_text(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Word-wrap `text` to `max_width` pixels; past `max_lines` the last line ends in "…"."""
    if max_lines <= 0:
        return []
    clean = "".join(c if c.isprintable() else " " for c in text[:_MAX_PROMPT_CHARS])
    pieces = (p for word in clean.split() for p in _split_long_word(word, font, max_width))
    lines: list[str] = []
    current = ""
    truncated = len(text) > _MAX_PROMPT_CHARS
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if not current or font.getlength(candidate) <= max_width:
            current = candidate
            continue
        lines.append(current)
        current = piece
        if len(lines) == max_lines:
            truncated, current = True, ""
            break
    if current:
        lines.append(current)
    if truncated and lines:
        lines[-1] = _ellipsize(lines[-1], font, max_width)
    return lines


def _text_origin(
    draw: ImageDraw.ImageDraw, text: str, font: Font, center: tuple[float, float]
) -> tuple[float, float]:
    # Centre on the ink box (works for bitmap and FreeType fonts alike, unlike anchors).
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return center[0] - (left + right) / 2, center[1] - (top + bottom) / 2


def _band_height(height: int) -> int:
    return max(20, height // 7)


def _caption_band(width: int, height: int, caption: str) -> Image.Image:
    """The translucent strip at the bottom, with the caption centred on it (RGBA)."""
    band_h = _band_height(height)
    band = Image.new("RGBA", (width, band_h), (0, 0, 0, 150))
    draw = ImageDraw.Draw(band)
    size = max(8, band_h // 2)
    font = _font(size)
    while size > 8 and font.getlength(caption) > width * 0.9:
        size -= 1
        font = _font(size)
    draw.text(_text_origin(draw, caption, font, (width / 2, band_h / 2)), caption, _TEXT, font)
    return band


def _draw_progress(frame: Image.Image, progress: float) -> None:
    # A thin bar along the top of the caption band fills over the clip: visibly "in progress".
    width, height = frame.size
    top = height - _band_height(height)
    thickness = max(2, height // 120)
    ImageDraw.Draw(frame).rectangle(
        (0, top, max(1, round(width * progress)), top + thickness - 1), fill=_ACCENT
    )


def _ken_burns(
    source: Image.Image, width: int, height: int, total: int, caption: str
) -> Iterator[Image.Image]:
    """Frames of a slow zoom in, drifting up and right, over the part of `source` that covers
    the output's aspect ratio."""
    # The largest centred box of the output's aspect ratio ("cover"); scale the source so that
    # box is at most twice the output, which keeps every per-frame resize cheap.
    box_w = min(source.width, source.height * width / height)
    if box_w > 2 * width:
        factor = 2 * width / box_w
        source = source.resize(
            (max(1, round(source.width * factor)), max(1, round(source.height * factor))),
            Image.Resampling.LANCZOS,
        )
    box_w = min(source.width, source.height * width / height)
    box_h = box_w * height / width
    center_x, center_y = source.width / 2, source.height / 2
    band = _caption_band(width, height, caption)
    band_top = height - band.height
    for index in range(total):
        t = index / (total - 1)
        zoom = 1 + _ZOOM * t
        w, h = box_w / zoom, box_h / zoom
        x = center_x + (box_w - w) / 2 * _PAN * t
        y = center_y - (box_h - h) / 2 * _PAN * t
        frame = source.resize(
            (width, height),
            Image.Resampling.BICUBIC,
            box=(x - w / 2, y - h / 2, x + w / 2, y + h / 2),
        )
        frame.paste(band, (0, band_top), band)
        _draw_progress(frame, t)
        yield frame


def _gradient(width: int, height: int) -> Image.Image:
    top, bottom = _BACKGROUND, _BACKGROUND_BOTTOM
    column = Image.new("RGB", (1, height))
    for y in range(height):
        f = y / max(1, height - 1)
        column.putpixel(
            (0, y), tuple(round(a + (b - a) * f) for a, b in zip(top, bottom, strict=True))
        )
    return column.resize((width, height), Image.Resampling.NEAREST)


def _title_card(
    prompt: str, width: int, height: int, total: int, caption: str
) -> Iterator[Image.Image]:
    """Frames of a card with the prompt (wrapped, truncated) above the caption band."""
    card = _gradient(width, height)
    band = _caption_band(width, height, caption)
    card.paste(band, (0, height - band.height), band)
    draw = ImageDraw.Draw(card)
    font = _font(max(10, height // 15))
    ascent, descent = font.getmetrics() if isinstance(font, ImageFont.FreeTypeFont) else (10, 2)
    line_h = round((ascent + descent) * 1.2)
    area_h = height - band.height
    max_lines = max(1, int(area_h * 0.8) // line_h)
    lines = wrap_text(_drawable(prompt), font, width * 0.86, max_lines)
    top = (area_h - line_h * len(lines)) / 2
    for i, line in enumerate(lines):
        center = (width / 2, top + line_h * (i + 0.5))
        draw.text(_text_origin(draw, line, font, center), line, _TEXT, font)
    for index in range(total):
        frame = card.copy()
        _draw_progress(frame, index / (total - 1))
        yield frame


def _encode(frames: Iterable[Image.Image], width: int, height: int, fps: int) -> bytes:
    buf = io.BytesIO()
    # No +faststart: it needs a named output file, and at this size the index position hardly
    # matters to a player.
    with av.open(buf, mode="w", format="mp4") as container:
        container.metadata["title"] = "vidpipe placeholder"
        stream = container.add_stream(VIDEO_CODEC, rate=fps)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"{VIDEO_CODEC} is not a video encoder")
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        if VIDEO_CODEC == "libx264":
            stream.options = {"preset": "veryfast", "crf": "28"}
        for index, image in enumerate(frames):
            # PyAV's stub leaves from_image unannotated; it returns an rgb24 VideoFrame.
            rgb: av.VideoFrame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            frame = rgb.reformat(format="yuv420p")
            frame.pts = index
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()
