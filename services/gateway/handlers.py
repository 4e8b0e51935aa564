"""Gateway: the HTTP face of the pipeline, for systems that speak HTTP and for the dashboard.

Reads:   HTTP: POST/GET /v1/generations, GET /v1/generations/{id}[/events|/video], /v1/ops/*
         HTTP: POST /v1/provider-hooks/{provider}  a provider's own webhook (signature checked)
         the records: `projects` and the `events` log (vidpipe.db.tables), `provider_slots`
         {prefix}deadletter                 DeadLetter (the dashboard's dead letters, by reason)
         consumer groups' offsets           (members and lag per topic, timers pending)
Writes:  {prefix}generation.requested      GenerationRequested (keyed by request id)
         {prefix}cancel.requested          CancelRequested (POST /v1/generations/{id}/cancel)
         {prefix}poller.hinted             PollHinted: "check this job now", from a webhook
         the `gateway_requests` table       which request id (and Idempotency-Key) was accepted
         dead letters back to their topics  (the same code as `vidpipe dlq redrive`)

Rules:
- One request id, one answer: a resend of an accepted request id (or Idempotency-Key, per API
  key) answers what the first call answered and publishes nothing; the same id with another
  body is a conflict. Ids the pipeline knows from Kafka directly are answered, never resent.
- The row is written before the publish and removed when the publish fails, so a 503 leaves
  nothing behind and the client may simply retry.
- A provider's webhook is a hint, never a result: once its signature checks out it becomes a
  PollHinted for the job it names, and the poller asks the provider itself. A forged one is
  refused (401) and changes nothing; a lost one costs only latency.
- API keys are kept as SHA-256 digests and compared in constant time; no key, no work.
This module is the logic (plain async functions over `GatewayDeps`); app.py is the HTTP wiring.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    desc,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import (
    CancelRequested,
    GenerationRequested,
    JobSubmitted,
    PollHinted,
    derive_event_id,
)
from schemas.topics import TIMER_STAGES, Topics, timer_topics
from services.registry import STAGES
from vidpipe.db.tables import events, insert_ignore, projects, provider_slots
from vidpipe.errors import GatewayRefusal, WebhookKeysUnavailable, WebhookVerificationError
from vidpipe.ops import connected
from vidpipe.ops.dlq import list_dead_letters, redrive_dead_letters
from vidpipe.policy.cancel import lineage_cancels
from vidpipe.policy.projection import STATUS_RANK, TERMINAL_STATUSES
from vidpipe.providers.webhooks import HookVerifier

__all__ = [
    "ENVELOPE_FIELDS",
    "STATUSES",
    "Accepted",
    "ApiKeys",
    "DeadLetterSummary",
    "GatewayDeps",
    "Generation",
    "GenerationPage",
    "HookReceipt",
    "RateLimiter",
    "RedriveRequest",
    "RedriveResult",
    "Sessions",
    "StagesView",
    "TimelineEvent",
    "accept_generation",
    "create_gateway_tables",
    "dead_letter_summary",
    "events_after",
    "get_generation",
    "hash_key",
    "list_generations",
    "receive_provider_hook",
    "redrive",
    "stages_overview",
    "video_source",
]

log = structlog.get_logger("vidpipe.gateway")

# Set by the pipeline, never by a caller: the gateway builds the envelope itself.
ENVELOPE_FIELDS = frozenset(
    {"event_id", "event_type", "schema_version", "occurred_at", "causation_id", "parent_request_id"}
)
STATUSES: tuple[str, ...] = tuple(STATUS_RANK)

gateway_metadata = MetaData()
# What the gateway accepted: the idempotency memory. One row per request id; an
# Idempotency-Key is unique per API key (NULLs never collide, on SQLite and PostgreSQL alike).
accepted_requests = Table(
    "gateway_requests",
    gateway_metadata,
    Column("request_id", String(128), primary_key=True),
    Column("api_key", String(64), nullable=False),
    Column("idempotency_key", String(255)),
    Column("body_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("api_key", "idempotency_key", name="gateway_requests_idempotency"),
)


async def create_gateway_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(gateway_metadata.create_all)


# --- the wire models (they are the OpenAPI document's components) ---------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Accepted(_Out):
    request_id: str
    status: str = Field(description="The request's status when it was answered.")
    status_url: str
    events_url: str


class Generation(_Out):
    request_id: str
    status: str
    progress: int | None = None
    provider: str | None = None
    prompt: str | None = None
    provider_job_id: str | None = Field(default=None, description="The provider's job id.")
    placeholder: bool = False
    video_url: str | None = Field(default=None, description="The gateway's URL of the video.")
    error_message: str | None = None
    user_message: str | None = None
    retry_attempts: int | None = None
    parent_request_id: str | None = None
    failover_request_id: str | None = None
    estimated_cost_usd: float | None = Field(
        default=None, description="The job's estimated cost at submission (USD)."
    )
    cost_usd: float | None = Field(default=None, description="The job's final cost (USD).")
    price_version: str | None = Field(default=None, description="The price table's date.")
    created_at: datetime
    updated_at: datetime
    terminal: bool


class HookReceipt(_Out):
    hinted: bool = Field(description="Whether the job it names is now checked out of turn.")
    detail: str


class GenerationPage(_Out):
    items: list[Generation]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page.")


class TimelineEvent(_Out):
    seq: int
    event_type: str
    topic: str
    occurred_at: datetime
    payload: dict[str, Any]


class GroupView(_Out):
    group: str
    stage: str
    role: str
    state: str
    members: list[str]
    lag: dict[str, int] = Field(description="Messages not yet consumed, per topic.")


class QuotaView(_Out):
    provider: str
    in_use: int
    limit: int | None


class StagesView(_Out):
    groups: list[GroupView]
    timers_pending: dict[str, int] = Field(description="Per timer stage: timers not yet fired.")
    quota: list[QuotaView]


class DeadLetterReason(_Out):
    reason: str
    stage: str
    count: int
    last_at: datetime


class DeadLetterSummary(_Out):
    total: int
    unreadable: int
    reasons: list[DeadLetterReason]


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=512)
    stage: str | None = Field(default=None, max_length=64)
    dry_run: bool = False


class RedriveResult(_Out):
    scanned: int
    matched: int
    sent: int
    duplicates: int
    refused: list[str]
    missing_topics: dict[str, int]


# --- keys, sessions, rate limits --------------------------------------------------------------


def hash_key(key: str) -> str:
    """The at-rest form of an API key. Keys are long random tokens, so one SHA-256 is enough
    (a slow hash is for guessable passwords)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys, as (name, SHA-256 digest) pairs."""

    entries: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """`name:sha256hex[,name:sha256hex...]`; ValueError naming the bad entry's position."""
        entries: list[tuple[str, bytes]] = []
        for position, raw in enumerate((p.strip() for p in text.split(",")), start=1):
            if not raw:
                continue
            name, _, digest = raw.rpartition(":")
            try:
                value = bytes.fromhex(digest)
            except ValueError:
                value = b""
            if not name or len(value) != 32:
                raise ValueError(f"VIDPIPE_GATEWAY_API_KEYS entry {position}: want name:sha256hex")
            entries.append((name, value))
        return cls(tuple(entries))

    def identify(self, presented: str) -> str | None:
        """The key's name, or None. Every entry is compared, in constant time."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: str | None = None
        for name, expected in self.entries:
            if hmac.compare_digest(digest, expected):
                found = name
        return found


@dataclass
class Sessions:
    """Dashboard logins: a random cookie token per login, held in this process's memory (a
    restarted gateway logs everyone out; the key itself never goes into the cookie)."""

    ttl_s: float = 12 * 3600
    clock: Callable[[], float] = time.monotonic
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def open(self, key_name: str) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (key_name, self.clock() + self.ttl_s)
        return token

    def who(self, token: str) -> str | None:
        found = self._tokens.get(token)
        if found is None:
            return None
        if found[1] < self.clock():
            del self._tokens[token]
            return None
        return found[0]

    def close(self, token: str) -> None:
        self._tokens.pop(token, None)


@dataclass
class RateLimiter:
    """A token bucket per API key: `rate_per_s` sustained, `burst` at once. Per process; a few
    lines of arithmetic, so no library (nothing is shared between gateways)."""

    rate_per_s: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key_name: str) -> float:
        """0 when the call may go, else the seconds until a token is back."""
        now = self.clock()
        tokens, stamp = self._buckets.get(key_name, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key_name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_name] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s


# --- generations ------------------------------------------------------------------------------


@dataclass
class GatewayDeps:
    engine: AsyncEngine
    topics: Topics
    publish: Callable[[GenerationRequested], Awaitable[None]]
    bootstrap_servers: str
    group_id: Callable[[str], str]
    #: The local storage folder, when videos are files (served by the gateway), else None.
    storage_root: Path | None = None
    quota: Mapping[str, int] = field(default_factory=dict)
    #: Publishes a CancelRequested (`POST /v1/generations/{id}/cancel`); None: refused (503).
    publish_cancel: Callable[[CancelRequested], Awaitable[None]] | None = None
    #: The providers whose own webhooks are accepted, and how each is checked.
    hook_verifiers: Mapping[str, HookVerifier] = field(default_factory=dict)
    #: Publishes a PollHinted (a verified provider webhook); None: refused (503).
    publish_hint: Callable[[PollHinted], Awaitable[None]] | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _body_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _request_id_for(key_name: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return f"req-{uuid.uuid4().hex[:16]}"
    # Deterministic: the same key and Idempotency-Key name the same request, even if the
    # gateway's table were lost.
    digest = hashlib.sha256(f"{key_name}\0{idempotency_key}".encode()).hexdigest()
    return f"gw-{digest[:24]}"


def _accepted(request_id: str, status: str) -> Accepted:
    return Accepted(
        request_id=request_id,
        status=status,
        status_url=f"/v1/generations/{request_id}",
        events_url=f"/v1/generations/{request_id}/events",
    )


async def _status_of(deps: GatewayDeps, request_id: str) -> str | None:
    async with deps.engine.connect() as conn:
        row = await conn.execute(
            select(projects.c.status).where(projects.c.request_id == request_id)
        )
        status = row.scalar_one_or_none()
    return str(status) if status is not None else None


async def _remembered(deps: GatewayDeps, where: Any) -> Any:
    async with deps.engine.connect() as conn:
        return (await conn.execute(select(accepted_requests).where(where))).mappings().first()


async def accept_generation(
    deps: GatewayDeps, key_name: str, body: Mapping[str, Any], idempotency_key: str | None
) -> tuple[Accepted, bool]:
    """Validate and publish one request; (the answer, whether it is a replay of an earlier one).

    Raises pydantic.ValidationError for a body that breaks the contract, GatewayRefusal
    otherwise."""
    envelope = sorted(ENVELOPE_FIELDS & set(body))
    if envelope:
        raise GatewayRefusal(422, "validation", f"set by the pipeline, not by callers: {envelope}")
    digest = _body_digest(body)
    if idempotency_key is not None:
        earlier = await _remembered(
            deps,
            and_(
                accepted_requests.c.api_key == key_name,
                accepted_requests.c.idempotency_key == idempotency_key,
            ),
        )
        if earlier is not None:
            if earlier["body_sha256"] != digest:
                raise GatewayRefusal(
                    422, "idempotency-key-reused", "this Idempotency-Key came with another body"
                )
            rid = str(earlier["request_id"])
            return _accepted(rid, await _status_of(deps, rid) or "requested"), True
    fields = dict(body)
    fields.setdefault("request_id", _request_id_for(key_name, idempotency_key))
    request = GenerationRequested.model_validate(fields)
    rid = request.request_id
    for _ in range(2):
        earlier = await _remembered(deps, accepted_requests.c.request_id == rid)
        if earlier is not None:
            if earlier["body_sha256"] != digest:
                raise GatewayRefusal(
                    409, "request-id-taken", f"request id {rid} came with another body"
                )
            return _accepted(rid, await _status_of(deps, rid) or "requested"), True
        known = await _status_of(deps, rid)
        if known is not None:
            # Accepted over Kafka before: never a second generation, whatever the body.
            return _accepted(rid, known), True
        async with deps.engine.begin() as conn:
            inserted = await insert_ignore(
                conn,
                accepted_requests,
                {
                    "request_id": rid,
                    "api_key": key_name,
                    "idempotency_key": idempotency_key,
                    "body_sha256": digest,
                    "created_at": datetime.now(UTC),
                },
                "request_id",
            )
        if inserted:
            break
    else:
        raise GatewayRefusal(
            409, "request-id-taken", f"request id {rid} is being accepted elsewhere"
        )
    try:
        await deps.publish(request)
    except Exception as exc:
        async with deps.engine.begin() as conn:
            await conn.execute(
                delete(accepted_requests).where(accepted_requests.c.request_id == rid)
            )
        log.warning("publish_failed", request_id=rid, error=type(exc).__name__)
        raise GatewayRefusal(
            503, "broker-unavailable", "the request could not be published; retry"
        ) from None
    log.info("accepted", request_id=rid, api_key=key_name)
    return _accepted(rid, "requested"), False


async def request_cancel(deps: GatewayDeps, key_name: str, request_id: str) -> Accepted:
    """Publish a CancelRequested for a generation that can still be stopped, and for its latest
    failover child while that one can (`lineage_cancels`).

    404 for an id nobody asked for, 409 once nothing of it can be stopped (a cancel would change
    nothing), 503 when the broker is unavailable; the submitter's ledger decides for real."""
    status, child_id = await _status_and_child(deps, request_id)
    if status is None and await _remembered(deps, accepted_requests.c.request_id == request_id):
        status = "requested"  # accepted here, not recorded yet
    if status is None:
        raise GatewayRefusal(404, "not-found", "no such generation")
    child = None if child_id is None else (child_id, await _status_of(deps, child_id))
    cancels = lineage_cancels(
        CancelRequested.model_validate({"request_id": request_id, "source": "gateway"}),
        status,
        child,
    )
    if isinstance(cancels, str):
        raise GatewayRefusal(409, "not-cancellable", cancels)
    try:
        if deps.publish_cancel is None:
            raise RuntimeError("no cancel publisher")
        for cancel in cancels:
            await deps.publish_cancel(cancel)
    except Exception as exc:
        log.warning("cancel_publish_failed", request_id=request_id, error=type(exc).__name__)
        raise GatewayRefusal(
            503, "broker-unavailable", "the cancel could not be published; retry"
        ) from None
    log.info("cancel_requested", request_id=request_id, api_key=key_name, targets=len(cancels))
    return _accepted(request_id, status)


