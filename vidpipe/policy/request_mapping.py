"""What each provider accepts, and a request mapped onto it before anything is paid for.

A request asks for a length, a frame size, a number of variants and maybe an input image; each
provider (and some of its models) takes only certain values. `map_request` is the one rule,
applied by the submitter before the quota slot, the image fetch and the create:

- **seconds**: the nearest length the provider takes, a tie going to the longer one; refused when
  that nearest length is less than half of what was asked (a 30 s request is not quietly made
  a 12 s video).
- **size**: the allowed frame nearest in aspect ratio, then in area (a tie going to the larger);
  providers that take an aspect ratio rather than a size get that ratio's frame (`aspect_ratio`
  says which ratio was sent). Never refused.
- **variants**: refused above the provider's maximum (fewer videos than asked is not "nearest").
- **image**: refused when the model takes no input image, or needs one and the request has none.

A refusal is `Unsupported` (`unsupported_request`), its message naming the allowed values. A
provider with no entry in `CAPABILITIES` gets the request unchanged; so does a model marked
`AsAsked` (one that takes no length or size at all, such as Gemini Omni), and when that model
chooses the length itself the fetcher does not hold the video to the asked one. Pure: no I/O.
docs/providers.md ("What each provider accepts") is the same table for people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "CAPABILITIES",
    "AsAsked",
    "Capability",
    "Mapped",
    "Unsupported",
    "capability",
    "map_request",
]

Frame = tuple[int, int]

_LANDSCAPE_PORTRAIT_SQUARE: dict[str, Frame] = {
    "16:9": (1280, 720),
    "9:16": (720, 1280),
    "1:1": (720, 720),
}
_WIDE_TALL: dict[str, Frame] = {"16:9": (1280, 720), "9:16": (720, 1280)}
_AZURE_FRAMES: tuple[Frame, ...] = tuple(
    {
        frame
        for w, h in ((480, 480), (854, 480), (720, 720), (1280, 720), (1080, 1080), (1920, 1080))
        for frame in ((w, h), (h, w))
    }
)


@dataclass(frozen=True)
class Capability:
    """What one provider (or one of its models) accepts."""

    #: The lengths it takes, in seconds, ascending.
    seconds: tuple[int, ...]
    #: Frame sizes it takes (`WxH`), when it takes a size.
    sizes: tuple[Frame, ...] = ()
    #: Aspect ratios it takes, with the frame each stands for, when it takes a ratio instead.
    aspect_ratios: dict[str, Frame] = field(default_factory=dict)
    max_variants: int = 1
    #: At or above this shorter side (1080p), at most one variant (Azure Sora).
    one_variant_from: int | None = None
    image_input: bool = True
    requires_image: bool = False
    note: str = ""

    def frames(self) -> tuple[Frame, ...]:
        return self.sizes or tuple(self.aspect_ratios.values())


@dataclass(frozen=True)
class AsAsked:
    """A model that takes no length, size or count parameter: the request goes as asked."""

    #: False when the model picks the length itself, so no length can be expected of the video.
    length_checked: bool = True
    note: str = ""


def _secs(low: int, high: int) -> tuple[int, ...]:
    return tuple(range(low, high + 1))


#: Per provider: the provider's own table (key None) and the models that differ, matched by a
#: substring of the model id (the first match in order wins). A request without a model is the
#: client's configured model's, when the submitter knows it, else the provider's table.
CAPABILITIES: dict[str, dict[str | None, Capability | AsAsked]] = {
    "azure-sora": {
        None: Capability(
            seconds=_secs(1, 20), sizes=_AZURE_FRAMES, max_variants=2, one_variant_from=1080
        ),
    },
    "openai-videos": {
        "sora-2-pro": Capability(
            seconds=(4, 8, 12), sizes=((1280, 720), (720, 1280), (1792, 1024), (1024, 1792))
        ),
        "sora-2": Capability(seconds=(4, 8, 12), sizes=((1280, 720), (720, 1280))),
        # A deployment or gateway model name: the protocol's whole set.
        None: Capability(
            seconds=(4, 8, 12), sizes=((1280, 720), (720, 1280), (1792, 1024), (1024, 1792))
        ),
    },
    "fal": {
        "hailuo": Capability(seconds=(6, 10), aspect_ratios=_LANDSCAPE_PORTRAIT_SQUARE),
        "minimax": Capability(seconds=(6, 10), aspect_ratios=_LANDSCAPE_PORTRAIT_SQUARE),
        "veo3": Capability(seconds=(8,), aspect_ratios=_WIDE_TALL),
        # Kling (the default model) and most others: 5 or 10 s.
        None: Capability(seconds=(5, 10), aspect_ratios=_LANDSCAPE_PORTRAIT_SQUARE),
    },
    "replicate": {
        "hailuo": Capability(seconds=(6, 10), aspect_ratios=_LANDSCAPE_PORTRAIT_SQUARE),
        "wan-": Capability(seconds=(5,), aspect_ratios=_WIDE_TALL),
        # kwaivgi/kling-v2.1 (the default) and seedance: 5 or 10 s.
        None: Capability(seconds=(5, 10), aspect_ratios=_LANDSCAPE_PORTRAIT_SQUARE),
    },
    "gemini": {
        # Gemini Omni (the Interactions API) takes no length, size or count: the model decides
        # (a 10 s clip is typical), so the request goes as asked and its length is not checked.
        "gemini-": AsAsked(length_checked=False, note="the Interactions API takes no length"),
        "veo-2": Capability(seconds=(5, 6, 7, 8), aspect_ratios=_WIDE_TALL, max_variants=2),
        # Veo 3 / 3.1 (and the default): 4, 6 or 8 s, 16:9 or 9:16, one video per operation.
        None: Capability(seconds=(4, 6, 8), aspect_ratios=_WIDE_TALL),
    },
    "runway": {
        "veo3": Capability(seconds=(8,), sizes=((1280, 720), (720, 1280))),
        "gen4_turbo": Capability(
            seconds=(5, 10),
            sizes=((1280, 720), (720, 1280), (1104, 832), (832, 1104), (960, 960), (1584, 672)),
            requires_image=True,
            note="image to video only",
        ),
        None: Capability(
            seconds=(5, 10),
            sizes=((1280, 720), (720, 1280), (1104, 832), (832, 1104), (960, 960), (1584, 672)),
        ),
    },
}


@dataclass(frozen=True)
class Mapped:
    """What to send: the request's values moved to the nearest the provider takes."""

    seconds: int
    width: int
    height: int
    variants: int
    #: The ratio sent, for a provider that takes one instead of a size.
    aspect_ratio: str | None = None
    #: What moved, e.g. ("seconds 5 -> 4",): empty when the request went as asked.
    changes: tuple[str, ...] = ()
    #: False when the provider picks the length itself (AsAsked): the video's is not checked.
    length_checked: bool = True

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Unsupported:
    """The provider cannot serve the request; `message` names what it takes."""

    message: str
    reason_code: str = "unsupported_request"


