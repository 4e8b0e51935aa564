"""Stages as child OS processes, each in its own process group, its output in a log file.

`vidpipe run NAME --replicas N` starts N of them; the dev stack starts every stage this way too.
A stage process is `python -m vidpipe run NAME`, exactly what production runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["ManagedProcess", "stage_argv", "stop_process_group", "wait_for_signal"]

log = logging.getLogger(__name__)


def stage_argv(name: str) -> list[str]:
    """The command line of one stage process."""
    return [sys.executable, "-m", "vidpipe", "run", name]


def stop_process_group(
    proc: subprocess.Popen[bytes], timeout_s: float, sig: signal.Signals = signal.SIGTERM
) -> None:
    """Send `sig` to the child's process group, wait up to `timeout_s`, then SIGKILL it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        if timeout_s > 0:
            log.warning(
                "pid %s ignored %s for %.0f s; sending SIGKILL", proc.pid, sig.name, timeout_s
            )
        # The leader is not reaped yet, so its group id cannot have been reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class ManagedProcess:
    """One child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        try:
            # Own session: a signal to the group reaches the child and whatever it started,
            # and a Ctrl-C in the terminal reaches only the parent, which stops the children.
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log_file.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (a graceful FastStream shutdown), SIGKILL after `timeout_s`."""
        if self.proc is not None and self.proc.poll() is None:
            stop_process_group(self.proc, timeout_s)

    def kill(self) -> None:
        """SIGKILL at once: a crash, as the chaos tests need it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for_signal(keep_waiting: Callable[[], bool], *, interval_s: float = 0.5) -> bool:
    """Block until SIGINT/SIGTERM arrives (True) or `keep_waiting()` turns false (False).

    For commands that supervise child processes: the signal is taken over, so the caller stops
    its children itself, in order, instead of dying before them.
    """
    signalled = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal signalled
        signalled = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not signalled and keep_waiting():
        time.sleep(interval_s)
    return signalled
