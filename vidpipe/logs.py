"""Structured logs (structlog), one line per event, console or JSON; stdlib logs go the same way.

Every line is redacted before it is written (`redact`): credentials that look like one, and in
every URL the user name, password, query string and fragment (signed URLs carry their signature
there: SAS tokens, `?sig=`, callback tokens). Field values of any type are covered, and so are
exception tracebacks. httpx and httpcore, which log every request's full URL at INFO and DEBUG,
are held at WARNING.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

__all__ = ["QUIET_LOGGERS", "add_trace_ids", "configure_logging", "redact", "redact_url"]

#: Libraries held at WARNING: aiokafka is chatty about group membership at INFO; httpx logs
#: every request's full URL (query string included) at INFO, httpcore every connection at DEBUG.
QUIET_LOGGERS = ("aiokafka", "httpx", "httpcore")

# Anything that looks like a credential is masked before a line is written, as a last line of
# defence: clients never put keys in messages, but a provider might echo one back.
# An Authorization value's credential ("basic checks passed" is left alone: too short a token).
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_NAMED_SECRET = re.compile(
    r"(?i)(api[-_]?key|authorization|bearer|secret|password|token)([\"'=: ]+)([^\s\"',}]+)"
)
_OPENAI_KEY = re.compile(r"sk-[A-Za-z0-9_-]{8,}")
# Signature parameters outside a URL too (a SAS token, or a query string quoted alone).
_SIGNATURE = re.compile(
    r"(?i)\b(sig|signature|x-amz-signature|x-amz-credential|x-goog-signature)=[^\s&\"']+"
)
# scheme://[userinfo@]host[/path][?query][#fragment]; userinfo is everything up to the last "@"
# before the path, so a password holding "@" is masked whole.
_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<userinfo>[^/?#\s\"'<>@]*(?:@[^/?#\s\"'<>@]*)*@)?"
    r"(?P<rest>[^?#\s\"'<>]*)"
    r"(?P<query>\?[^#\s\"'<>]*)?"
    r"(?P<fragment>#[^\s\"'<>]*)?"
)
_MASK = "[redacted]"


def _url_without_secrets(match: re.Match[str]) -> str:
    text = match["scheme"]
    if match["userinfo"]:
        text += f"{_MASK}@"
    text += match["rest"]
    if match["query"]:
        text += f"?{_MASK}"
    if match["fragment"]:
        text += f"#{_MASK}"
    return text


def redact_url(text: str) -> str:
    """`text` with every URL's user name, password, query string and fragment masked; the
    scheme, host, port and path stay, so a line still says where a request went."""
    return _URL.sub(_url_without_secrets, text)


def redact(text: str) -> str:
    """`text` without URL secrets (`redact_url`) or anything that looks like a credential."""
    text = redact_url(text)
    # The scheme first, so "Authorization: Bearer <token>" loses the token, not just "Bearer".
    text = _AUTH_SCHEME.sub(lambda m: f"{m[1]}{m[2]}{_MASK}", text)
    text = _NAMED_SECRET.sub(lambda m: f"{m[1]}{m[2]}{_MASK}", text)
    text = _OPENAI_KEY.sub(_MASK, text)
    return _SIGNATURE.sub(lambda m: f"{m[1]}={_MASK}", text)


_PLAIN = (bool, int, float, type(None))


def _redacted(value: Any) -> Any:
    """`value` with every string in it redacted. Containers keep their shape; any other object
    (an exception, an httpx.URL, a Path) becomes its redacted text only when that differs."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {_redacted(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v) for v in value]
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        # "_record" and "_from_structlog" are structlog's own bookkeeping, not log content;
        # exc_info is formatted (then redacted) later, by the formatter.
        if key.startswith("_") or key == "exc_info":
            continue
        event_dict[key] = _redacted(value)
    return event_dict


def add_trace_ids(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`trace_id` and `span_id` (hex, as trace backends show them) of the current span, when
    there is one, so a log line leads to its trace; `request_id` comes from the context the
    consumers bind (`vidpipe.bus.tracing`) or the line itself."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                # Tracebacks quote exception messages, and httpx's name the URL they failed on.
                _redact_processor,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