async def _status_and_child(deps: GatewayDeps, request_id: str) -> tuple[str | None, str | None]:
    async with deps.engine.connect() as conn:
        row = (
            await conn.execute(
                select(projects.c.status, projects.c.failover_request_id).where(
                    projects.c.request_id == request_id
                )
            )
        ).first()
    if row is None:
        return None, None
    return str(row[0]), (str(row[1]) if row[1] else None)


async def _submitted_job(
    deps: GatewayDeps, provider: str, provider_job_id: str
) -> tuple[JobSubmitted, str] | None:
    """The JobSubmitted of our job `provider_job_id` at `provider`, and its request's status."""
    async with deps.engine.connect() as conn:
        row = (
            await conn.execute(
                select(projects.c.request_id, projects.c.status).where(
                    projects.c.provider == provider, projects.c.sora_job_id == provider_job_id
                )
            )
        ).first()
        if row is None:
            return None
        payloads = (
            await conn.execute(
                select(events.c.payload)
                .where(events.c.request_id == row[0], events.c.event_type == "JobSubmitted")
                .order_by(desc(events.c.seq))
            )
        ).scalars()
        for payload in payloads:
            try:
                submitted = JobSubmitted.model_validate(payload)
            except ValidationError:
                continue  # a row the log kept from another version of the schema
            if (submitted.provider, submitted.provider_job_id) == (provider, provider_job_id):
                return submitted, str(row[1])
    return None


