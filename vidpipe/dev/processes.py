"""Process helpers of the dev tooling: free ports, a death signal for children, log tails, and
running a coroutine from sync code.

Stopping a child's process group is `vidpipe.cli.processes.stop_process_group`, shared with
`vidpipe run --replicas`.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["ServerProcess", "death_signal_preexec", "free_ports", "log_tail", "run_coro_sync"]

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (the sockets are held together so they differ).

    A small window remains between closing them and the server binding; the starters retry
    on "address in use" for that reason.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def death_signal_preexec(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send `sig` to the child when this process dies.

    Keeps a broker or a database from outliving a test run killed hard (SIGKILL, OOM). Only
    armed from the main thread: the kernel ties it to the *thread* that forked, so a child
    started from a short-lived worker thread would be killed when that thread ends.
    """
    if not sys.platform.startswith("linux") or (
        threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def _arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), int(sig))

    return _arm


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def run_coro_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, on a helper thread with its own loop.

    start()/stop() are sync (plain session fixtures, scripts) and may be called while this
    thread runs, or has set, an event loop (pytest-asyncio, an async CLI); asyncio.run here
    would fail, or reset that thread's current loop, so it never runs on the caller's thread.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidpipe-dev") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class ServerProcess:
    """A server the dev stack and the tests run as a child process (LocalKafka, LocalPostgres):
    started once, usable as a context manager, stopped (process group and all) on the way out."""

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
