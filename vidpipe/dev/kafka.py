"""A single-node Apache Kafka (KRaft, broker + controller in one JVM) from Maven Central jars.

The last resort of the dev stack when neither VIDPIPE_KAFKA_BOOTSTRAP nor a Docker engine is
available: the jars come from `jars.py`, the storage is formatted with `kafka.tools.StorageTool`,
and `kafka.Kafka` runs as a child process on free loopback ports. Readiness is an admin call that
gets an answer, never a sleep.

With `keep=True` and a `data_dir` (what `vidpipe up` does, in `.vidpipe/kafka/`) the broker is
durable: the storage is formatted once with a cluster id kept in `cluster.id`, later starts reuse
the log (and the last ports when still free), and a broker left running by a killed owner
(`broker.pid`) is stopped before the next one starts on the same data.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from vidpipe.bus.admin import BrokerNotReadyError, wait_for_broker
from vidpipe.bus.security import KafkaSecurity
from vidpipe.cli.processes import stop_process_group
from vidpipe.dev.jars import DEFAULT_KAFKA_VERSION, fetch_kafka_jars, kafka_major
from vidpipe.dev.processes import (
    ServerProcess,
    death_signal_preexec,
    free_ports,
    log_tail,
    run_coro_sync,
)
from vidpipe.errors import KafkaStartError

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "SCRAM_MECHANISMS",
    "LocalKafka",
    "LocalKafkaCluster",
    "SaslSslListener",
    "java_available",
    "new_cluster_id",
]

log = logging.getLogger(__name__)

# Light JVM for a 2-core dev box or CI runner: small heap, serial GC (no parallel GC threads),
# and fewer compiler threads. Overridable per instance or with VIDPIPE_KAFKA_JVM_OPTS.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:CICompilerCount=2",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# StorageTool runs for a second or two: interpreting + C1 only starts fastest.
_TOOL_JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto")


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Like Kafka's own Uuid.randomUuid(), avoid a leading '-' that a CLI parser would read as
    an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


SCRAM_MECHANISMS: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class SaslSslListener:
    """A second listener that asks for TLS and SASL, as a managed cluster does.

    `keystore_pem` holds the broker's private key (unencrypted PKCS#8) and its certificate
    chain; `users` (name → password) become SCRAM credentials of both mechanisms at format
    time (kafka-storage's --add-scram), and PLAIN accepts the same pairs. The listener is
    `sasl_ssl_bootstrap_servers`; the PLAINTEXT one stays for the broker's own traffic.
    """

    keystore_pem: Path
    users: Mapping[str, str] = field(repr=False)


# Files of a kept data_dir, next to the broker's own `data/` and `server.log`.
CLUSTER_ID_FILE = "cluster.id"
PORTS_FILE = "ports.json"
PID_FILE = "broker.pid"


class LocalKafka(ServerProcess):
    """A single-node KRaft Kafka on loopback ports, throwaway or kept.

    Usage: `with LocalKafka() as kafka: use(kafka.bootstrap)` or `start()` / `stop()`.
    Everything (config, metadata log, data, server log) is in `data_dir`: a temporary one is
    removed on stop; a given one is kept, and with `keep=True` reused by the next start.
    """

    def __init__(
        self,
        kafka_version: str = DEFAULT_KAFKA_VERSION,
        *,
        data_dir: Path | None = None,
        keep: bool = False,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 20.0,
        jvm_options: Sequence[str] | None = None,
        num_partitions: int = 3,
        extra_properties: dict[str, str] | None = None,
        sasl_ssl: SaslSslListener | None = None,
        host: str = "127.0.0.1",
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.kafka_version = kafka_version
        self.sasl_ssl = sasl_ssl
        # The address every listener binds and advertises, and what the JVM runs under (e.g.
        # `ip netns exec NS`): LocalKafkaCluster puts each node on an address of its own.
        self.host = host
        self.command_prefix = tuple(command_prefix)
        self._sasl_ssl_port: int | None = None
        self.keep = keep
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        env_opts = os.environ.get("VIDPIPE_KAFKA_JVM_OPTS")
        self.jvm_options: list[str] = list(
            jvm_options
            if jvm_options is not None
            else (env_opts.split() if env_opts else DEFAULT_JVM_OPTIONS)
        )
        self.num_partitions = num_partitions
        self.extra_properties = dict(extra_properties or {})
        self._given_data_dir = data_dir
        self.data_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.controller_port: int | None = None
        self.startup_seconds: float | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """The PLAINTEXT listener as "HOST:PORT"; only valid while started."""
        if self._port is None:
            raise RuntimeError("LocalKafka is not started")
        return f"{self.host}:{self._port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """The SASL_SSL listener as "localhost:PORT" (the name a test CA signs); while started."""
        if self._sasl_ssl_port is None:
            raise RuntimeError("LocalKafka is not started with a SASL_SSL listener")
        return f"localhost:{self._sasl_ssl_port}"

    @property
    def log_file(self) -> Path:
        if self.data_dir is None:
            raise RuntimeError("LocalKafka is not started")
        return self.data_dir / "server.log"

    def start(self) -> Self:
        """Fetch jars if needed, format storage, launch the broker, wait until it answers."""
        if self._proc is not None:
            return self
        java = _find_java()
        libs = fetch_kafka_jars(self.kafka_version)
        began = time.monotonic()
        if self._given_data_dir is not None:
            self._given_data_dir.mkdir(parents=True, exist_ok=True)
            # Absolute: the JVM runs in it and reads its config files by these paths.
            self.data_dir = self._given_data_dir.resolve()
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="vidpipe-kafka-"))
        atexit.register(self.stop)
        try:
            if self.keep:
                self._stop_stale_broker()
            for attempt in range(3):
                self._port, self.controller_port = self._pick_ports(reuse=attempt == 0)
                if self.sasl_ssl is not None:
                    self._sasl_ssl_port = free_ports(1)[0]
                config = self._write_config()
                if attempt == 0 and not self.formatted:
                    self._format_storage(java, libs, config)
                self._launch(java, libs, config)
                try:
                    run_coro_sync(
                        lambda: wait_for_broker(
                            self.bootstrap_servers,
                            self.start_timeout_s,
                            give_up=self._exit_reason,
                            # The PLAINTEXT listener, whatever VIDPIPE_KAFKA_* says.
                            security=KafkaSecurity(),
                        )
                    )
                    break
                except BrokerNotReadyError as exc:
                    tail = log_tail(self.log_file)
                    self._kill()
                    if "Address already in use" in tail and attempt < 2:
                        log.warning("Kafka port was taken between pick and bind; retrying")
                        continue
                    raise KafkaStartError(
                        f"{exc}\n--- tail of {self.log_file} ---\n{tail}"
                    ) from exc
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        if self.keep:
            (self.data_dir / PORTS_FILE).write_text(
                json.dumps({"broker": self._port, "controller": self.controller_port})
            )
        log.info(
            "local Kafka %s ready at %s in %.1f s (data in %s)",
            self.kafka_version,
            self.bootstrap_servers,
            self.startup_seconds,
            self.data_dir,
        )
        return self

    @property
    def formatted(self) -> bool:
        """True once the storage in `data_dir` is formatted (Kafka's meta.properties exists)."""
        return self.data_dir is not None and (self.data_dir / "data" / "meta.properties").exists()

    def stop(self) -> None:
        """SIGTERM the broker's process group, SIGKILL after `stop_timeout_s`; clean up."""
        atexit.unregister(self.stop)
        self._kill()
        if self.data_dir is not None:
            (self.data_dir / PID_FILE).unlink(missing_ok=True)
        if self.data_dir is not None and not self.keep and self._given_data_dir is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir = None if not self.keep else self.data_dir
        self._port = None
        self._sasl_ssl_port = None

    # -- internals ----------------------------------------------------------------------

    def _pick_ports(self, *, reuse: bool) -> tuple[int, int]:
        """The ports of the last run when kept and both still free, else two free ones."""
        assert self.data_dir is not None
        if reuse and self.keep:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                last = json.loads((self.data_dir / PORTS_FILE).read_text())
                wanted = (int(last["broker"]), int(last["controller"]))
                if all(_port_free(port) for port in wanted):
                    return wanted
        broker, controller = free_ports(2)
        return broker, controller

    def _stop_stale_broker(self) -> None:
        """Stop a broker a killed owner left on this data_dir: two JVMs cannot share a log."""
        assert self.data_dir is not None
        pid_file = self.data_dir / PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        # Only our JVM: the pid may have been reused by an unrelated process since.
        if _cmdline(pid).find(str(self.data_dir / "server.properties")) >= 0:
            log.warning("stopping a stale broker (pid %s) left on %s", pid, self.data_dir)
            _stop_pid_group(pid, self.stop_timeout_s)
        pid_file.unlink(missing_ok=True)

    def _cluster_id(self) -> str:
        """The cluster id this data_dir was (or is about to be) formatted with, kept on disk."""
        assert self.data_dir is not None
        path = self.data_dir / CLUSTER_ID_FILE
        if path.exists() and (kept := path.read_text().strip()):
            return kept
        cluster_id = new_cluster_id()
        path.write_text(cluster_id + "\n")
        return cluster_id

    def _exit_reason(self) -> str | None:
        if self._proc is None:
            return "not started"
        code = self._proc.poll()
        return None if code is None else f"the broker process exited with code {code}"

    def _write_config(self) -> Path:
        assert self.data_dir is not None and self._port is not None
        props: dict[str, str] = {
            "node.id": "1",
            "process.roles": "broker,controller",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self._port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self._port}",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "num.partitions": str(self.num_partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            # 50 partitions by default: creating them on the first consumer group costs seconds.
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            # Fewer threads and a smaller cleaner buffer (128 MiB by default) for a small box.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            "log.retention.hours": "24",
        }
        if self.sasl_ssl is not None:
            props.update(self._sasl_ssl_properties())
        props.update(self.extra_properties)
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _sasl_ssl_properties(self) -> dict[str, str]:
        assert self.sasl_ssl is not None and self._sasl_ssl_port is not None
        port = self._sasl_ssl_port
        plain_users = " ".join(
            f'user_{name}="{password}"' for name, password in self.sasl_ssl.users.items()
        )
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self._port},SASL_SSL://127.0.0.1:{port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{self._port},SASL_SSL://localhost:{port}"
            ),
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
            ),
            "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(self.sasl_ssl.keystore_pem),
        }

    def _scram_arguments(self) -> list[str]:
        """kafka-storage format's --add-scram for every user and mechanism."""
        if self.sasl_ssl is None:
            return []
        return [
            argument
            for name, password in self.sasl_ssl.users.items()
            for mechanism in SCRAM_MECHANISMS
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]

    def _logging_options(self) -> list[str]:
        assert self.data_dir is not None
        # Console appender only: stdout/stderr of the JVM already go to server.log.
        if kafka_major(self.kafka_version) < 4:
            path = self.data_dir / "log4j.properties"
            path.write_text(
                "log4j.rootLogger=INFO, stdout\n"
                "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
                "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
                "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
                # The chattiest loggers; WARN still shows anything that goes wrong.
                "log4j.logger.kafka.request.logger=WARN\n"
                "log4j.logger.state.change.logger=WARN\n"
                "log4j.logger.org.apache.kafka.clients=WARN\n"
                "log4j.logger.kafka.log.LogCleaner=WARN\n"
            )
            return [f"-Dlog4j.configuration=file:{path}"]
        path = self.data_dir / "log4j2.properties"
        path.write_text(
            "status=warn\n"
            "shutdownHook=disable\n"  # Kafka stops itself; avoids a WARN at exit
            "appender.stdout.type=Console\n"
            "appender.stdout.name=STDOUT\n"
            "appender.stdout.layout.type=PatternLayout\n"
            "appender.stdout.layout.pattern=[%d] %p %m (%c)%n\n"
            "rootLogger.level=INFO\n"
            "rootLogger.appenderRef.stdout.ref=STDOUT\n"
            "logger.req.name=kafka.request.logger\n"
            "logger.req.level=WARN\n"
            "logger.sc.name=state.change.logger\n"
            "logger.sc.level=WARN\n"
            "logger.clients.name=org.apache.kafka.clients\n"
            "logger.clients.level=WARN\n"
        )
        return [f"-Dlog4j2.configurationFile={path}"]

    def _format_storage(self, java: str, libs: Path, config: Path) -> None:
        assert self.data_dir is not None
        cmd = [
            java,
            *_TOOL_JVM_OPTIONS,
            *self._logging_options(),
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self._cluster_id(),
            "-c",
            str(config),
            *self._scram_arguments(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise KafkaStartError("kafka.tools.StorageTool format hung for 120 s") from exc
        if proc.returncode != 0:
            raise KafkaStartError(
                f"kafka.tools.StorageTool format failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}"
            )

    def _launch(self, java: str, libs: Path, config: Path) -> None:
        assert self.data_dir is not None
        cmd = [
            *self.command_prefix,
            java,
            *self.jvm_options,
            *self._logging_options(),
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(config),
        ]
        with open(self.log_file, "ab") as out:
            # Own session/process group: stop() can signal the whole group, and a Ctrl-C in
            # the terminal reaches the test runner (which then stops us) rather than the JVM.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=death_signal_preexec(signal.SIGTERM),
            )
        (self.data_dir / PID_FILE).write_text(f"{self._proc.pid}\n")

    def _kill(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc, self.stop_timeout_s)
            self._proc = None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM binds: connections of the last run still in TIME_WAIT do not make the
        # port taken, or every restart with clients connected would move the broker.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cmdline(pid: int) -> str:
    """The command line of a live process ("" when gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _stop_pid_group(pid: int, timeout_s: float) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it after `timeout_s`; wait until gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _cmdline(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _cmdline(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def java_available() -> bool:
    """True when a `java` is found (JAVA_HOME or PATH), so a LocalKafka can start."""
    try:
        _find_java()
    except KafkaStartError:
        return False
    return True


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (candidate := Path(java_home) / "bin" / "java").is_file():
        return str(candidate)
    java = shutil.which("java")
    if java is None:
        raise KafkaStartError(
            "no `java` found (JAVA_HOME or PATH); run scripts/ensure-system-deps.sh"
        )
    return java


class LocalKafkaCluster:
    """A KRaft cluster of `nodes` JVMs (each broker and controller, all voters), kept in
    `data_dir`: topics default to replication factor `nodes` and min.insync.replicas 2.

    `isolated=True` (root, Linux) gives each node a network namespace of its own, joined to the
    host by a veth on one bridge: `cut(i)` takes node i's link down, a real partition in both
    directions (clients, replication, the controller quorum), and `reconnect(i)` brings it back.
    Without it every node listens on 127.0.0.1 and only stop/kill faults are possible.
    """

    BRIDGE = "vpkbr0"
    SUBNET = "10.231.77"

    def __init__(
        self,
        data_dir: Path,
        nodes: int = 3,
        *,
        kafka_version: str = DEFAULT_KAFKA_VERSION,
        isolated: bool = False,
        min_insync_replicas: int = 2,
        start_timeout_s: float = 120.0,
    ) -> None:
        if nodes < 1 or not 1 <= min_insync_replicas <= nodes:
            raise ValueError("need nodes >= 1 and 1 <= min_insync_replicas <= nodes")
        self.data_dir = data_dir
        self.isolated = isolated
        self._network_up = False
        self._forward_rule = ["FORWARD", "-i", self.BRIDGE, "-o", self.BRIDGE, "-j", "ACCEPT"]
        hosts = [self._address(i) if isolated else "127.0.0.1" for i in range(1, nodes + 1)]
        ports = free_ports(2 * nodes)
        voters = ",".join(f"{i}@{hosts[i - 1]}:{ports[2 * i - 1]}" for i in range(1, nodes + 1))
        cluster_id = new_cluster_id()
        rf = str(nodes)
        isr = str(min_insync_replicas)
        self.nodes: list[LocalKafka] = []
        for i in range(1, nodes + 1):
            node_dir = data_dir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            # Fixed before the first start: the quorum names every voter's address up front.
            (node_dir / CLUSTER_ID_FILE).write_text(cluster_id + "\n")
            (node_dir / PORTS_FILE).write_text(
                json.dumps({"broker": ports[2 * i - 2], "controller": ports[2 * i - 1]})
            )
            self.nodes.append(
                LocalKafka(
                    kafka_version,
                    data_dir=node_dir,
                    keep=True,
                    start_timeout_s=start_timeout_s,
                    stop_timeout_s=10.0,
                    host=hosts[i - 1],
                    command_prefix=("ip", "netns", "exec", self._namespace(i)) if isolated else (),
                    extra_properties={
                        "node.id": str(i),
                        "controller.quorum.voters": voters,
                        "default.replication.factor": rf,
                        "min.insync.replicas": isr,
                        "offsets.topic.replication.factor": rf,
                        "transaction.state.log.replication.factor": rf,
                        "transaction.state.log.min.isr": isr,
                        # A cut-off follower leaves the ISR in 10 s rather than 30 s.
                        "replica.lag.time.max.ms": "10000",
                    },
                )
            )

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def start(self) -> Self:
        """Start every node at once (a quorum needs a majority to answer), wait for all."""
        import concurrent.futures

        if self.isolated and not self._network_up:
            self._network(up=True)
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(node.start) for node in self.nodes]:
                future.result()
        return self

    def stop(self) -> None:
        import concurrent.futures

        # All at once: a node stopped last waits for a quorum that has already gone.
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))
        if self._network_up:
            self._network(up=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def kill(self, node_id: int) -> None:
        """SIGKILL node `node_id`'s JVM: no clean shutdown, no leadership handed over."""
        node = self.node(node_id)
        if node._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node._proc.pid, signal.SIGKILL)
            node._proc.wait(timeout=30)
        node.stop()

    def cut(self, node_id: int) -> None:
        """Take node `node_id` off the network: its link to the bridge goes down."""
        self._require_isolated()
        _ip("link", "set", self._veth(node_id), "down")

    def reconnect(self, node_id: int) -> None:
        self._require_isolated()
        _ip("link", "set", self._veth(node_id), "up")
        _ip("link", "set", self._veth(node_id), "master", self.BRIDGE)

    # -- the isolated network -----------------------------------------------------------

    def _address(self, node_id: int) -> str:
        return f"{self.SUBNET}.{10 + node_id}"

    def _namespace(self, node_id: int) -> str:
        return f"vpk{node_id}"

    def _veth(self, node_id: int) -> str:
        return f"vpk{node_id}h"

    def _require_isolated(self) -> None:
        if not self.isolated:
            raise RuntimeError("cut/reconnect need LocalKafkaCluster(isolated=True)")

    def _network(self, *, up: bool) -> None:
        # Leftovers of a killed run first: names are fixed, so two cannot coexist.
        for i in range(1, len(self.nodes) + 1):
            _ip("netns", "del", self._namespace(i), check=False)
        _ip("link", "del", self.BRIDGE, check=False)
        subprocess.run(["iptables", "-D", *self._forward_rule], capture_output=True, check=False)
        self._network_up = False
        if not up:
            return
        _ip("link", "add", self.BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{self.SUBNET}.1/24", "dev", self.BRIDGE)
        _ip("link", "set", self.BRIDGE, "up")
        # Docker sets FORWARD to DROP, and bridged frames pass through it (br_netfilter).
        subprocess.run(["iptables", "-I", *self._forward_rule], capture_output=True, check=True)
        for i in range(1, len(self.nodes) + 1):
            ns, host_end, ns_end = self._namespace(i), self._veth(i), f"vpk{i}n"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", self.BRIDGE)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "addr", "add", f"{self._address(i)}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self._network_up = True


def _ip(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise KafkaStartError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
