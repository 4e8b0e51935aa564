"""Every exception vidpipe raises on purpose, in one tree.

    VidpipeError
    ├── ConfigurationError              bad settings; fix the configuration
    ├── UnsafeURLError                  a user-supplied URL points somewhere it must not
    │   └── InputFetchError             the URL was safe, what it served is unusable (`retryable`)
    ├── PoisonMessage                   a message no stage can accept; goes to the dead-letter topic
    ├── StorageError                    the storage backend refused or failed (`retryable`)
    ├── WebhookVerificationError        a received webhook's signature does not check out
    ├── WebhookKeysUnavailable          the keys to check it with cannot be had (ours to fix)
    ├── MediaError                      an image or video vidpipe cannot use (also a ValueError)
    │   ├── VideoProbeError             PyAV cannot open or decode the video
    │   └── PlaceholderImageError       the input image cannot make a placeholder
    ├── OpsError                        an operator command's arguments or world are wrong
    │   └── RefusedError                refused because doing it now would be unsafe
    ├── BrokerNotReadyError             the broker did not answer an admin call in time
    ├── StageWiringError                a stage's app.py is assembled wrong (a bug, not bad input)
    ├── DevStackError                   the dev stack (development tooling) could not start
    │   ├── KafkaStartError             the local broker
    │   ├── PostgresStartError          the throwaway PostgreSQL cluster
    │   └── EmulatorInputError          the emulator refuses a request body or directive
    │       ├── BodyError
    │       └── DirectiveError
    └── ProviderError                   anything a provider said or failed to say
        ├── RetryableProviderError      try again later (honour `retry_after` when set)
        │   ├── RateLimited             429
        │   └── ProviderUnavailable     5xx, timeouts, connection errors
        │       └── CreateOutcomeUnknown  a create's answer was lost: reconcile, never re-send
        └── TerminalProviderError       retrying the same call cannot help
            ├── AuthenticationFailed    401 / 403
            ├── NotFound                404: wrong endpoint, deployment or id
            ├── InvalidRequest          400 / 409 / 422
            ├── ContentPolicyViolation  moderation refused the prompt or image
            ├── DownloadNotAvailable    the job succeeded but its video cannot be fetched
            └── InvalidVideo            the bytes are not an MP4 (e.g. a JSON error body)
                ├── VideoTooLarge       more bytes than the configured bound
                └── IncompleteVideo     a cut transfer: worth another try (`retryable`)

Messages never contain a secret: clients build them from status codes and provider error codes.
Classes that were `ValueError`/`RuntimeError` before keep that base too, so `except ValueError`
written against them still works.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationFailed",
    "BodyError",
    "BrokerNotReadyError",
    "ConfigurationError",
    "ContentPolicyViolation",
    "CreateOutcomeUnknown",
    "DevStackError",
    "DirectiveError",
    "DownloadNotAvailable",
    "EmulatorInputError",
    "GatewayRefusal",
    "IncompleteVideo",
    "InputFetchError",
    "InvalidRequest",
    "InvalidVideo",
    "KafkaStartError",
    "MediaError",
    "NotFound",
    "OpsError",
    "PlaceholderImageError",
    "PoisonMessage",
    "PostgresStartError",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "RefusedError",
    "RetryableProviderError",
    "StageWiringError",
    "StorageError",
    "TerminalProviderError",
    "UnsafeURLError",
    "VideoProbeError",
    "VideoTooLarge",
    "VidpipeError",
    "WebhookKeysUnavailable",
    "WebhookVerificationError",
]


class VidpipeError(Exception):
    """Base of every error vidpipe raises on purpose."""


class ConfigurationError(VidpipeError):
    pass


class UnsafeURLError(VidpipeError):
    pass


class InputFetchError(UnsafeURLError):
    """The URL was safe, but what it served cannot be used (status, type, size, redirects).

    `retryable` is True for failures that may go away (5xx, 429, timeouts, connection errors).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class PoisonMessage(VidpipeError):
    """Raised by a handler for a well-formed message it must refuse; it is dead-lettered."""