async def receive_provider_hook(
    deps: GatewayDeps,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    query: Mapping[str, str],
) -> HookReceipt:
    """Check a provider's webhook and turn it into a PollHinted for the job it names.

    404 for a provider whose webhooks are not set up, 401 for one whose signature does not check
    out (nothing is published), 503 when the broker is unavailable (the provider retries). A
    genuine webhook for a job vidpipe does not know, or one that has ended, is acknowledged and
    dropped: answering an error would only make the provider retry it."""
    verifier = deps.hook_verifiers.get(provider)
    if verifier is None:
        raise GatewayRefusal(404, "not-found", f"no webhooks are set up for provider {provider!r}")
    try:
        hint = await verifier.verify(headers, body, query)
    except WebhookKeysUnavailable:
        log.warning("provider_hook_keys_unavailable", provider=provider)
        raise GatewayRefusal(
            503, "keys-unavailable", "the webhook cannot be checked now; retry"
        ) from None
    except WebhookVerificationError as exc:
        # The reason is ours (never a secret, a signature or the body); the caller learns less.
        log.warning("provider_hook_refused", provider=provider, reason=str(exc))
        raise GatewayRefusal(
            401, "bad-signature", "the webhook's signature does not check out"
        ) from None
    found = await _submitted_job(deps, hint.provider, hint.provider_job_id)
    logger = log.bind(provider=provider, provider_job_id=hint.provider_job_id)
    if found is None:
        logger.info("provider_hook_unknown_job", hinted=hint.status)
        return HookReceipt(hinted=False, detail="no job of this pipeline has this id")
    submitted, status = found
    if status in TERMINAL_STATUSES:
        return HookReceipt(hinted=False, detail="the job has already ended here")
    delivery = hint.delivery_id or uuid.uuid4().hex
    hinted = PollHinted(
        event_id=derive_event_id(submitted.request_id, "PollHinted", provider, delivery),
        request_id=submitted.request_id,
        causation_id=submitted.event_id,
        provider=hint.provider,
        provider_job_id=hint.provider_job_id,
        hinted_status=hint.status,
        submitted=submitted,
    )
    try:
        if deps.publish_hint is None:
            raise RuntimeError("no hint publisher")
        await deps.publish_hint(hinted)
    except Exception as exc:
        logger.warning("hint_publish_failed", error=type(exc).__name__)
        raise GatewayRefusal(
            503, "broker-unavailable", "the webhook could not be relayed; retry"
        ) from None
    logger.info("provider_hook_hinted", request_id=submitted.request_id, hinted=hint.status)
    return HookReceipt(hinted=True, detail="the job is checked now")


