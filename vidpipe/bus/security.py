"""How every Kafka client vidpipe makes authenticates: TLS and SASL settings → client arguments.

One place turns the `VIDPIPE_KAFKA_SECURITY_PROTOCOL`, `..._SASL_*` and `..._SSL_*` settings into
what aiokafka's clients take (`security_protocol`, `sasl_mechanism`, `sasl_plain_username`,
`sasl_plain_password`, `ssl_context`) and what FastStream's `KafkaBroker` takes (a
`faststream.security` object). Every constructor of a Kafka client (the stage's broker, timer
relays, topic admin, the ops commands, `RequestPublisher`) asks `client_kwargs` here, so a
managed cluster (Confluent Cloud, MSK, Aiven, Redpanda Cloud) needs only the environment.

A client given no `KafkaSecurity` reads it from the environment: the secrets live there and
nowhere else. The password is a `SecretStr`: it is never in a repr, a log line or an error.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from aiokafka.errors import KafkaError
from pydantic import SecretStr

from vidpipe.errors import ConfigurationError

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

    from vidpipe.settings import Settings

__all__ = [
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "KafkaSecurity",
    "client_kwargs",
    "describe_auth_failure",
    "diagnose_refusal",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SECURITY_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)


@dataclass(frozen=True)
class KafkaSecurity:
    """The security of one Kafka connection. PLAINTEXT (the default) adds no client argument."""

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    # A CA bundle (PEM) to trust instead of the system's; None: the system's trust store.
    ssl_cafile: Path | None = None
    # A client certificate and key (PEM) for brokers that authenticate clients by TLS (mTLS).
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        # Errors name the setting, never a value: a misplaced password must not be echoed.
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ConfigurationError(
                f"VIDPIPE_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigurationError(
                    f"VIDPIPE_KAFKA_SECURITY_PROTOCOL={self.protocol} needs "
                    f"VIDPIPE_KAFKA_SASL_MECHANISM, one of {', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigurationError(
                    f"VIDPIPE_KAFKA_SECURITY_PROTOCOL={self.protocol} needs "
                    "VIDPIPE_KAFKA_SASL_USERNAME and VIDPIPE_KAFKA_SASL_PASSWORD"
                )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigurationError(
                "VIDPIPE_KAFKA_SSL_CERTFILE and VIDPIPE_KAFKA_SSL_KEYFILE go together"
            )
        for name, path in (
            ("VIDPIPE_KAFKA_SSL_CAFILE", self.ssl_cafile),
            ("VIDPIPE_KAFKA_SSL_CERTFILE", self.ssl_certfile),
            ("VIDPIPE_KAFKA_SSL_KEYFILE", self.ssl_keyfile),
        ):
            if path is not None and not self.uses_tls:
                raise ConfigurationError(
                    f"{name} is set but VIDPIPE_KAFKA_SECURITY_PROTOCOL={self.protocol} "
                    "does not use TLS (SSL or SASL_SSL)"
                )
            if path is not None and not path.is_file():
                raise ConfigurationError(f"{name} names no readable file: {path}")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in {"SSL", "SASL_SSL"}

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        return cls(
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
            ssl_key_password=settings.kafka_ssl_key_password,
            ssl_check_hostname=settings.kafka_ssl_check_hostname,
        )

    @classmethod
    def from_env(cls) -> KafkaSecurity:
        """The security the VIDPIPE_KAFKA_* environment asks for."""
        from vidpipe.settings import Settings

        return cls.from_settings(Settings())

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (the CA file's roots, or the system's), or None without TLS."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile is not None else None
        )
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile), password)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        if self.protocol == "PLAINTEXT":
            return {}
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # checked in __post_init__
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return kwargs

    def faststream_security(self) -> BaseSecurity | None:
        """The same for FastStream's KafkaBroker (its `security=` argument)."""
        from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

        if self.protocol == "PLAINTEXT":
            return None
        context = self.ssl_context()
        if not self.uses_sasl:
            return BaseSecurity(ssl_context=context, use_ssl=True)
        assert self.sasl_username is not None and self.sasl_password is not None
        kind = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }[self.sasl_mechanism or "PLAIN"]
        return kind(
            username=self.sasl_username,
            password=self.sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=self.uses_tls,
        )


def client_kwargs(security: KafkaSecurity | None) -> dict[str, Any]:
    """What a Kafka client constructor adds for `security` (None: from the environment)."""
    return (security if security is not None else KafkaSecurity.from_env()).client_kwargs()


def describe_auth_failure(exc: BaseException, bootstrap_servers: str) -> str | None:
    """A one-line reason when `exc` is Kafka refusing the credentials or the TLS handshake.

    None for anything else. The line names the broker and what failed, never a credential.
    """
    from aiokafka.errors import (
        AuthenticationFailedError,
        AuthenticationMethodNotSupported,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    refused = (
        AuthenticationFailedError,
        AuthenticationMethodNotSupported,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )
    if isinstance(exc, refused):
        return (
            f"Kafka at {bootstrap_servers} refused the SASL credentials "
            f"({type(exc).__name__}); check VIDPIPE_KAFKA_SASL_MECHANISM, "
            "VIDPIPE_KAFKA_SASL_USERNAME and VIDPIPE_KAFKA_SASL_PASSWORD"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS with Kafka at {bootstrap_servers} failed ({exc.reason or type(exc).__name__}); "
            "check VIDPIPE_KAFKA_SSL_CAFILE and VIDPIPE_KAFKA_SECURITY_PROTOCOL"
        )
    return None


async def diagnose_refusal(
    bootstrap_servers: str, security: KafkaSecurity | None, timeout_s: float = 10.0
) -> str | None:
    """Why a client could not bootstrap, when the broker refused its credentials or its TLS.

    aiokafka logs the real cause and raises only "Unable to bootstrap", so one bare connection
    to the first bootstrap server (with the same security) finds the cause again. None when that
    connection succeeds or fails for another reason (down, unreachable: worth waiting for).
    """
    from aiokafka.conn import create_conn

    security = security if security is not None else KafkaSecurity.from_env()
    if security.protocol == "PLAINTEXT":
        return None
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host.strip("[]"),
                int(port),
                request_timeout_ms=int(timeout_s * 1000),
                **security.client_kwargs(),
            ),
            timeout_s,
        )
    except (KafkaError, OSError, TimeoutError, ValueError) as exc:
        return describe_auth_failure(exc, bootstrap_servers)
    conn.close()
    return None