def capability(provider: str, model: str | None = None) -> Capability | AsAsked | None:
    """The table for `provider` and `model` (None: provider has no documented table)."""
    table = CAPABILITIES.get(provider)
    if table is None:
        return None
    if model:
        lowered = model.lower()
        for key, cap in table.items():
            if key is not None and key in lowered:
                return cap
    return table.get(None)


def map_request(
    provider: str,
    *,
    model: str | None,
    seconds: int,
    width: int,
    height: int,
    variants: int,
    has_image: bool,
) -> Mapped | Unsupported:
    """The request as `provider` (running `model`) takes it, or why it cannot."""
    cap = capability(provider, model)
    if cap is None:
        return Mapped(seconds, width, height, variants)
    if isinstance(cap, AsAsked):
        return Mapped(seconds, width, height, variants, length_checked=cap.length_checked)
    what = f"{provider}" + (f" ({model})" if model else "")
    if has_image and not cap.image_input:
        return Unsupported(f"{what} takes no input image")
    if not has_image and cap.requires_image:
        return Unsupported(f"{what} needs an input image ({cap.note or 'image to video'})")
    sent_seconds = _nearest_seconds(seconds, cap.seconds)
    if sent_seconds * 2 < seconds:
        allowed = ", ".join(str(s) for s in _summary(cap.seconds))
        return Unsupported(f"{what} takes seconds {allowed}; {seconds} s was asked")
    frame = _nearest_frame((width, height), cap.frames())
    ratio = next((r for r, f in cap.aspect_ratios.items() if f == frame), None)
    most = cap.max_variants
    if cap.one_variant_from is not None and min(frame) >= cap.one_variant_from:
        most = 1
    if variants > most:
        return Unsupported(
            f"{what} makes at most {most} variant{'s' if most > 1 else ''}"
            f" at {frame[0]}x{frame[1]}; {variants} were asked"
        )
    changes: list[str] = []
    if sent_seconds != seconds:
        changes.append(f"seconds {seconds} -> {sent_seconds}")
    if frame != (width, height):
        sent = ratio or f"{frame[0]}x{frame[1]}"
        changes.append(f"size {width}x{height} -> {sent}")
    return Mapped(sent_seconds, frame[0], frame[1], variants, ratio, tuple(changes))


def _nearest_seconds(asked: int, allowed: tuple[int, ...]) -> int:
    # Ties go to the longer length: the video is at least as long as asked.
    return min(allowed, key=lambda s: (abs(s - asked), -s))


def _nearest_frame(asked: Frame, allowed: tuple[Frame, ...]) -> Frame:
    if not allowed or asked in allowed:
        return asked
    ratio = math.log(asked[0] / asked[1])
    area = math.log(asked[0] * asked[1])

    def distance(frame: Frame) -> tuple[float, float, int]:
        shape = abs(math.log(frame[0] / frame[1]) - ratio)
        return (round(shape, 6), round(abs(math.log(frame[0] * frame[1]) - area), 6), -frame[0])

    return min(allowed, key=distance)


def _summary(seconds: tuple[int, ...]) -> list[str]:
    """(1, 2, ..., 20) -> ['1-20']; (4, 8, 12) -> ['4', '8', '12']."""
    if len(seconds) > 3 and seconds == tuple(range(seconds[0], seconds[-1] + 1)):
        return [f"{seconds[0]}-{seconds[-1]}"]
    return [str(s) for s in seconds]
