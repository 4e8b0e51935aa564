"""The dev stack behind `vidpipe up` and `vidpipe demo`: a broker, the emulator, every stage,
and (for `up` and `demo`) the HTTP gateway with its dashboard.

Each stage runs as its own OS process (`python -m vidpipe run NAME`), exactly as it would in
production, so killing or scaling one never touches the others. The broker comes from
VIDPIPE_KAFKA_BOOTSTRAP when set, else a Docker container, else local jars (vidpipe.dev).
While it runs, `{state_dir}/up.json` records its broker address (read by every command through
vidpipe.bus.address) and its processes (for `vidpipe down`).

With `keep_broker` (`vidpipe up`, `vidpipe demo`) a broker the stack starts keeps its log in
`{state_dir}/kafka/`: jobs in flight when the stack stops, or when `up` itself is killed, carry on
at the next start. A start first stops what a killed `up` left running. `wipe_state` removes it.

The gateway gets a fresh API key per start unless VIDPIPE_GATEWAY_API_KEYS is set: only its
digest reaches the gateway's environment, and the key itself is written to
`{state_dir}/gateway.key` (mode 0600) for the dashboard's login, never printed or logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from services.registry import STAGES
from vidpipe.bus.address import DEV_STACK_STATE_FILE, RECORDED_BROKER_KEY
from vidpipe.bus.admin import ensure_all_topics
from vidpipe.cli.processes import ManagedProcess, stage_argv
from vidpipe.dev.processes import free_ports, run_coro_sync
from vidpipe.dev.servers import KafkaHandle, resolve_kafka
from vidpipe.errors import DevStackError
from vidpipe.providers import configured_providers
from vidpipe.settings import Settings

__all__ = [
    "GATEWAY_KEY_FILE",
    "KAFKA_DIR",
    "DevStack",
    "read_state",
    "stop_recorded_stack",
    "wipe_state",
]

# The kept broker's folder inside the state dir.
KAFKA_DIR = "kafka"
# Where a stack that made its own gateway key keeps it (the dashboard's login).
GATEWAY_KEY_FILE = "gateway.key"


@dataclass
class DevStack:
    """The broker, the emulator (without provider keys) and the stages, started and stopped
    together."""

    settings: Settings
    state_dir: Path = Path(".vidpipe")
    services: Iterable[str] = STAGES
    #: None: start the emulator only when no provider has credentials.
    emulator: bool | None = None
    emulator_env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Keep a started broker's log in `{state_dir}/kafka/` across stops (else it is throwaway).
    keep_broker: bool = False
    #: Also run the HTTP gateway and its dashboard (`vidpipe gateway`).
    gateway: bool = False

    def __post_init__(self) -> None:
        self.processes: dict[str, ManagedProcess] = {}
        self.bootstrap_servers: str | None = None
        self.emulator_url: str | None = None
        #: The gateway's base URL (the dashboard is at /dashboard/), once it runs.
        self.gateway_url: str | None = None
        #: The file holding the key the stack made for the gateway, or None (keys were set).
        self.gateway_key_file: Path | None = None
        self._kafka: KafkaHandle | None = None
        self._env: dict[str, str] = {}
        #: What a killed earlier `up` had left running, stopped by start().
        self.cleaned: list[str] = []

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / KAFKA_DIR

    def start(self) -> DevStack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._clear_stale_state()
        try:
            self._start_broker()
            self._env = self._child_env()
            if self.emulator if self.emulator is not None else not configured_providers():
                self._start_emulator()
            for name in self.services:
                self.start_service(name)
            if self.gateway:
                self._start_gateway()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def start_service(self, name: str, instance: int = 0) -> ManagedProcess:
        key = name if instance == 0 else f"{name}.{instance}"
        process = ManagedProcess(
            key, stage_argv(name), self._env, self.logs_dir / f"{key}.log"
        ).start()
        self.processes[key] = process
        return process

    @property
    def env(self) -> dict[str, str]:
        """The environment the children get (also right for `vidpipe submit` / `status`)."""
        return dict(self._env)

    def _clear_stale_state(self) -> None:
        state = read_state(self.state_dir)
        if state is None:
            return
        owner = int(state.get("owner_pid", 0))
        if owner and owner != os.getpid() and _is_vidpipe(owner):
            raise DevStackError(
                f"a dev stack is already running from {self.state_dir} (pid {owner});"
                " `vidpipe down` stops it"
            )
        # Its owner was killed: stop the stages and emulator it left, forget its address.
        self.cleaned = stop_recorded_stack(self.state_dir, self.settings.shutdown_timeout_s)

    def _start_broker(self) -> None:
        self._kafka = resolve_kafka(
            self.settings.kafka_bootstrap, data_dir=self.kafka_dir if self.keep_broker else None
        )
        bootstrap_servers = self.bootstrap_servers = self._kafka.bootstrap_servers
        run_coro_sync(lambda: ensure_all_topics(self.settings, bootstrap_servers))

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["VIDPIPE_KAFKA_BOOTSTRAP"] = self.bootstrap_servers or ""
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _start_emulator(self) -> None:
        (port,) = free_ports(1)
        # A fresh key per run: the emulator checks auth like the real APIs do.
        key = secrets.token_urlsafe(24)
        env = {**self._env, **self.emulator_env, "VIDPIPE_EMULATOR_API_KEY": key}
        process = ManagedProcess(
            "emulator",
            [
                sys.executable,
                "-m",
                "vidpipe",
                "emulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
            self.logs_dir / "emulator.log",
        ).start()
        self.processes["emulator"] = process
        self.emulator_url = f"http://127.0.0.1:{port}"
        _wait_http(self.emulator_url + "/_emulator/health", process)
        self._env.update(
            VIDPIPE_AZURE_ENDPOINT=self.emulator_url,
            VIDPIPE_AZURE_API_KEY=key,
            VIDPIPE_OPENAI_BASE_URL=f"{self.emulator_url}/v1",
            VIDPIPE_OPENAI_API_KEY=key,
        )

    def _start_gateway(self) -> None:
        env = dict(self._env)
        if not env.get("VIDPIPE_GATEWAY_API_KEYS"):
            key = secrets.token_urlsafe(32)
            digest = hashlib.sha256(key.encode()).hexdigest()
            env["VIDPIPE_GATEWAY_API_KEYS"] = f"dev:{digest}"
            key_file = self.gateway_key_file = self.state_dir / GATEWAY_KEY_FILE
            key_file.unlink(missing_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_text(key + "\n")
        # The configured port when it is free (a stable URL to bookmark), else any free one.
        port = self.settings.gateway_port or free_ports(1)[0]
        if not _port_free(self.settings.gateway_host, port):
            (port,) = free_ports(1)
        host = self.settings.gateway_host
        process = ManagedProcess(
            "gateway",
            [sys.executable, "-m", "vidpipe", "gateway", "--host", host, "--port", str(port)],
            env,
            self.logs_dir / "gateway.log",
        ).start()
        self.processes["gateway"] = process
        self.gateway_url = f"http://{host}:{port}"
        _wait_http(self.gateway_url + "/healthz", process)

    def _write_state(self) -> None:
        state = {
            RECORDED_BROKER_KEY: self.bootstrap_servers,
            "emulator_url": self.emulator_url,
            "gateway_url": self.gateway_url,
            "database_url": self.settings.database_url_safe,
            "storage_url": self.settings.storage_url,
            "topic_prefix": self.settings.topic_prefix,
            "owner_pid": os.getpid(),
            "pids": {name: p.pid for name, p in self.processes.items()},
        }
        (self.state_dir / DEV_STACK_STATE_FILE).write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        # Stages first (they drain and commit), all at once, then the emulator, then the broker.
        # A stage gets its own shutdown timeout and a margin before it is killed.
        stages = [p for name, p in self.processes.items() if name != "emulator"]
        if stages:
            with ThreadPoolExecutor(max_workers=len(stages)) as pool:
                list(pool.map(lambda p: p.stop(self.settings.shutdown_timeout_s + 10), stages))
        if "emulator" in self.processes:
            self.processes["emulator"].stop(5)
        if self._kafka is not None:
            self._kafka.stop()
            self._kafka = None
        if self.gateway_key_file is not None:
            self.gateway_key_file.unlink(missing_ok=True)
        (self.state_dir / DEV_STACK_STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _wait_http(url: str, process: ManagedProcess, timeout_s: float = 30.0) -> None:
    """Until `url` answers at all (the process is up), or the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.running:
            raise RuntimeError(f"the {process.name} exited at start:\n{process.log_tail()}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the {process.name} did not answer within {timeout_s:.0f}s")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """What a running `vidpipe up` recorded, or None."""
    path = state_dir / DEV_STACK_STATE_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stop_recorded_stack(state_dir: Path, shutdown_timeout_s: float = 30.0) -> list[str]:
    """`vidpipe down`: ask the process running `vidpipe up` to stop everything it started.

    Waits for it (its stages get `shutdown_timeout_s` each to finish their work); whatever
    outlived a killed owner is stopped here, stage by stage, the same way.
    """
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = []
    owner = int(state.get("owner_pid", 0))
    if owner and owner != os.getpid() and _is_vidpipe(owner):
        os.kill(owner, signal.SIGTERM)
        stopped.append(f"vidpipe up (pid {owner})")
        _wait_gone([owner], shutdown_timeout_s + 60)
    # The pids are checked to still be vidpipe's: after a crash they may have been reused.
    leftover = {
        name: int(pid) for name, pid in state.get("pids", {}).items() if _is_vidpipe(int(pid))
    }
    for name, pid in leftover.items():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        stopped.append(f"{name} (pid {pid})")
    if not _wait_gone(list(leftover.values()), shutdown_timeout_s + 10):
        for pid in leftover.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        _wait_gone(list(leftover.values()), 10)
    (state_dir / DEV_STACK_STATE_FILE).unlink(missing_ok=True)
    return stopped


def wipe_state(settings: Settings) -> list[Path]:
    """`vidpipe wipe`: stop the stack, then remove its broker log, its logs and, when they live
    in the state dir, the SQLite records and the stored videos. Returns what it removed."""
    state_dir = settings.state_dir
    stop_recorded_stack(state_dir, settings.shutdown_timeout_s)
    targets = [state_dir / KAFKA_DIR, state_dir / "logs", state_dir / GATEWAY_KEY_FILE]
    database = make_url(settings.database_url)
    if database.get_backend_name() == "sqlite" and database.database:
        # With SQLite's write-ahead log and shared-memory files, when present.
        targets += [Path(database.database + suffix) for suffix in ("", "-wal", "-shm")]
    if settings.storage_url.startswith("file://"):
        targets.append(Path(settings.storage_url.removeprefix("file://")))
    removed = []
    for path in targets:
        # Only inside the state dir: a database or a video folder elsewhere is not the stack's.
        if not path.exists() or not path.resolve().is_relative_to(state_dir.resolve()):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


def _is_vidpipe(pid: int) -> bool:
    """True when `pid` is alive and runs vidpipe (a recorded pid may belong to another
    program by now)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vidpipe" in cmdline


def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(_is_vidpipe(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True
