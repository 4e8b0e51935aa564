"""Stopping keeps the work: SIGTERM on a stage, and `vidpipe up` / `down` / `wipe` through the CLI.

A fetcher stopped mid-download either finishes within its shutdown timeout or abandons the
download uncommitted, so the restarted fetcher stores the video once. The dev stack's broker
keeps its log under `.vidpipe/kafka/`: a request in flight when the stack stops (or when `up`
is killed) completes after the next `up`; `vidpipe wipe` removes that log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import EMULATOR_KEY, MakePipeline
from tests.e2e.harness import make_request
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.stack import wipe_state
from vidpipe.settings import Settings

# Emulated seconds: the video's body takes 40 / TIME_SCALE = 8 s real to arrive.
SLOW_DOWNLOAD = "[emulator:download_seconds=40]"


async def _until(what: str, check: Any, timeout_s: float) -> None:
    """Wait for `check()` (sync or async) to be true, or fail saying `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.mark.parametrize(
    ("shutdown_timeout_s", "finishes"),
    [(2.0, False), (20.0, True)],
    ids=["abandons-uncommitted", "finishes-then-exits"],
)
async def test_sigterm_mid_download_finishes_or_abandons_and_stores_once(
    make_pipeline: MakePipeline,
    emulator: EmulatorThread,
    tmp_path: Path,
    shutdown_timeout_s: float,
    finishes: bool,
) -> None:
    pipeline = await make_pipeline({"VIDPIPE_SHUTDOWN_TIMEOUT_S": str(shutdown_timeout_s)})
    for name in ("submitter", "poller", "recorder"):
        pipeline.start(name)
    fetcher = pipeline.start("fetcher")
    request = make_request(
        pipeline.settings.topic_prefix,
        "slow",
        prompt=f"slow {SLOW_DOWNLOAD}",
        provider="azure-sora",
    )
    before = emulator.state.stats["azure.content_requests"]
    await pipeline.publish(request)
    rid = request.request_id
    # The fetcher has asked for the video: its body is now trickling in for 8 s.
    await _until(
        "the download to start",
        lambda: emulator.state.stats["azure.content_requests"] > before,
        timeout_s=60,
    )
    assert fetcher.proc is not None
    began = time.monotonic()
    os.killpg(fetcher.pid, signal.SIGTERM)
    await _until("the fetcher to exit", lambda: fetcher.proc.poll() is not None, timeout_s=40)
    took = time.monotonic() - began
    assert fetcher.proc.returncode == 0, fetcher.log_tail()
    stored_before_restart = await pipeline.count_events(rid, "VideoStored")
    if finishes:
        # It finished the download and committed: nothing left for a restart to do.
        assert stored_before_restart == 1, fetcher.log_tail()
    else:
        # Abandoned when its 2 s were up, long before the 8 s download could end; nothing kept.
        assert took < shutdown_timeout_s + 3, f"took {took:.1f} s\n{fetcher.log_tail()}"
        assert stored_before_restart == 0, fetcher.log_tail()
    pipeline.start("fetcher", instance=1)
    views = await pipeline.wait_for([rid])
    assert views[rid].status == "stored", views[rid]
    if finishes:
        # Give a wrongly uncommitted delivery its chance to show: the new member is assigned
        # the partitions and would fetch again; the group settles with nothing more stored.
        await pipeline.wait_for_group("fetcher", members=1)
    assert await pipeline.count_events(rid, "VideoStored") == 1
    # One video (next to its .json metadata), no partial file left by the abandoned download.
    files = [p for p in (tmp_path / "videos").rglob("*") if p.is_file() and p.suffix != ".json"]
    assert [p.suffix for p in files] == [".mp4"], files


def _stack_env(emulator: EmulatorThread) -> dict[str, str]:
    """The CLI's environment: no broker given (so `up` starts its own), the session's emulator
    as the provider (it outlives the stack, as a real provider would), short timings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIDPIPE_", "AZURE_OPENAI_", "OPENAI_"))
        or k in ("VIDPIPE_KAFKA_CACHE", "VIDPIPE_KAFKA_VERSION", "VIDPIPE_KAFKA_JVM_OPTS")
    }
    env.update(
        VIDPIPE_DEV_DOCKER="0",
        VIDPIPE_AZURE_ENDPOINT=emulator.azure_endpoint,
        VIDPIPE_AZURE_API_KEY=EMULATOR_KEY,
        VIDPIPE_POLL_INTERVAL_S="0.5",
        VIDPIPE_QUOTA_WAIT_S="0.5",
        VIDPIPE_SHUTDOWN_TIMEOUT_S="5",
        PYTHONUNBUFFERED="1",
    )
    return env


def _vidpipe(cwd: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vidpipe", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"vidpipe {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


#: The last line `vidpipe up` prints once the stack runs (after any note on leftovers).
_BANNER = "stops everything."


class _Up:
    """`vidpipe up` as a child process; ready once its state file names it and it has printed
    its banner (the state file is written first: a test reading the log on the state file alone
    could miss what `up` prints after it)."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cwd = cwd
        self.log = log
        self._banners = log.read_text().count(_BANNER) if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vidpipe", "up", "--no-emulator"],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, timeout_s: float = 120) -> None:
        state = self.cwd / ".vidpipe" / "up.json"

        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"vidpipe up exited:\n{self.log.read_text()}")
            try:
                owned = int(json.loads(state.read_text())["owner_pid"]) == self.proc.pid
            except (OSError, ValueError, KeyError):
                return False
            return owned and self.log.read_text().count(_BANNER) > self._banners

        await _until("vidpipe up to be ready", started, timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def _status(cwd: Path, rid: str) -> str | None:
    """The request's status in the stack's own records (`.vidpipe/vidpipe.db`, read directly:
    a `vidpipe status` per look costs a Python start-up on a loaded box)."""
    try:
        with contextlib.closing(sqlite3.connect(cwd / ".vidpipe" / "vidpipe.db", timeout=5)) as db:
            row = db.execute("SELECT status FROM projects WHERE request_id = ?", (rid,)).fetchone()
    except sqlite3.OperationalError:  # no table yet: the recorder has not started
        return None
    return str(row[0]) if row else None


async def _wait_status(cwd: Path, rid: str, wanted: set[str], timeout_s: float) -> None:
    await _until(f"{rid} to be one of {wanted}", lambda: _status(cwd, rid) in wanted, timeout_s)


async def test_up_keeps_the_broker_log_through_down_and_a_killed_up_then_wipe_removes_it(
    emulator: EmulatorThread, tmp_path: Path
) -> None:
    env = _stack_env(emulator)
    log = tmp_path / "up.log"
    kafka_dir = tmp_path / ".vidpipe" / "kafka"
    # 100 emulated seconds in flight at the provider: 20 s real, time enough to stop the stack.
    prompt = "kept across restarts [emulator:duration=100]"
    in_flight = {"submitted", "queued", "running"}

    up = _Up(tmp_path, env, log)
    try:
        await up.ready()
        cluster_id = (kafka_dir / "cluster.id").read_text()
        _vidpipe(tmp_path, env, "submit", prompt, "--request-id", "kept-down")
        await _wait_status(tmp_path, "kept-down", in_flight, timeout_s=60)
        # The gateway runs with the stack, on a key only the state dir holds.
        key_file = tmp_path / ".vidpipe" / "gateway.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert key not in log.read_text(), "the gateway key was printed"
        gateway = json.loads((tmp_path / ".vidpipe" / "up.json").read_text())["gateway_url"]
        assert f"{gateway}/dashboard/" in log.read_text().replace("\n", "")
        async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
            record = await client.get(
                "/v1/generations/kept-down", headers={"Authorization": f"Bearer {key}"}
            )
            assert record.status_code == 200, record.text
            assert record.json()["status"] in in_flight
            refused = await client.get("/v1/generations/kept-down")
            assert refused.status_code == 401
        assert "vidpipe up" in _vidpipe(tmp_path, env, "down")
        up.proc.wait(60)
        assert _status(tmp_path, "kept-down") in in_flight
        assert not key_file.exists()

        up = _Up(tmp_path, env, log)
        await up.ready()
        await _wait_status(tmp_path, "kept-down", {"stored"}, timeout_s=90)

        # A crash of `up` itself: its stages and its broker are left behind; the next `up`
        # stops them and carries on with the same log.
        _vidpipe(tmp_path, env, "submit", prompt, "--request-id", "kept-kill")
        await _wait_status(tmp_path, "kept-kill", in_flight, timeout_s=60)
        up.kill()
        up = _Up(tmp_path, env, log)
        await up.ready()
        assert "left by an earlier `vidpipe up`, stopped" in log.read_text()
        await _wait_status(tmp_path, "kept-kill", {"stored"}, timeout_s=90)
        assert (kafka_dir / "cluster.id").read_text() == cluster_id
    finally:
        if up.proc.poll() is None:
            _vidpipe(tmp_path, env, "down")
            up.proc.wait(60)
    removed = _vidpipe(tmp_path, env, "wipe")
    assert str(Path(".vidpipe") / "kafka") in removed, removed
    assert not kafka_dir.exists()


def test_wipe_removes_only_what_lives_in_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for path in (state / "kafka" / "data", state / "logs", state / "videos", tmp_path / "mine"):
        path.mkdir(parents=True)
    (state / "vidpipe.db").write_text("records")
    (tmp_path / "elsewhere.db").write_text("not the stack's")
    inside = Settings(
        state_dir=state,
        database_url=f"sqlite:///{state / 'vidpipe.db'}",
        storage_url=f"file://{state / 'videos'}",
    )
    assert set(wipe_state(inside)) == {
        state / "kafka",
        state / "logs",
        state / "vidpipe.db",
        state / "videos",
    }
    outside = Settings(
        state_dir=state,
        database_url=f"sqlite:///{tmp_path / 'elsewhere.db'}",
        storage_url=f"file://{tmp_path / 'mine'}",
    )
    assert wipe_state(outside) == []
    assert (tmp_path / "elsewhere.db").exists() and (tmp_path / "mine").is_dir()