def _generation(row: Any) -> Generation:
    rid = str(row["request_id"])
    return Generation(
        request_id=rid,
        status=row["status"],
        progress=row["progress"],
        provider=row["provider"],
        prompt=row["prompt"],
        provider_job_id=row["sora_job_id"],
        placeholder=bool(row["placeholder"]),
        video_url=f"/v1/generations/{rid}/video" if row["output_image_url"] else None,
        error_message=row["error_message"],
        user_message=row["user_message"],
        retry_attempts=row["retry_attempts"],
        parent_request_id=row["parent_request_id"],
        failover_request_id=row["failover_request_id"],
        estimated_cost_usd=row["estimated_cost_usd"],
        cost_usd=row["cost_usd"],
        price_version=row["price_version"],
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
        terminal=row["status"] in TERMINAL_STATUSES,
    )


async def get_generation(deps: GatewayDeps, request_id: str) -> Generation | None:
    async with deps.engine.connect() as conn:
        row = (
            (await conn.execute(select(projects).where(projects.c.request_id == request_id)))
            .mappings()
            .first()
        )
    if row is None:
        # Accepted but not recorded yet: the gateway knows it was asked.
        earlier = await _remembered(deps, accepted_requests.c.request_id == request_id)
        if earlier is None:
            return None
        created = _aware(earlier["created_at"])
        return Generation(
            request_id=request_id,
            status="requested",
            created_at=created,
            updated_at=created,
            terminal=False,
        )
    return _generation(row)


