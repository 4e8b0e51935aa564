"""Configuration, from the environment only (prefix VIDPIPE_; a few standard provider names too).

Secrets are `SecretStr`: they print as '**********' in reprs, logs and tracebacks. The repr masks
every URL's user name, password and query string (the database URL's password above all), and
validation errors never quote the value they refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import FallbackName
from schemas.topics import DEFAULT_PREFIX, Topics
from vidpipe.logs import redact
from vidpipe.policy.budgets import Budget

if TYPE_CHECKING:
    from vidpipe.policy.prices import PriceTable

__all__ = ["Settings"]


class Settings(BaseSettings):
    # Errors name the field, never its value: a refused database URL may hold a password.
    model_config = SettingsConfigDict(
        env_prefix="VIDPIPE_", extra="ignore", hide_input_in_errors=True
    )

    # Kafka's bootstrap servers ("host:port[,host:port]"). Unset: the broker a running dev stack
    # (`vidpipe up`) recorded in `state_dir`, else an error (vidpipe.bus.address has the rule).
    kafka_bootstrap: str | None = None
    # How every Kafka client authenticates (vidpipe.bus.security; docs/kafka.md): a managed
    # cluster wants SASL_SSL with a mechanism, user name and password; SSL alone for TLS (a
    # client certificate and key when the broker asks for one). No CA file: the system's roots.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    topic_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9._-]*$")
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    topic_replication_factor: int = Field(default=1, ge=1)
    # min.insync.replicas of the topics vidpipe creates (None: the broker's default). With
    # acks=all, 2 of a replication factor of 3 keeps writing through the loss of one broker.
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    # Per topic by suffix, as the partitions overrides: '{"generation.requested": 5}'.
    topic_replication_overrides: dict[str, int] = Field(default_factory=dict)
    topic_min_insync_overrides: dict[str, int] = Field(default_factory=dict)
    # Per-topic partitions by suffix: VIDPIPE_TOPIC_PARTITIONS_OVERRIDES='{"poller.due": 12}'.
    # More partitions on a stage's input topics let more replicas of that stage share the work.
    topic_partitions_overrides: dict[str, int] = Field(default_factory=dict)

    # Records: SQLite by default; any postgresql:// URL (Supabase's included) works too.
    database_url: str = "sqlite:///.vidpipe/vidpipe.db"
    # A transaction-mode pooler (Supabase's on port 6543, PgBouncer) is in front of the
    # database: no server-side prepared statements. Unset: as the URL says (port 6543 or
    # ?pgbouncer=true); true adds ?pgbouncer=true to database_url (docs/supabase.md).
    database_pooler: bool | None = None
    # Supabase Storage (docs/supabase.md): public URLs for a public bucket, else signed ones
    # valid this long; videos above the TUS threshold (Supabase's advice: 6 MB) upload resumably.
    supabase_public_bucket: bool = True
    supabase_signed_url_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    supabase_tus_threshold_bytes: int = Field(default=6 * 1024 * 1024, ge=0)
    # Consumers per per-message subscriber (the fallbacks) in one stage process, each its own
    # member of the stage's group with its own partitions, handled side by side: a stage that
    # mostly waits on round trips carries more per process. 1: one, in order.
    consumer_workers: int = Field(default=1, ge=1, le=64)
    # The submitter, poller and fetcher take what their consumer fetched (up to
    # consumer_batch_max records) and handle up to handler_concurrency of its requests side by
    # side (one request's messages in order), committing once the batch is done
    # (vidpipe.bus.batches). handler_concurrency 1: one message at a time, as consumer_workers.
    handler_concurrency: int = Field(default=16, ge=1, le=256)
    consumer_batch_max: int = Field(default=64, ge=1, le=10_000)
    # How long a stage's producer waits to gather records bound for one partition into one
    # produce request (aiokafka's linger_ms). A batch's events are published side by side, so a
    # few milliseconds turn many small produce requests into a few, which is most of what the
    # broker spends per event; 0 sends each record at once.
    kafka_linger_ms: int = Field(default=0, ge=0, le=1000)
    # The recorder (and `replay records`) writes up to this many events per transaction; a
    # batch is what the consumer already holds, so a quiet stream is never held back for it.
    # Past about 2,000 a bigger batch no longer pays on SQLite (docs/performance.md).
    records_batch_max: int = Field(default=2000, ge=1, le=10_000)
    # Storage: a local folder by default (file://PATH); supabase://BUCKET for Supabase Storage.
    storage_url: str = "file://.vidpipe/videos"
    # Where the dev stack keeps its state (broker data, pids, logs, the broker address).
    state_dir: Path = Path(".vidpipe")

    default_provider: str = "azure-sora"
    # Status checks: the first this long after submission; then at least poll_interval_s apart
    # (Microsoft's samples use 5 s) or what the provider asks, and at least poll_age_share of
    # the job's age, at most poll_max_interval_s (vidpipe.policy.polling.poll_delay).
    poll_first_s: float = Field(default=1.0, gt=0)
    poll_interval_s: float = Field(default=5.0, gt=0)
    poll_max_interval_s: float = Field(default=60.0, gt=0)
    poll_age_share: float = Field(default=0.1, ge=0, le=1)
    # How long an over-quota request waits before the submitter looks again.
    quota_wait_s: float = Field(default=5.0, gt=0)
    # Costs and budgets (docs/costs.md): a TOML price table replacing the built-in one; the
    # budgets as JSON ('[{"period":"day","limit_usd":50,"key":"tenant"}]') or a JSON file (both
    # count); how long a request over a `wait` budget waits before it is checked again.
    prices_file: Path | None = None
    budgets: list[Budget] = Field(default_factory=list)
    budgets_file: Path | None = None
    budget_wait_s: float = Field(default=60.0, gt=0)
    # Transient download errors the fetcher retries in place before reporting the download missing.
    download_attempts: int = Field(default=3, ge=1, le=10)
    # One video's whole download (every attempt) must finish within this; a hit is transient.
    download_deadline_s: float = Field(default=600.0, gt=0)
    max_video_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_input_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    # Only for local development against the emulator: lets input-image URLs reach loopback.
    allow_private_urls: bool = False
    http_timeout_s: float = Field(default=30.0, gt=0)

    # Fallbacks when the video cannot be downloaded (used when a request's `fallbacks` is null).
    default_fallbacks: str = "placeholder,notify,retry"
    # Redownloader: first retry after this long, doubling up to the cap, until expires_at.
    redownload_initial_s: float = Field(default=60.0, gt=0)
    redownload_max_interval_s: float = Field(default=3600.0, gt=0)
    redownload_max_attempts: int = Field(default=48, ge=1)
    # Failover: the provider a failed-over request goes to, and when ("immediate": as soon as the
    # download is unavailable; "after_retry": when the redownloader gives up).
    failover_provider: str | None = None
    failover_when: str = Field(default="after_retry", pattern="^(immediate|after_retry)$")
    # The ordered providers to fail over to ("gemini,fal"); wins over failover_provider, which
    # stays a chain of one. A request's own `failover_chain` wins over both.
    failover_chain: str = Field(default="", pattern=r"^[a-z0-9, -]*$")
    # Notifier: Standard-Webhooks secret ("whsec_" + base64), an optional CA bundle for callbacks.
    webhook_secret: SecretStr | None = None
    webhook_ca_file: Path | None = None
    webhook_attempts: int = Field(default=5, ge=1, le=20)

    # SIGTERM: how long a stage lets in-flight handlers finish before it abandons them uncommitted.
    shutdown_timeout_s: float = Field(default=30.0, gt=0)

    log_level: str = "INFO"
    log_format: str = Field(default="console", pattern="^(console|json)$")
    metrics_port: int | None = None
    # How often a stage serving metrics samples its consumer lag, timers pending, and the
    # records' / ledger's gauges (each sample is a few admin or SQL queries).
    metrics_interval_s: float = Field(default=15.0, gt=0)

    # The failure model (docs/guarantees.md): deliveries a message gets when it fails for a reason
    # of its own before it is dead-lettered; the back-off between deliveries (doubling, capped;
    # world errors wait the same way, without bound); the largest dead letter written (the
    # broker's default limit is 1 MiB: bigger values are cut, with their size and SHA-256);
    # how often /readyz re-checks the broker and database.
    handler_max_attempts: int = Field(default=5, ge=1, le=100)
    handler_backoff_first_s: float = Field(default=0.2, gt=0)
    handler_backoff_max_s: float = Field(default=10.0, gt=0)
    deadletter_max_bytes: int = Field(default=900_000, ge=10_000)
    health_interval_s: float = Field(default=5.0, gt=0)

    # The HTTP gateway (`vidpipe gateway`, services/gateway). Keys are kept hashed: a comma list
    # of `name:sha256hex` (`vidpipe gateway --hash-key` prints one), never the keys themselves.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_api_keys: SecretStr | None = None
    # Per key: a sustained rate and a burst (token bucket, per gateway process).
    gateway_rate_per_minute: float = Field(default=600.0, gt=0)
    gateway_rate_burst: int = Field(default=60, ge=1)
    gateway_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # An SSE stream ends after this long even if the request is not terminal (the client
    # reconnects with Last-Event-ID), so a stuck request never pins a connection for ever.
    gateway_sse_max_s: float = Field(default=600.0, gt=0)

    @field_validator("default_fallbacks")
    @classmethod
    def _known_fallbacks(cls, value: str) -> str:
        from vidpipe.policy.fallbacks import parse_fallbacks

        parse_fallbacks(value)
        return value

    @property
    def fallback_default(self) -> list[FallbackName]:
        from vidpipe.policy.fallbacks import parse_fallbacks

        return parse_fallbacks(self.default_fallbacks)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.split("+")[0]
        if scheme not in {"sqlite", "postgres", "postgresql"}:
            raise ValueError("database_url must start with sqlite:// or postgresql://")
        return value

    @model_validator(mode="after")
    def _pooler_in_url(self) -> Settings:
        # Carried in the URL, so every engine opened from the settings is pooler-safe.
        postgres = urlsplit(self.database_url).scheme.split("+")[0] in {"postgres", "postgresql"}
        if self.database_pooler and postgres and "pgbouncer=" not in self.database_url:
            joiner = "&" if "?" in self.database_url else "?"
            self.database_url = f"{self.database_url}{joiner}pgbouncer=true"
        return self

    @field_validator("storage_url")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"file", "supabase"}:
            raise ValueError("storage_url must start with file:// or supabase://")
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr(), str() and rich all read this: every text value goes out redacted.
        for name, value in super().__repr_args__():
            yield name, redact(value) if isinstance(value, str) else value

    @cached_property
    def price_table(self) -> PriceTable:
        """The built-in prices, or `prices_file`'s (a bad file is a ConfigurationError)."""
        from vidpipe.policy.prices import DEFAULT_PRICES, parse_price_table

        if self.prices_file is None:
            return DEFAULT_PRICES
        import tomllib

        from vidpipe.errors import ConfigurationError

        try:
            return parse_price_table(tomllib.loads(self.prices_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"VIDPIPE_PRICES_FILE {self.prices_file}: {type(exc).__name__}: {exc}"
            ) from None

    @cached_property
    def all_budgets(self) -> list[Budget]:
        """`budgets` and those of `budgets_file` (a JSON list of the same objects)."""
        if self.budgets_file is None:
            return list(self.budgets)
        from pydantic import TypeAdapter, ValidationError

        from vidpipe.errors import ConfigurationError

        try:
            text = self.budgets_file.read_text(encoding="utf-8")
            return [*self.budgets, *TypeAdapter(list[Budget]).validate_json(text)]
        except (OSError, ValidationError) as exc:
            raise ConfigurationError(
                f"VIDPIPE_BUDGETS_FILE {self.budgets_file}: {type(exc).__name__}"
            ) from None

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def database_url_safe(self) -> str:
        """The database URL with any password masked, for logs and screens."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)

    def partitions_for(self, topic: str) -> int:
        suffix = topic.removeprefix(self.topic_prefix)
        return self.topic_partitions_overrides.get(suffix, self.topic_partitions)

    def replication_for(self, topic: str) -> int:
        suffix = topic.removeprefix(self.topic_prefix)
        return self.topic_replication_overrides.get(suffix, self.topic_replication_factor)

    def min_insync_for(self, topic: str) -> int | None:
        suffix = topic.removeprefix(self.topic_prefix)
        return self.topic_min_insync_overrides.get(suffix, self.topic_min_insync_replicas)

    def group_id(self, stage: str) -> str:
        """Each stage is one consumer group, so each scales and replays on its own."""
        return f"{self.topic_prefix}{stage}"
