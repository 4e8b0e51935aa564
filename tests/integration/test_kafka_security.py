"""Every Kafka client of vidpipe over TLS and SASL, against a real broker that demands both.

The broker (`LocalKafka` with a SASL_SSL listener) has SCRAM users made at format time and a
server certificate from a throwaway CA the test makes (trustme); the clients trust only that CA.
Each kind of client connects and works through the VIDPIPE_KAFKA_* environment alone: stage
processes (and their timer relays) carry requests to `stored`, topic admin creates topics with
min.insync.replicas, an ops command reads offsets and dead letters, `RequestPublisher`
publishes. A wrong password fails in one line that names no secret, and the password is in no
log line of any process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from services.registry import CORE_STAGES
from tests.e2e.harness import close_pipeline, make_request, open_pipeline
from vidpipe.bus.admin import BrokerNotReadyError, ensure_all_topics, wait_for_broker
from vidpipe.bus.security import KafkaSecurity
from vidpipe.bus.upstream import RequestPublisher
from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.kafka import LocalKafka, SaslSslListener
from vidpipe.ops.dlq import list_dead_letters
from vidpipe.ops.offsets import committed_offsets, end_offsets
from vidpipe.settings import Settings

pytestmark = pytest.mark.kafka

USER = "vidpipe-app"
# Random per run: a fixed string could appear in a log by chance and hide a leak.
PASSWORD = f"pw-{secrets.token_hex(12)}"
EMULATOR_KEY = "security-emulator-key-4321"


class SecureBroker:
    def __init__(self, kafka: LocalKafka, cafile: Path) -> None:
        self.kafka = kafka
        self.cafile = cafile

    @property
    def bootstrap(self) -> str:
        return self.kafka.sasl_ssl_bootstrap_servers

    def env(self, mechanism: str = "SCRAM-SHA-512", password: str = PASSWORD) -> dict[str, str]:
        return {
            "VIDPIPE_KAFKA_BOOTSTRAP": self.bootstrap,
            "VIDPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "VIDPIPE_KAFKA_SASL_MECHANISM": mechanism,
            "VIDPIPE_KAFKA_SASL_USERNAME": USER,
            "VIDPIPE_KAFKA_SASL_PASSWORD": password,
            "VIDPIPE_KAFKA_SSL_CAFILE": str(self.cafile),
            "VIDPIPE_TOPIC_MIN_INSYNC_REPLICAS": "1",
        }


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    folder = tmp_path_factory.mktemp("kafka-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    # Kafka's PEM key store wants PKCS#8; trustme writes the traditional OpenSSL form.
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    keystore = folder / "broker.pem"
    keystore.write_bytes(pkcs8 + b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cafile = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    kafka = LocalKafka(
        sasl_ssl=SaslSslListener(keystore, {USER: PASSWORD}),
        # Above the replication factor (1): a topic vidpipe does not configure cannot take
        # acks=all writes, so the tests see that VIDPIPE_TOPIC_MIN_INSYNC_* reach every topic.
        extra_properties={"min.insync.replicas": "2"},
    )
    kafka.start()
    try:
        yield SecureBroker(kafka, cafile)
    finally:
        kafka.stop()


@pytest.fixture
def secure_env(secure_broker: SecureBroker, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment as a stage's: every client without arguments uses it."""
    env = secure_broker.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _security(broker: SecureBroker, mechanism: str, password: str = PASSWORD) -> KafkaSecurity:
    return KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username=USER,
        sasl_password=SecretStr(password),
        ssl_cafile=broker.cafile,
    )