def _encode_cursor(created_at: datetime, row_id: int) -> str:
    raw = json.dumps([_aware(created_at).isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        return _aware(datetime.fromisoformat(stamp)), int(row_id)
    except (ValueError, TypeError) as exc:
        raise GatewayRefusal(400, "bad-cursor", "cursor is not one this gateway gave out") from exc


async def list_generations(
    deps: GatewayDeps,
    *,
    status: str | None = None,
    provider: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> GenerationPage:
    """Newest first (created_at, then row id), keyset-paginated: pages never shift as rows
    arrive."""
    query = select(projects)
    if status is not None:
        query = query.where(projects.c.status == status)
    if provider is not None:
        query = query.where(projects.c.provider == provider)
    if since is not None:
        query = query.where(projects.c.created_at >= since)
    if cursor is not None:
        stamp, row_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                projects.c.created_at < stamp,
                and_(projects.c.created_at == stamp, projects.c.id < row_id),
            )
        )
    query = query.order_by(desc(projects.c.created_at), desc(projects.c.id)).limit(limit + 1)
    async with deps.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    page = rows[:limit]
    after = _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    return GenerationPage(items=[_generation(r) for r in page], next_cursor=after)


async def events_after(
    deps: GatewayDeps, request_id: str, after_seq: int, limit: int = 500
) -> list[TimelineEvent]:
    """The request's events from the log, in log order, after `after_seq`."""
    async with deps.engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    select(events)
                    .where(events.c.request_id == request_id, events.c.seq > after_seq)
                    .order_by(events.c.seq)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )
    return [
        TimelineEvent(
            seq=r["seq"],
            event_type=r["event_type"],
            topic=r["topic"],
            occurred_at=_aware(r["occurred_at"]),
            payload=dict(r["payload"]),
        )
        for r in rows
    ]


