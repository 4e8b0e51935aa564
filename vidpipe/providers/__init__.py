"""Provider clients: thin, on plain httpx, one per wire protocol, and the registry of them.

Each provider module declares a `ProviderConfig` subclass (its name, environment variables, quota
and client factory); adding a provider means writing its module and adding one line to
`_REGISTRY`. The rest of vidpipe asks this module which providers are configured, what quota
each has, and for their clients.
"""

from __future__ import annotations

import httpx

from vidpipe.errors import ConfigurationError
from vidpipe.net.retry import NO_RETRY, RetryPolicy
from vidpipe.providers.azure_sora import AzureSoraClient, AzureSoraConfig
from vidpipe.providers.base import (
    InputImage,
    ProviderClient,
    ProviderConfig,
    ProviderJob,
    VideoDownload,
    VideoSpec,
)
from vidpipe.providers.fal import FalClient, FalConfig
from vidpipe.providers.gemini import GeminiClient, GeminiConfig
from vidpipe.providers.openai_videos import OpenAIVideosClient, OpenAIVideosConfig
from vidpipe.providers.replicate import ReplicateClient, ReplicateConfig
from vidpipe.providers.runway import RunwayClient, RunwayConfig
from vidpipe.providers.webhooks import HookVerifier

__all__ = [
    "NO_RETRY",
    "PROVIDER_NAMES",
    "AzureSoraClient",
    "AzureSoraConfig",
    "FalClient",
    "FalConfig",
    "GeminiClient",
    "GeminiConfig",
    "InputImage",
    "OpenAIVideosClient",
    "OpenAIVideosConfig",
    "ProviderClient",
    "ProviderConfig",
    "ProviderJob",
    "ReplicateClient",
    "ReplicateConfig",
    "RetryPolicy",
    "RunwayClient",
    "RunwayConfig",
    "VideoDownload",
    "VideoSpec",
    "build_provider",
    "configured_providers",
    "max_concurrent_jobs",
    "open_hook_verifiers",
    "open_providers",
    "provider_config",
]

_REGISTRY: dict[str, type[ProviderConfig]] = {
    AzureSoraConfig.name: AzureSoraConfig,
    OpenAIVideosConfig.name: OpenAIVideosConfig,
    FalConfig.name: FalConfig,
    ReplicateConfig.name: ReplicateConfig,
    GeminiConfig.name: GeminiConfig,
    RunwayConfig.name: RunwayConfig,
}

PROVIDER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _config_type(name: str) -> type[ProviderConfig]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown provider {name!r}; known providers: {', '.join(PROVIDER_NAMES)}"
        ) from None


def provider_config(name: str) -> ProviderConfig:
    """The settings of provider `name`, read from the environment now."""
    return _config_type(name)()


def configured_providers() -> list[str]:
    """Names of the providers whose required settings (endpoint and key) are all set."""
    return [name for name, config in _REGISTRY.items() if config().configured]


def max_concurrent_jobs(name: str) -> int:
    """How many jobs provider `name` may run at once for us; 1 for a provider vidpipe lacks."""
    config = _REGISTRY.get(name)
    return config().max_concurrent_jobs if config is not None else 1


def build_provider(
    name: str,
    config: ProviderConfig | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 30.0,
    retry: RetryPolicy | None = None,
) -> ProviderClient:
    """The client registered as `name`, configured from `config` (default: the environment).

    Raises ConfigurationError, naming the settings to set, when the provider is unknown or has no
    endpoint or key; the message never includes a key.
    """
    config_type = _config_type(name)
    if config is None:
        config = config_type()
    elif not isinstance(config, config_type):
        raise TypeError(f"provider {name!r} is configured by {config_type.__name__}")
    return config.build(transport=transport, timeout_s=timeout_s, retry=retry)


def open_providers(
    *, timeout_s: float = 30.0, retry: RetryPolicy | None = None
) -> dict[str, ProviderClient]:
    """A client for every configured provider (none is an error only at submit time)."""
    clients: dict[str, ProviderClient] = {}
    for name, config_type in _REGISTRY.items():
        config = config_type()
        if config.configured:
            clients[name] = config.build(timeout_s=timeout_s, retry=retry)
    return clients


def open_hook_verifiers() -> dict[str, HookVerifier]:
    """The checkers of the providers' own webhooks that are set up (the gateway's
    /v1/provider-hooks/{provider}); a provider without one is polled only."""
    verifiers: dict[str, HookVerifier] = {}
    for name, config_type in _REGISTRY.items():
        verifier = config_type().hook_verifier()
        if verifier is not None:
            verifiers[name] = verifier
    return verifiers
