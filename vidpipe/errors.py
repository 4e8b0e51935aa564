"""vidpipe's exception hierarchy.

    VidpipeError
    ├── ConfigurationError              bad settings; fix the configuration
    ├── UnsafeURLError                  a user-supplied URL points somewhere it must not
    ├── PoisonMessage                   a message no stage can accept; goes to the dead-letter topic
    └── ProviderError                   anything a provider said or failed to say
        ├── RetryableProviderError      try again later (honour `retry_after` when set)
        │   ├── RateLimited             429
        │   └── ProviderUnavailable     5xx, timeouts, connection errors
        └── TerminalProviderError       retrying the same call cannot help
            ├── AuthenticationFailed    401 / 403
            ├── NotFound                404: wrong endpoint, deployment or id
            ├── InvalidRequest          400 / 409 / 422
            ├── ContentPolicyViolation  moderation refused the prompt or image
            ├── DownloadNotAvailable    the job succeeded but its video cannot be fetched
            └── InvalidVideo            the bytes are not an MP4 (e.g. a JSON error body)

Messages never contain a secret: clients build them from status codes and provider error codes.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ConfigurationError",
    "ContentPolicyViolation",
    "DownloadNotAvailable",
    "InvalidRequest",
    "InvalidVideo",
    "NotFound",
    "PoisonMessage",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "RetryableProviderError",
    "TerminalProviderError",
    "UnsafeURLError",
    "VidpipeError",
]


class VidpipeError(Exception):
    """Base of every error vidpipe raises on purpose."""


class ConfigurationError(VidpipeError):
    pass


class UnsafeURLError(VidpipeError):
    pass


class PoisonMessage(VidpipeError):
    """Raised by a handler for a well-formed message it must refuse; it is dead-lettered."""


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