async def video_source(
    deps: GatewayDeps, request_id: str, seq: int | None = None
) -> Path | str | None:
    """Where the request's video is: a local file under the storage folder, an https URL, or
    None. With `seq`, the video that `VideoStored` event (say, the placeholder) announced."""
    async with deps.engine.connect() as conn:
        if seq is None:
            url = (
                await conn.execute(
                    select(projects.c.output_image_url).where(projects.c.request_id == request_id)
                )
            ).scalar_one_or_none()
        else:
            payload = (
                await conn.execute(
                    select(events.c.payload).where(
                        events.c.request_id == request_id,
                        events.c.seq == seq,
                        events.c.event_type == "VideoStored",
                    )
                )
            ).scalar_one_or_none()
            url = payload.get("storage_url") if payload else None
    if not url:
        return None
    parts = urlsplit(str(url))
    if parts.scheme == "https":
        return str(url)
    if parts.scheme == "file" and deps.storage_root is not None:
        return await asyncio.to_thread(_local_video, Path(unquote(parts.path)), deps.storage_root)
    return None


def _local_video(path: Path, root: Path) -> Path | None:
    # Only what the storage folder holds, whatever a record says.
    resolved = path.resolve()
    return resolved if resolved.is_relative_to(root) and resolved.is_file() else None


# --- operations (the dashboard's stages page) -------------------------------------------------


def _groups(deps: GatewayDeps) -> list[tuple[str, str, str]]:
    """(group id, stage, role) of every consumer group the stages use."""
    found = [(deps.group_id(stage), stage, "stage") for stage in STAGES]
    found.append((deps.group_id("submitter.slots"), "submitter", "quota slots"))
    found.append((deps.group_id("submitter.cancel"), "submitter", "cancels"))
    found.extend((deps.group_id(f"{s}.timers"), s, "timer relay") for s in TIMER_STAGES)
    return found


