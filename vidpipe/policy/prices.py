"""What a video costs: the price table (per provider and model, by resolution) and the estimate.

Pure: the table is data, `estimate_cost` is arithmetic. A job's cost is
seconds x the per-second rate of its resolution tier x variants; the rate is the one of the
smallest tier whose pixel count covers the requested size (a size above every tier takes the
largest one). Money is counted in micro-dollars (integers), so sums and budget comparisons are
exact; events carry US dollars.

`DEFAULT_PRICES` is copied from the providers' published price pages on `PRICE_VERSION`
(sources in `SOURCES`, docs/costs.md); `VIDPIPE_PRICES_FILE` replaces it with a TOML file of the
same shape (`parse_price_table`), read by `vidpipe.settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_PRICES",
    "MICROS_PER_USD",
    "PRICE_VERSION",
    "SOURCES",
    "Estimate",
    "PriceTable",
    "Tier",
    "estimate_cost",
    "final_cost_micros",
    "micros_to_usd",
    "parse_price_table",
    "usd_to_micros",
]

MICROS_PER_USD = 1_000_000

#: The date the default table was copied from the sources; recorded with every cost.
PRICE_VERSION = "2026-12-02"

SOURCES: dict[str, str] = {
    "openai-videos": "https://openai.com/api/pricing/",
    "azure-sora": "https://azure.microsoft.com/en-us/pricing/details/cognitive-services/openai-service/",
    "fal": "https://fal.ai/models/fal-ai/kling-video/v2.1/standard/text-to-video",
    "replicate": "https://replicate.com/kwaivgi/kling-v2.1",
}

_P720 = 1280 * 720
_P1024 = 1792 * 1024
_P1080 = 1920 * 1080


@dataclass(frozen=True)
class Tier:
    """Up to `max_pixels` (width x height), `usd_per_second` per second of each variant."""

    max_pixels: int
    usd_per_second: float


@dataclass(frozen=True)
class PriceTable:
    version: str
    #: provider -> model -> tiers (ascending); the model "*" prices every model not named.
    rates: Mapping[str, Mapping[str, tuple[Tier, ...]]]
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    micros: int
    price_version: str
    #: False when the table has no row for the provider (the cost is then 0, and said so).
    priced: bool = True

    @property
    def usd(self) -> float:
        return micros_to_usd(self.micros)


def _sora2(pro: bool) -> tuple[Tier, ...]:
    if pro:
        return (Tier(_P720, 0.30), Tier(_P1024, 0.50))
    return (Tier(_P720, 0.10),)


DEFAULT_PRICES = PriceTable(
    version=PRICE_VERSION,
    rates={
        # OpenAI: sora-2 $0.10/s (720p); sora-2-pro $0.30/s at 720p, $0.50/s at 1024x1792.
        "openai-videos": {
            "sora-2": _sora2(pro=False),
            "sora-2-pro": _sora2(pro=True),
            "*": _sora2(pro=False),
        },
        # Azure OpenAI bills Sora 2 at OpenAI's rates; the Sora 1 deployments (the "*" row) are
        # priced the same here, to be checked against the subscription's own price sheet.
        "azure-sora": {
            "sora-2": _sora2(pro=False),
            "sora-2-pro": _sora2(pro=True),
            "*": _sora2(pro=False),
        },
        # fal, Kling 2.1 standard: $0.25 per 5 s clip, $0.05 per further second.
        "fal": {"*": (Tier(_P720, 0.05), Tier(_P1080, 0.09))},
        # Replicate, kwaivgi/kling-v2.1: $0.05/s at 720p, $0.09/s at 1080p.
        "replicate": {"*": (Tier(_P720, 0.05), Tier(_P1080, 0.09))},
    },
    sources=SOURCES,
)


def usd_to_micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def micros_to_usd(micros: int) -> float:
    return round(micros / MICROS_PER_USD, 6)


def estimate_cost(
    table: PriceTable,
    provider: str,
    model: str | None,
    *,
    seconds: int,
    width: int,
    height: int,
    variants: int = 1,
) -> Estimate:
    """What a job of `seconds` at `width`x`height`, `variants` times, costs at `provider`."""
    models = table.rates.get(provider)
    tiers = None if models is None else models.get(model or "*") or models.get("*")
    if not tiers:
        return Estimate(0, table.version, priced=False)
    pixels = width * height
    tier = next((t for t in tiers if pixels <= t.max_pixels), tiers[-1])
    return Estimate(usd_to_micros(tier.usd_per_second) * seconds * variants, table.version)


def final_cost_micros(
    *, reported_usd: float | None, reserved_micros: int, succeeded: bool, stage: str | None
) -> int:
    """What a finished job cost: what its end event says; else the estimate when the video was
    generated (a success, or a failure of the download after it), else nothing: a job the
    provider refused or failed is not billed."""
    if reported_usd is not None:
        return usd_to_micros(reported_usd)
    if succeeded or stage == "fetch":
        return reserved_micros
    return 0


def parse_price_table(data: Mapping[str, Any]) -> PriceTable:
    """A table from the TOML shape of a prices file:

    version = "2027-01-15"
    [sources]
    openai-videos = "https://openai.com/api/pricing/"
    [[rates.openai-videos.sora-2]]
    max_pixels = 921600
    usd_per_second = 0.10
    """
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError("a prices file needs a `version` string")
    rates: dict[str, dict[str, tuple[Tier, ...]]] = {}
    for provider, models in dict(data.get("rates") or {}).items():
        rates[provider] = {}
        for model, tiers in dict(models).items():
            parsed = sorted(
                (Tier(int(t["max_pixels"]), float(t["usd_per_second"])) for t in tiers),
                key=lambda t: t.max_pixels,
            )
            if not parsed or any(t.usd_per_second < 0 or t.max_pixels <= 0 for t in parsed):
                raise ValueError(f"prices for {provider}/{model}: positive tiers needed")
            rates[provider][model] = tuple(parsed)
    return PriceTable(
        version=version,
        rates=rates,
        sources={str(k): str(v) for k, v in dict(data.get("sources") or {}).items()},
    )
