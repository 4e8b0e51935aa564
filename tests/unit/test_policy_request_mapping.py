"""Requests mapped onto what each provider accepts: nearest values, or a clear refusal."""

from __future__ import annotations

import pytest

from vidpipe.policy.request_mapping import (
    CAPABILITIES,
    AsAsked,
    Capability,
    Mapped,
    Unsupported,
    capability,
    map_request,
)


def _map(
    provider: str,
    seconds: int = 5,
    size: str = "1280x720",
    variants: int = 1,
    *,
    model: str | None = None,
    image: bool = False,
) -> Mapped | Unsupported:
    width, height = (int(part) for part in size.split("x"))
    return map_request(
        provider,
        model=model,
        seconds=seconds,
        width=width,
        height=height,
        variants=variants,
        has_image=image,
    )


@pytest.mark.parametrize(
    ("provider", "model", "asked", "sent"),
    [
        ("openai-videos", None, 5, 4),  # the seed's bug: 5 s on /v1/videos is 4 s, not a failure
        ("openai-videos", None, 6, 8),  # a tie goes to the longer length
        ("openai-videos", None, 10, 12),
        ("openai-videos", None, 12, 12),
        ("openai-videos", None, 20, 12),
        ("azure-sora", None, 5, 5),
        ("azure-sora", None, 20, 20),
        ("fal", None, 4, 5),
        ("fal", None, 8, 10),
        ("fal", "fal-ai/minimax/hailuo-02/standard/text-to-video", 5, 6),
        ("fal", "fal-ai/veo3", 5, 8),
        ("replicate", None, 5, 5),
        ("replicate", "wan-video/wan-2.2-t2v-fast", 7, 5),
        ("gemini", None, 5, 6),
        ("gemini", None, 4, 4),
        ("gemini", "veo-2.0-generate-001", 4, 5),
        ("runway", None, 7, 5),
        ("runway", None, 8, 10),
    ],
)
def test_seconds_go_to_the_nearest_allowed_length(
    provider: str, model: str | None, asked: int, sent: int
) -> None:
    mapped = _map(provider, asked, model=model)
    assert isinstance(mapped, Mapped)
    assert mapped.seconds == sent
    assert (f"seconds {asked} -> {sent}" in mapped.changes) == (asked != sent)


@pytest.mark.parametrize(
    ("provider", "asked", "message"),
    [
        ("openai-videos", 30, "openai-videos takes seconds 4, 8, 12; 30 s was asked"),
        ("azure-sora", 60, "azure-sora takes seconds 1-20; 60 s was asked"),
        ("fal", 25, "fal takes seconds 5, 10; 25 s was asked"),
        ("gemini", 20, "gemini takes seconds 4, 6, 8; 20 s was asked"),
    ],
)
def test_a_length_under_half_of_what_was_asked_is_refused(
    provider: str, asked: int, message: str
) -> None:
    refused = _map(provider, asked)
    assert refused == Unsupported(message)
    assert refused.reason_code == "unsupported_request"


@pytest.mark.parametrize(
    ("provider", "asked", "sent", "ratio"),
    [
        ("openai-videos", "1280x720", "1280x720", None),
        ("openai-videos", "1920x1080", "1280x720", None),  # the same shape wins over the area
        ("openai-videos", "480x480", "1792x1024", None),  # the squarest frame it has
        ("openai-videos", "1800x1000", "1280x720", None),
        ("openai-videos", "720x720", "1792x1024", None),
        ("openai-videos", "1000x1800", "720x1280", None),
        ("azure-sora", "1000x1000", "1080x1080", None),
        ("azure-sora", "640x360", "1280x720", None),
        ("azure-sora", "720x1280", "720x1280", None),
        ("fal", "1920x1080", "1280x720", "16:9"),
        ("fal", "1080x1920", "720x1280", "9:16"),
        ("fal", "1000x1000", "720x720", "1:1"),
        ("replicate", "1600x800", "1280x720", "16:9"),
        ("replicate", "720x720", "720x720", "1:1"),
        ("gemini", "1000x1000", "1280x720", "16:9"),
        ("runway", "1024x768", "1104x832", None),
    ],
)
def test_sizes_go_to_the_nearest_shape_then_area(
    provider: str, asked: str, sent: str, ratio: str | None
) -> None:
    mapped = _map(provider, 10 if provider in ("fal", "replicate", "runway") else 8, asked)
    assert isinstance(mapped, Mapped)
    assert (mapped.size, mapped.aspect_ratio) == (sent, ratio)


def test_a_request_as_the_provider_takes_it_goes_unchanged() -> None:
    assert _map("azure-sora", 5, "1280x720", 2) == Mapped(5, 1280, 720, 2)


@pytest.mark.parametrize(
    ("provider", "size", "variants", "message"),
    [
        ("openai-videos", "1280x720", 2, "openai-videos makes at most 1 variant at 1280x720"),
        ("azure-sora", "1280x720", 3, "azure-sora makes at most 2 variants at 1280x720"),
        ("azure-sora", "1920x1080", 2, "azure-sora makes at most 1 variant at 1920x1080"),
        ("fal", "1280x720", 4, "fal makes at most 1 variant at 1280x720"),
    ],
)
def test_more_variants_than_the_provider_makes_are_refused(
    provider: str, size: str, variants: int, message: str
) -> None:
    refused = _map(provider, 8, size, variants)
    assert isinstance(refused, Unsupported)
    assert refused.message.startswith(message)


def test_image_rules_per_model() -> None:
    refused = _map("runway", model="gen4_turbo")
    assert isinstance(refused, Unsupported)
    assert "needs an input image" in refused.message
    assert isinstance(_map("runway", model="gen4_turbo", image=True), Mapped)
    assert isinstance(_map("openai-videos", image=True), Mapped)


def test_model_tables_match_by_substring_and_fall_back_to_the_provider() -> None:
    pro = capability("openai-videos", "sora-2-pro")
    assert isinstance(pro, Capability) and (1792, 1024) in pro.sizes
    base = capability("openai-videos", "sora-2")
    assert isinstance(base, Capability) and (1792, 1024) not in base.sizes
    assert capability("openai-videos", "my-azure-deployment") == CAPABILITIES["openai-videos"][None]
    assert capability("nobody") is None


def test_a_provider_without_a_table_gets_the_request_as_asked() -> None:
    assert _map("acme-video", 37, "999x333", 4) == Mapped(37, 999, 333, 4)


def test_every_documented_provider_has_a_table() -> None:
    assert set(CAPABILITIES) == {
        "azure-sora",
        "openai-videos",
        "fal",
        "replicate",
        "gemini",
        "runway",
    }
    for tables in CAPABILITIES.values():
        assert None in tables
        for cap in tables.values():
            if isinstance(cap, AsAsked):  # a model with no table: the request goes as asked
                continue
            assert cap.seconds == tuple(sorted(cap.seconds)) and cap.frames()


def test_gemini_omni_takes_the_request_as_asked_while_veo_moves_it() -> None:
    def asked_of(model: str) -> Mapped | Unsupported:
        return map_request(
            "gemini", model=model, seconds=10, width=1920, height=1080, variants=1, has_image=False
        )

    omni, veo = asked_of("gemini-3-omni"), asked_of("veo-3.1-generate-preview")
    assert isinstance(omni, Mapped) and omni.changes == () and omni.seconds == 10
    assert not omni.length_checked
    assert isinstance(veo, Mapped) and veo.seconds == 8 and veo.changes and veo.length_checked