def _described(responses: Any) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for response in responses:
        for item in response.to_object()["groups"]:
            members = [f"{m['client_id']}@{m['client_host']}" for m in item["members"]]
            out[item["group"]] = (str(item["state"]) if not item["error_code"] else "?", members)
    return out


async def stages_overview(deps: GatewayDeps) -> StagesView:
    """Each group's state, members and lag per topic; timers pending; quota slots in use."""
    groups = _groups(deps)
    described: dict[str, tuple[str, list[str]]] = {}
    committed: dict[str, dict[Any, int]] = {}
    async with connected(deps.bootstrap_servers, "vidpipe-gateway") as (admin, reader):
        for group, _stage, _role in groups:
            # One group at a time: a group never used has no coordinator yet, and says so alone.
            try:
                described.update(_described(await admin.describe_consumer_groups([group])))
                offsets = await admin.list_consumer_group_offsets(group)
            except KafkaError as exc:
                described[group] = (f"unknown ({type(exc).__name__})", [])
                offsets = {}
            committed[group] = {tp: m.offset for tp, m in offsets.items() if m.offset >= 0}
        partitions = {tp for offsets in committed.values() for tp in offsets}
        ends = await reader.end_offsets(list(partitions)) if partitions else {}
    views: list[GroupView] = []
    timer_lag: Counter[str] = Counter()
    for group, stage, role in groups:
        lag: Counter[str] = Counter()
        for tp, offset in committed[group].items():
            lag[tp.topic.removeprefix(deps.topics.prefix)] += max(0, int(ends[tp]) - offset)
        state, members = described.get(group, ("Dead", []))
        views.append(
            GroupView(group=group, stage=stage, role=role, state=state, members=members, lag=lag)
        )
        if role == "timer relay":
            # What the relay has not handled yet on the stage's timer topics is what waits.
            timer_topic_names = {
                t.removeprefix(deps.topics.prefix) for t in timer_topics(deps.topics.timers(stage))
            }
            timer_lag[stage] += sum(n for t, n in lag.items() if t in timer_topic_names)
    async with deps.engine.connect() as conn:
        slots = (await conn.execute(select(provider_slots))).mappings().all()
    in_use = {str(r["provider"]): int(r["in_use"]) for r in slots}
    quota = [
        QuotaView(provider=name, in_use=in_use.get(name, 0), limit=deps.quota.get(name))
        for name in sorted(set(in_use) | set(deps.quota))
    ]
    return StagesView(
        groups=views, timers_pending={s: timer_lag[s] for s in TIMER_STAGES}, quota=quota
    )


async def dead_letter_summary(deps: GatewayDeps) -> DeadLetterSummary:
    listing = await list_dead_letters(deps.bootstrap_servers, deps.topics.deadletter)
    counts: Counter[tuple[str, str]] = Counter()
    last: dict[tuple[str, str], datetime] = {}
    for entry in listing.entries:
        assert entry.letter is not None
        key = (entry.letter.reason, entry.letter.stage)
        counts[key] += 1
        last[key] = max(last.get(key, entry.when), entry.when)
    reasons = [
        DeadLetterReason(reason=r, stage=s, count=n, last_at=last[(r, s)])
        for (r, s), n in counts.most_common()
    ]
    return DeadLetterSummary(total=listing.scanned, unreadable=listing.unreadable, reasons=reasons)


async def redrive(deps: GatewayDeps, ask: RedriveRequest) -> RedriveResult:
    """`vidpipe dlq redrive --reason R --stage S`, the same function."""
    done = await redrive_dead_letters(
        deps.bootstrap_servers,
        deps.topics.deadletter,
        reason=ask.reason,
        stage=ask.stage,
        dry_run=ask.dry_run,
    )
    log.info("dlq_redriven", matched=done.matched, sent=done.sent, dry_run=ask.dry_run)
    return RedriveResult(
        scanned=done.scanned,
        matched=done.matched,
        sent=done.sent,
        duplicates=done.duplicates,
        refused=done.refused,
        missing_topics=dict(done.missing_topics),
    )
