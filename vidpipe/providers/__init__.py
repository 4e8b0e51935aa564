"""Provider clients: thin, on plain httpx, one per wire protocol."""

from __future__ import annotations

import httpx

from vidpipe.errors import ConfigurationError
from vidpipe.providers.azure_sora import AzureSoraClient
from vidpipe.providers.base import (
    InputImage,
    ProviderClient,
    ProviderJob,
    VideoDownload,
    VideoSpec,
)
from vidpipe.providers.http import RetryPolicy
from vidpipe.providers.openai_videos import OpenAIVideosClient
from vidpipe.settings import ProviderSettings

__all__ = [
    "PROVIDER_NAMES",
    "AzureSoraClient",
    "InputImage",
    "OpenAIVideosClient",
    "ProviderClient",
    "ProviderJob",
    "RetryPolicy",
    "VideoDownload",
    "VideoSpec",
    "build_provider",
]

PROVIDER_NAMES = ("azure-sora", "openai-videos")


def build_provider(
    name: str,
    settings: ProviderSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 30.0,
    retry: RetryPolicy | None = None,
) -> ProviderClient:
    """The client registered as `name`, configured from `settings`.

    Raises ConfigurationError, naming the settings to set, when the provider is unknown or has no
    endpoint or key; the message never includes a key.
    """
    if name == "azure-sora":
        missing = [
            env
            for env, value in (
                ("VIDPIPE_AZURE_ENDPOINT", settings.azure_endpoint),
                ("VIDPIPE_AZURE_API_KEY", settings.azure_api_key),
            )
            if not value
        ]
        if missing or settings.azure_endpoint is None or settings.azure_api_key is None:
            raise ConfigurationError(
                f"provider 'azure-sora' is not configured: set {_and(missing)}"
            )
        return AzureSoraClient(
            endpoint=settings.azure_endpoint,
            api_key=settings.azure_api_key,
            deployment=settings.azure_deployment,
            api_version=settings.azure_api_version,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
    if name == "openai-videos":
        missing = [
            env
            for env, value in (
                ("VIDPIPE_OPENAI_BASE_URL", settings.openai_base_url),
                ("VIDPIPE_OPENAI_API_KEY", settings.openai_api_key),
            )
            if not value
        ]
        if missing or settings.openai_base_url is None or settings.openai_api_key is None:
            raise ConfigurationError(
                f"provider 'openai-videos' is not configured: set {_and(missing)}"
            )
        return OpenAIVideosClient(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            auth_header=settings.openai_auth_header,
            transport=transport,
            timeout_s=timeout_s,
            retry=retry,
        )
    raise ConfigurationError(
        f"unknown provider {name!r}; known providers: {', '.join(PROVIDER_NAMES)}"
    )


def _and(names: list[str]) -> str:
    return " and ".join(names) if names else "its endpoint and key"
