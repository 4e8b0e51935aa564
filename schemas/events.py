"""Every event vidpipe puts on Kafka, in one module.

Public events (the contract with upstream producers and with the fallback subscribers):
    GenerationRequested  -> {prefix}generation.requested   (upstream -> submitter)
    JobSubmitted         -> {prefix}job.submitted          (submitter -> poller)
    JobProgressed        -> {prefix}job.progressed         (poller -> recorder)
    JobSucceeded         -> {prefix}job.succeeded          (poller -> fetcher)
    JobFailed            -> {prefix}job.failed             (submitter / poller -> recorder)
    DownloadUnavailable  -> {prefix}download.unavailable   (fetcher -> fallbacks)
    VideoStored          -> {prefix}video.stored           (fetcher / placeholder / redownloader)
    DownloadRetryScheduled -> {prefix}download.retry       (redownloader -> recorder)
    DownloadGaveUp       -> {prefix}download.gaveup        (redownloader -> failover, recorder)
    UserNotified         -> {prefix}user.notified          (notifier -> recorder)
    CancelRequested      -> {prefix}cancel.requested       (CLI / gateway / upstream -> submitter)
    JobCancelled         -> {prefix}job.cancelled          (submitter -> recorder)

Internal messages (never produced by upstream systems):
    DeadLetter           -> {prefix}deadletter             (any stage, for poison messages)
    Timer                -> {prefix}timers.<stage>         (durable timers, see vidpipe.bus.timers)
    PollDue              -> {prefix}poller.due             (a due status check for the poller)
    RedownloadDue        -> {prefix}redownloader.due       (a due download retry)

Every event carries the envelope (event_id, event_type, schema_version, occurred_at, request_id,
causation_id). `request_id` is also the Kafka key on every topic, so one generation's events stay
ordered within a topic.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self, TypeVar

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    UrlConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

__all__ = [
    "EVENT_TYPES",
    "MESSAGE_MAX_CHARS",
    "PROVIDER_ID_MAX_CHARS",
    "PUBLIC_EVENTS",
    "REQUEST_ID_MAX_CHARS",
    "CancelRequested",
    "DeadLetter",
    "DownloadGaveUp",
    "DownloadRetryScheduled",
    "DownloadUnavailable",
    "Event",
    "FallbackName",
    "GenerationRequested",
    "JobCancelled",
    "JobFailed",
    "JobProgressed",
    "JobState",
    "JobSubmitted",
    "JobSucceeded",
    "PollDue",
    "ProviderId",
    "RedownloadDue",
    "RequestId",
    "RequestSnapshot",
    "SentRequest",
    "Timer",
    "UserNotified",
    "VideoStored",
    "clip_message",
    "derive_event_id",
    "read_json",
    "unstorable_text",
    "utcnow",
]

SCHEMA_VERSION = 1
#: The longest human-readable `message` an event carries: the JSON Schemas' `maxLength`.
MESSAGE_MAX_CHARS: Final = 2000

#: The longest request id: the width of the records' `request_id` columns.
REQUEST_ID_MAX_CHARS: Final = 128
#: The longest id a provider may give a job or a generation: the width of the records' columns.
PROVIDER_ID_MAX_CHARS: Final = 256

# Request ids become Kafka keys, storage key segments and database keys: a safe set, and never
# only dots ("." and ".." are not file names). The pattern needs no look-ahead, so every JSON
# Schema validator and Pydantic's Rust regex read it alike.
RequestId = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=REQUEST_ID_MAX_CHARS,
        pattern=r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$",
    ),
]
# Ids a provider chose (job ids, generation ids): sent back to it verbatim, so kept whole, but
# bounded (the records' column width) and free of control characters; a file name derived from
# one is hashed down to size (vidpipe.storage.base.key_segment).
ProviderId = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=PROVIDER_ID_MAX_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
ProviderName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
HttpsUrl = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["https"], max_length=2048),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https://", "maxLength": 2048}),
]
FallbackName = Literal["placeholder", "notify", "retry", "failover"]
# A provider's registry name as requests spell it (azure-sora, gemini, ...).
ProviderSlug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
# Normalised job states shared by every provider (each client maps its own vocabulary onto these).
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]

# A fixed namespace so that the same (request, step) always yields the same event id: a redelivered
# message re-emits identical events, and every consumer dedupes them by event_id.
_EVENT_NAMESPACE = uuid.UUID("6f1d3c52-2b7e-4a55-9a8e-0c4f6f0b9a11")


def derive_event_id(request_id: str, *parts: object) -> uuid.UUID:
    """The deterministic event id of one step of one generation."""
    return uuid.uuid5(_EVENT_NAMESPACE, "|".join([request_id, *map(str, parts)]))


def utcnow() -> datetime:
    return datetime.now(UTC)


def clip_message(text: str) -> str:
    """`text` cut to MESSAGE_MAX_CHARS, so it always fits an event's `message` field."""
    return text[:MESSAGE_MAX_CHARS]


# PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
#: JSON bytes can hold such a character only as an escape (`\u0000`, `\uD800`-`\uDFFF`): raw
#: control characters and invalid UTF-8 are not JSON. A surrogate pair's escapes are a false
#: alarm, which only means the check runs field by field.
_UNSTORABLE_IN_JSON = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})|\x00|\xed[\xa0-\xbf]")
#: The validation context key that says the input's text is storable already (see `read_json`).
_TEXT_CHECKED = "vidpipe.text_checked"

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_json(model: type[ModelT], raw: bytes | str) -> ModelT:
    """`model.model_validate_json(raw)`, with the per-string storable-text check of every
    `_Recorded` model skipped when a scan of the bytes shows no string can fail it."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    checked = _UNSTORABLE_IN_JSON.search(data) is None
    return model.model_validate_json(data, context={_TEXT_CHECKED: True} if checked else None)


def unstorable_text(value: object, where: str = "value") -> str | None:
    """Where `value` (a string, or strings inside lists and dicts, keys included) holds a
    character PostgreSQL refuses in text (NUL, a lone surrogate): a field path such as
    `metadata.lang`; None when there is none. Nested models answer for themselves."""
    if isinstance(value, str):
        return where if _UNSTORABLE.search(value) else None
    if isinstance(value, list | tuple):
        items: list[tuple[str, object]] = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        items = []
        for key, item in value.items():
            items += [(f"{where} (a key)", key), (f"{where}.{key}", item)]
    else:
        return None
    for path, item in items:
        if found := unstorable_text(item, path):
            return found
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class _Recorded(_Model):
    """A model whose text reaches the records: no string in it may hold a character PostgreSQL
    refuses, so a message that passes the schema can always be stored."""

    @model_validator(mode="after")
    def _storable_text(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get(_TEXT_CHECKED):
            return self
        for name, value in self:
            if where := unstorable_text(value, name):
                raise ValueError(
                    f"{where} holds a character the records cannot store (NUL or a lone surrogate)"
                )
        return self


class Event(_Recorded):
    """The envelope every event carries."""

    event_id: uuid.UUID = Field(description="Unique per event; the dedupe key.")
    event_type: str
    schema_version: Literal[1] = 1
    occurred_at: datetime = Field(default_factory=utcnow, description="RFC 3339, UTC.")
    request_id: RequestId = Field(
        description="The generation's identity and idempotency key, chosen upstream; the Kafka key."
    )
    causation_id: uuid.UUID | None = Field(
        default=None, description="The event_id of the event that caused this one."
    )

    @field_validator("occurred_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a timezone (RFC 3339)")
        return value.astimezone(UTC)


class GenerationRequested(Event):
    """The public request contract: what upstream systems publish to ask for a video."""

    event_type: Literal["GenerationRequested"] = "GenerationRequested"
    # Optional for producers: when absent, `_fill_envelope` derives one from request_id (the
    # factory below only satisfies the type; the validator always runs first).
    event_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="Optional; when absent a deterministic id is derived from request_id.",
    )
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    input_image_url: HttpsUrl | None = None
    seconds: int = Field(default=5, ge=1, le=60)
    size: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")] = (
        "1280x720"
    )
    variants: int = Field(default=1, ge=1, le=4)
    provider: ProviderSlug | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    fallbacks: list[FallbackName] | None = None
    callback_url: HttpsUrl | None = None
    metadata: dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=512)],
    ] = Field(default_factory=dict, max_length=32)
    parent_request_id: RequestId | None = None
    failover_chain: list[ProviderSlug] | None = Field(
        default=None,
        max_length=8,
        description="Providers to fail over to, in order (default: VIDPIPE_FAILOVER_CHAIN).",
    )
    failover_path: list[ProviderSlug] = Field(
        default_factory=list,
        max_length=8,
        description="Set by the failover stage: providers this lineage already used, in order.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_envelope(cls, data: Any) -> Any:
        # Upstream producers in any language may publish a bare request without an event_id: give it
        # a deterministic one so a resend of the same bytes is still recognised as the same event.
        if isinstance(data, dict) and not data.get("event_id") and data.get("request_id"):
            data = dict(data)
            data["event_id"] = str(derive_event_id(str(data["request_id"]), "GenerationRequested"))
        return data

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])


class SentRequest(_Recorded):
    """A request as mapped onto what its provider accepts (vidpipe.policy.request_mapping)."""

    seconds: int = Field(ge=1)
    size: str
    variants: int = Field(default=1, ge=1)
    aspect_ratio: str | None = Field(default=None, description="Sent instead of a size.")
    changes: list[str] = Field(
        default_factory=list, description="What moved, e.g. 'seconds 5 -> 4'."
    )
    length_checked: bool = Field(
        default=True,
        description="False when the provider picks the length itself (Gemini Omni): the"
        " stored video is not held to `seconds`.",
    )


class RequestSnapshot(_Recorded):
    """What the fallbacks need to know of the original request, carried along the job's events
    (JobSubmitted -> JobSucceeded -> DownloadUnavailable) so no stage has to look it up."""

    prompt: str
    input_image_url: str | None = None
    seconds: int = 5
    size: str = "1280x720"
    variants: int = 1
    provider: str | None = None
    model: str | None = None
    fallbacks: list[FallbackName] | None = None
    callback_url: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    parent_request_id: str | None = None
    failover_chain: list[str] | None = None
    failover_path: list[str] = Field(default_factory=list)
    #: What the submitter sent the provider (the request mapped onto what it accepts).
    sent: SentRequest | None = None

    @classmethod
    def of(cls, request: GenerationRequested) -> RequestSnapshot:
        return cls(
            prompt=request.prompt,
            input_image_url=str(request.input_image_url) if request.input_image_url else None,
            seconds=request.seconds,
            size=request.size,
            variants=request.variants,
            provider=request.provider,
            model=request.model,
            fallbacks=request.fallbacks,
            callback_url=str(request.callback_url) if request.callback_url else None,
            metadata=dict(request.metadata),
            parent_request_id=request.parent_request_id,
            failover_chain=request.failover_chain,
            failover_path=list(request.failover_path),
        )


class _JobEvent(Event):
    provider: ProviderName = Field(description="Provider name, e.g. azure-sora or openai-videos.")
    provider_job_id: ProviderId
    endpoint_host: ShortText | None = Field(
        default=None, description="Provider endpoint host, no path."
    )


class JobSubmitted(_JobEvent):
    event_type: Literal["JobSubmitted"] = "JobSubmitted"
    request: RequestSnapshot | None = None
    model: Annotated[str, StringConstraints(max_length=128)] | None = None
    status: JobState = "queued"
    expires_at: datetime | None = None
    cost_usd: float | None = Field(
        default=None, ge=0, description="The job's estimated cost in USD (docs/costs.md)."
    )
    price_version: ShortText | None = Field(
        default=None, description="The price table the cost comes from (its date)."
    )


class JobProgressed(_JobEvent):
    event_type: Literal["JobProgressed"] = "JobProgressed"
    status: JobState
    provider_status: ShortText
    progress: int | None = Field(default=None, ge=0, le=100)


class JobSucceeded(_JobEvent):
    event_type: Literal["JobSucceeded"] = "JobSucceeded"
    request: RequestSnapshot | None = None
    generation_ids: list[ProviderId] = Field(min_length=1, max_length=16)
    expires_at: datetime | None = None
    cost_usd: float | None = Field(
        default=None, ge=0, description="The job's final cost in USD (docs/costs.md)."
    )
    price_version: ShortText | None = None


class JobFailed(Event):
    event_type: Literal["JobFailed"] = "JobFailed"
    provider: ProviderName | None = None
    provider_job_id: ProviderId | None = None
    stage: Literal["submit", "poll", "fetch"]
    reason_code: ShortText = Field(description="Machine-readable cause, e.g. output_moderation.")
    request: RequestSnapshot | None = Field(
        default=None, description="The request, for a failover on a provider's own failure."
    )
    message: str = Field(
        max_length=MESSAGE_MAX_CHARS, description="Human-readable cause; never a secret."
    )
    cost_usd: float | None = Field(
        default=None, ge=0, description="The job's final cost in USD; 0: nothing was billed."
    )
    price_version: ShortText | None = None


class DownloadUnavailable(_JobEvent):
    event_type: Literal["DownloadUnavailable"] = "DownloadUnavailable"
    request: RequestSnapshot | None = None
    variant_index: int = Field(default=0, ge=0, lt=16)
    generation_id: ProviderId
    reason_code: ShortText = Field(
        description="not_found, invalid_content, transient_error, too_large…"
    )
    http_status: int | None = None
    message: str = Field(max_length=MESSAGE_MAX_CHARS)
    attempted_at: datetime
    expires_at: datetime | None = None


class VideoStored(Event):
    event_type: Literal["VideoStored"] = "VideoStored"
    provider: ProviderName | None = None
    provider_job_id: ProviderId | None = None
    generation_id: ProviderId | None = None
    variant_index: int = Field(default=0, ge=0, lt=16)
    storage_url: str
    size_bytes: int = Field(ge=0)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    content_type: str = "video/mp4"
    placeholder: bool = False


class DownloadRetryScheduled(_JobEvent):
    """The redownloader will try the download again at `next_attempt_at`."""

    event_type: Literal["DownloadRetryScheduled"] = "DownloadRetryScheduled"
    generation_id: ProviderId
    attempt: int = Field(ge=1, description="The attempt this schedules (1 = first retry).")
    next_attempt_at: datetime
    last_reason_code: ShortText
    attempted_at: datetime | None = None
    expires_at: datetime | None = None


class DownloadGaveUp(_JobEvent):
    """The redownloader stopped: the asset expired, or the attempts ran out."""

    event_type: Literal["DownloadGaveUp"] = "DownloadGaveUp"
    generation_id: ProviderId
    # not_pursued: the request's fallbacks include neither retry nor failover.
    reason_code: Literal["expired", "max_attempts", "not_pursued"]
    attempts: int = Field(ge=0)
    message: str = Field(max_length=MESSAGE_MAX_CHARS)
    request: RequestSnapshot | None = None


class UserNotified(Event):
    """The notifier told the requester (webhook and/or a message for the record)."""

    event_type: Literal["UserNotified"] = "UserNotified"
    channel: Literal["webhook", "record"]
    language: str = Field(max_length=16)
    message: str = Field(max_length=MESSAGE_MAX_CHARS)
    webhook_id: str | None = None
    webhook_status: int | None = None
    delivered: bool


class CancelRequested(Event):
    """Someone no longer wants a generation (`vidpipe cancel`, the gateway, an upstream system).

    Keyed by request id like every event; the submitter decides what it means (a request not yet
    submitted never is; a job in flight is cancelled at the provider; a finished one stays)."""

    event_type: Literal["CancelRequested"] = "CancelRequested"
    # Optional for producers, as on GenerationRequested: when absent, one is derived from the
    # request id, so a resent cancel is the same event.
    event_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="Optional; when absent a deterministic id is derived from request_id.",
    )
    source: ShortText | None = Field(default=None, description="Who asked: cli, gateway, ...")
    reason: ShortText | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_envelope(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("event_id") and data.get("request_id"):
            data = dict(data)
            data["event_id"] = str(derive_event_id(str(data["request_id"]), "CancelRequested"))
        return data


class JobCancelled(Event):
    """A request ended cancelled: never submitted, or its provider job stopped (the submitter)."""

    event_type: Literal["JobCancelled"] = "JobCancelled"
    provider: ProviderName | None = None
    provider_job_id: ProviderId | None = None
    stage: Literal["before_submit", "submitting", "in_flight"] = Field(
        description="Where the request was: not yet submitted, being created, or at the provider."
    )
    provider_cancelled: bool = Field(
        default=False,
        description="True when the provider accepted the cancel (or deletion) of the job.",
    )
    message: str = Field(max_length=MESSAGE_MAX_CHARS)


class DeadLetter(_Model):
    """A message no stage could accept, kept whole with the reason, so nothing is lost."""

    event_type: Literal["DeadLetter"] = "DeadLetter"
    dead_lettered_at: datetime = Field(default_factory=utcnow)
    stage: str
    reason: str = Field(max_length=4000)
    original_topic: str
    original_partition: int
    original_offset: int
    original_key: str | None
    original_value: str = Field(
        description="The original bytes: UTF-8 text (invalid bytes escaped) or, when"
        " `original_value_encoding` is base64, their base64; cut short when"
        " `original_value_truncated`."
    )
    original_timestamp_ms: int | None = None
    # Added with the failure model; defaults keep older letters readable.
    error_type: str | None = Field(default=None, description="The exception's class name.")
    attempts: int = Field(default=1, ge=1, description="Deliveries tried before dead-lettering.")
    original_value_encoding: Literal["utf-8", "base64"] = "utf-8"
    original_value_truncated: bool = Field(
        default=False, description="True when the value was cut to fit the broker's size limit."
    )
    original_size: int | None = Field(default=None, ge=0, description="Original value's bytes.")
    original_sha256: str | None = Field(default=None, description="Original value's SHA-256 (hex).")


class Timer(_Model):
    """A durable timer: `payload` is published to `target_topic` with `key` once `due_at` passes."""

    event_type: Literal["Timer"] = "Timer"
    timer_id: uuid.UUID
    due_at: datetime
    target_topic: str
    key: str
    payload: dict[str, Any]


class PollDue(Event):
    """One scheduled status check of a provider job (internal to the poller)."""

    event_type: Literal["PollDue"] = "PollDue"
    provider: ProviderName
    provider_job_id: ProviderId
    endpoint_host: ShortText | None = None
    attempt: int = Field(default=0, ge=0)
    last_status: ShortText | None = None
    last_progress: int | None = None
    transient_errors: int = Field(default=0, ge=0)
    request: RequestSnapshot | None = None
    # When the job was submitted: the schedule waits in proportion to the job's age. Timers
    # scheduled before this field existed carry none and are checked at the base interval.
    submitted_at: datetime | None = None
    # The submitter's estimate, carried to the job's JobSucceeded (docs/costs.md).
    cost_usd: float | None = Field(default=None, ge=0)
    price_version: ShortText | None = None


class PollHinted(Event):
    """A provider's webhook said a job may have ended: check it now (internal to the poller).

    Published by the gateway once the webhook's signature checks out. Only a hint: the poller
    asks the provider itself and announces only what the provider answers, and the job's timed
    checks go on regardless, so a lost, late or repeated hint changes nothing but latency."""

    event_type: Literal["PollHinted"] = "PollHinted"
    provider: ProviderName
    provider_job_id: ProviderId
    source: ShortText = Field(default="webhook", description="What sent the hint.")
    hinted_status: ShortText | None = Field(
        default=None, description="What the webhook claimed; never trusted, only logged."
    )
    submitted: JobSubmitted = Field(description="The job's JobSubmitted, from the events log.")


class RedownloadDue(_Model):
    """One scheduled download retry (internal to the redownloader)."""

    event_type: Literal["RedownloadDue"] = "RedownloadDue"
    retry_attempt: int = Field(ge=1)
    unavailable: DownloadUnavailable


PUBLIC_EVENTS: tuple[type[Event], ...] = (
    GenerationRequested,
    JobSubmitted,
    JobProgressed,
    JobSucceeded,
    JobFailed,
    DownloadUnavailable,
    VideoStored,
    DownloadRetryScheduled,
    DownloadGaveUp,
    UserNotified,
    CancelRequested,
    JobCancelled,
)
_ALL_EVENTS: tuple[type[Event], ...] = (*PUBLIC_EVENTS, PollDue, PollHinted)
EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in _ALL_EVENTS}