def _vidpipe(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidpipe", *args],
        env={**os.environ, **env, "COLUMNS": "200"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_each_mechanism_authenticates_over_tls(
    secure_broker: SecureBroker, mechanism: str
) -> None:
    cluster = await wait_for_broker(
        secure_broker.bootstrap, 30, security=_security(secure_broker, mechanism)
    )
    assert cluster["brokers"], cluster


async def test_the_plaintext_client_is_refused_by_the_secure_listener(
    secure_broker: SecureBroker,
) -> None:
    # Without the security arguments nothing gets through: the test above proves something.
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_broker.bootstrap, request_timeout_ms=3000)
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's own bootstrap failure
        await asyncio.wait_for(admin.start(), 10)
    await admin.close()


async def test_stages_timer_relays_admin_ops_and_the_client_library_work_over_sasl_ssl(
    secure_broker: SecureBroker,
    secure_env: dict[str, str],
    test_database_url: str,
    unique_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Topic admin with a per-topic min.insync.replicas: the broker's default is 2, so a 1 on
    # generation.requested can only come from vidpipe (topics of their own, never written).
    admin_settings = Settings(
        topic_prefix=f"{unique_prefix}admin.",
        topic_min_insync_replicas=None,
        topic_min_insync_overrides={"generation.requested": 1},
    )
    report = await ensure_all_topics(admin_settings, secure_broker.bootstrap)
    assert set(report.values()) == {"created"}, report
    admin = AIOKafkaAdminClient(
        bootstrap_servers=secure_broker.bootstrap,
        **KafkaSecurity.from_settings(admin_settings).client_kwargs(),
    )
    await admin.start()
    try:
        described = await admin.describe_configs(
            [
                _topic_resource(admin_settings.topics.generation_requested),
                _topic_resource(admin_settings.topics.deadletter),
            ]
        )
    finally:
        await admin.close()
    min_insync = {
        resource["resource_name"]: next(
            # The field is `config_names` in the DescribeConfigs versions aiokafka uses.
            entry["config_value"]
            for entry in resource["config_entries"]
            if entry.get("config_names", entry.get("config_name")) == "min.insync.replicas"
        )
        for response in described
        for resource in response.to_object()["resources"]
    }
    assert min_insync == {
        admin_settings.topics.generation_requested: "1",
        admin_settings.topics.deadletter: "2",
    }
    settings = Settings(topic_prefix=unique_prefix)

    with EmulatorThread(EmulatorConfig(api_key=EMULATOR_KEY, time_scale=10.0)) as emulator:
        pipeline = await open_pipeline(
            bootstrap_servers=secure_broker.bootstrap,
            database_url=test_database_url,
            prefix=unique_prefix,
            tmp_path=tmp_path,
            provider_env={
                "VIDPIPE_AZURE_ENDPOINT": emulator.azure_endpoint,
                "VIDPIPE_AZURE_API_KEY": EMULATOR_KEY,
                "VIDPIPE_OPENAI_BASE_URL": emulator.openai_base_url,
                "VIDPIPE_OPENAI_API_KEY": EMULATOR_KEY,
            },
            extra_env={**secure_env, "VIDPIPE_LOG_LEVEL": "DEBUG"},
        )
        try:
            for stage in CORE_STAGES:
                pipeline.start(stage)
            for stage in CORE_STAGES:
                await pipeline.wait_for_group(stage, 1, timeout_s=90)
            requests = [make_request(unique_prefix, f"tls{i}", seconds=4) for i in range(3)]
            # The client library, configured by the environment alone.
            await pipeline.publish(*requests)
            views = await pipeline.wait_for([r.request_id for r in requests], timeout_s=120)
            assert {v.status for v in views.values()} == {"stored"}, views
            # Stored means the poller's timers fired: its timer relay works over SASL_SSL too.
            ops_groups = await committed_offsets(
                secure_broker.bootstrap, settings.group_id("poller.timers")
            )
            assert ops_groups, "the poller's timer relay committed nothing"
            ends = await end_offsets(
                secure_broker.bootstrap, [settings.topics.generation_requested]
            )
            assert sum(ends.values()) == len(requests)
            letters = await list_dead_letters(secure_broker.bootstrap, settings.topics.deadletter)
            assert letters.entries == [] and letters.unreadable == 0
            stage_logs = "\n".join(
                p.log_path.read_text(errors="replace") for p in pipeline.stack.processes.values()
            )
        finally:
            await close_pipeline(pipeline)
    # The stages logged at DEBUG (every message they handled), and not once the password.
    assert "Processed" in stage_logs
    assert PASSWORD not in stage_logs
    assert PASSWORD not in caplog.text

    # An ops command from the CLI, over the same environment.
    listed = _vidpipe(
        "dlq", "list", env={**secure_env, "VIDPIPE_TOPIC_PREFIX": unique_prefix}, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    assert PASSWORD not in listed.stdout + listed.stderr


async def test_a_wrong_password_fails_in_one_line_without_the_secret(
    secure_broker: SecureBroker, unique_prefix: str, tmp_path: Path
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    env = {**secure_broker.env(password=wrong), "VIDPIPE_TOPIC_PREFIX": unique_prefix}
    result = _vidpipe("topics", "ensure", env=env, cwd=tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "refused the SASL credentials" in errors[0]
    assert "Traceback" not in result.stderr
    assert wrong not in result.stdout + result.stderr

    submitted = _vidpipe("submit", "a fox", env=env, cwd=tmp_path)
    assert submitted.returncode != 0
    # One error line of vidpipe's (aiokafka also logs its own "Unable connect" line, no secret).
    failed = [line for line in submitted.stderr.splitlines() if line.startswith("error:")]
    assert len(failed) == 1 and "refused the SASL credentials" in failed[0], submitted.stderr
    assert "Traceback" not in submitted.stderr
    assert wrong not in submitted.stdout + submitted.stderr

    with pytest.raises(BrokerNotReadyError) as refused:
        async with RequestPublisher(
            secure_broker.bootstrap,
            topic_prefix=unique_prefix,
            security=_security(secure_broker, "SCRAM-SHA-256", wrong),
        ):
            pass
    assert "refused the SASL credentials" in str(refused.value)
    assert wrong not in str(refused.value) and "\n" not in str(refused.value)

    # A readiness wait gives up at once with the same line, instead of waiting out its deadline.
    with pytest.raises(BrokerNotReadyError, match="refused the SASL credentials"):
        await wait_for_broker(
            secure_broker.bootstrap, 60, security=_security(secure_broker, "PLAIN", wrong)
        )


def test_secrets_stay_out_of_reprs(secure_broker: SecureBroker) -> None:
    security = _security(secure_broker, "SCRAM-SHA-512")
    settings = Settings(kafka_sasl_password=SecretStr(PASSWORD))
    assert PASSWORD not in repr(security) + str(security) + repr(settings)


def _topic_resource(name: str) -> ConfigResource:
    return ConfigResource(ConfigResourceType.TOPIC, name)


def test_incomplete_security_settings_are_refused_by_name_not_value(tmp_path: Path) -> None:
    from vidpipe.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="VIDPIPE_KAFKA_SASL_MECHANISM"):
        KafkaSecurity(protocol="SASL_SSL", sasl_username=USER, sasl_password=SecretStr(PASSWORD))
    with pytest.raises(ConfigurationError, match="VIDPIPE_KAFKA_SASL_USERNAME") as missing:
        KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
    assert PASSWORD not in str(missing.value)
    with pytest.raises(ConfigurationError, match="does not use TLS"):
        KafkaSecurity(ssl_cafile=tmp_path)
    with pytest.raises(ConfigurationError, match="names no readable file"):
        KafkaSecurity(protocol="SSL", ssl_cafile=tmp_path / "absent.pem")
    # PLAINTEXT adds nothing: a default client is built exactly as before.
    assert KafkaSecurity().client_kwargs() == {}
    assert KafkaSecurity().faststream_security() is None