class StorageError(VidpipeError):
    """The storage backend refused or failed an operation (never for an invalid video)."""

    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code


class WebhookVerificationError(VidpipeError):
    """The webhook's headers or signature do not check out; reject the request (HTTP 400/401)."""


class WebhookKeysUnavailable(VidpipeError):
    """The keys a webhook is checked with cannot be fetched: not the sender's fault, so it is
    answered 503 and the provider sends it again."""


class MediaError(VidpipeError, ValueError):
    """An image or a video vidpipe cannot use."""


class VideoProbeError(MediaError):
    """The data is not a video PyAV can open and decode."""


class PlaceholderImageError(MediaError):
    """The input image cannot be used (not a JPEG/PNG/WebP Pillow decodes, or far too large)."""


class OpsError(VidpipeError):
    """A problem with the arguments or the world that the operator must fix; one line."""

    exit_code = 2


class RefusedError(OpsError):
    """The tool refused because doing it now would be unsafe (a live group, a non-empty target)."""

    exit_code = 1


class GatewayRefusal(VidpipeError):
    """A request the gateway answers with an RFC 9457 problem: status, a slug, a detail."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = extra


class BrokerNotReadyError(VidpipeError, RuntimeError):
    """The broker did not answer an admin call before the deadline."""


class StageWiringError(VidpipeError):
    """A stage is assembled wrong: it publishes an event type it did not declare, or it
    subscribes without declaring the dependencies its handlers read."""


class DevStackError(VidpipeError, RuntimeError):
    """The local development stack could not be started."""


class KafkaStartError(DevStackError):
    """The local broker could not be fetched, formatted or started."""


class PostgresStartError(DevStackError):
    """The throwaway cluster could not be created or started."""


class EmulatorInputError(VidpipeError, ValueError):
    """The provider emulator refuses what it was sent (answered as the provider would)."""


class BodyError(EmulatorInputError):
    """A request body the emulated API would reject."""


class DirectiveError(EmulatorInputError):
    """An `[emulator:...]` directive or a runtime switch that does not parse."""


class ProviderError(VidpipeError):
    retryable: bool = False
    #: A short machine-readable code for events and records (e.g. "rate_limited").
    code: str = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.provider_code = provider_code
        self.retry_after = retry_after


class RetryableProviderError(ProviderError):
    retryable = True
    code = "provider_unavailable"


class RateLimited(RetryableProviderError):
    code = "rate_limited"


class ProviderUnavailable(RetryableProviderError):
    code = "provider_unavailable"


class CreateOutcomeUnknown(ProviderUnavailable):
    """A create whose answer was lost (reset, read timeout): the provider may have the job.

    Not re-sent by the client's own retry (`retryable` is False there): a blind re-send could
    start a second paid job. The submitter waits and reconciles with the provider's job list."""

    retryable = False
    code = "create_outcome_unknown"


class TerminalProviderError(ProviderError):
    code = "provider_rejected"


class AuthenticationFailed(TerminalProviderError):
    code = "authentication_failed"


class NotFound(TerminalProviderError):
    code = "not_found"


class InvalidRequest(TerminalProviderError):
    code = "invalid_request"


class ContentPolicyViolation(TerminalProviderError):
    code = "content_policy_violation"


class DownloadNotAvailable(TerminalProviderError):
    code = "download_unavailable"


class InvalidVideo(TerminalProviderError):
    code = "invalid_content"


class VideoTooLarge(InvalidVideo):
    code = "video_too_large"


class IncompleteVideo(InvalidVideo):
    """Fewer (or more) bytes than the server announced: a cut connection, worth another try."""

    # A truncated transfer says nothing about the video itself, so callers may retry it even
    # though it sits under InvalidVideo (terminal) for code that only checks the class.
    retryable = True
    code = "incomplete_download"
