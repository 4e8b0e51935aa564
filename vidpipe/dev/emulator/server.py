"""Run the emulator: in the current event loop, in a background thread, or blocking (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Generator
from types import TracebackType
from typing import Any

import uvicorn

from vidpipe.dev.emulator.app import create_app
from vidpipe.dev.emulator.config import EmulatorConfig
from vidpipe.dev.emulator.state import EmulatorState

__all__ = ["EmulatorServer", "EmulatorThread", "serve"]

log = logging.getLogger("vidpipe.dev.emulator")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn that reports start-up through an event and leaves signals to its host."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.started_event.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Embedded in a test or another program: Ctrl-C belongs to the host, not to us.
        yield


def _bind(host: str, port: int) -> socket.socket:
    """Bind and listen before uvicorn starts, so the real port is known and no connect can race."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    # IPPROTO_TCP (socket.create_server leaves 0), and without it every response waits ~40 ms
    # for a delayed ACK.
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would allow port hijacking
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EmulatorServer:
    """The emulator on a real loopback port, inside the running event loop.

        async with EmulatorServer(EmulatorConfig(time_scale=60)) as srv:
            client = AsyncOpenAI(base_url=srv.openai_base_url, api_key="emulator-key")

    `port=0` picks a free port; `srv.port` / `srv.base_url` carry the bound one.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.log_level = log_level
        # TLS, for SDKs that only speak https (fal-client builds https://{FAL_QUEUE_RUN_HOST}).
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.state = EmulatorState(config or EmulatorConfig())
        self.app = create_app(self.state)
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{_url_host(self.host)}:{self.port}"

    @property
    def fal_queue_host(self) -> str:
        """What fal-client's FAL_QUEUE_RUN_HOST takes: host:port (served over TLS only)."""
        return f"{_url_host(self.host)}:{self.port}"

    @property
    def azure_endpoint(self) -> str:
        """What Azure calls the resource endpoint; the client appends /openai/v1/..."""
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def update_config(self, **changes: Any) -> EmulatorConfig:
        """Validated partial update, same as POST /_emulator/config."""
        config = self.state.config.updated(changes)
        self.state.set_config(config)
        return config

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("emulator already started")
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        uv_config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level=self.log_level,
            log_config=None,  # leave the host's logging setup alone
            access_log=False,
            server_header=False,  # real providers do not announce uvicorn
            timeout_graceful_shutdown=2,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        server = _EmbeddedServer(uv_config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="vidpipe-emulator")
        started = asyncio.create_task(server.started_event.wait())
        done, _ = await asyncio.wait({self._task, started}, return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            started.cancel()
            sock.close()
            task, self._task = self._task, None
            task.result()  # re-raises the start-up error, if any
            raise RuntimeError("emulator stopped during start-up")
        log.info("provider emulator listening on %s", self.base_url)

    async def stop(self) -> None:
        task, server = self._task, self._server
        self._task = self._server = None
        if task is None or server is None:
            return
        server.should_exit = True
        await task
        await self.app.state.hooks.aclose()  # webhooks not yet sent go with the server

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class EmulatorThread:
    """The emulator in a background thread with its own event loop, for sync code and clients.

    with EmulatorThread(EmulatorConfig(time_scale=60)) as srv:
        client = OpenAI(base_url=srv.openai_base_url, api_key="emulator-key")
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        start_timeout: float = 30.0,
    ) -> None:
        self.server = EmulatorServer(config, host=host, port=port, log_level=log_level)
        self.start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def azure_endpoint(self) -> str:
        return self.server.azure_endpoint

    @property
    def openai_base_url(self) -> str:
        return self.server.openai_base_url

    @property
    def state(self) -> EmulatorState:
        return self.server.state

    def update_config(self, **changes: Any) -> EmulatorConfig:
        """Apply a partial config update on the server's loop (thread-safe)."""
        loop = self._loop
        if loop is None:
            return self.server.update_config(**changes)

        async def apply() -> EmulatorConfig:
            return self.server.update_config(**changes)

        return asyncio.run_coroutine_threadsafe(apply(), loop).result(timeout=self.start_timeout)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with self.server:
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()

    def _run(self) -> None:
        with contextlib.suppress(BaseException):  # kept in self._error and re-raised by start()
            asyncio.run(self._main())

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("emulator thread already started")
        self._thread = threading.Thread(target=self._run, name="vidpipe-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise TimeoutError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        self._thread = None
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may have just finished
                loop.call_soon_threadsafe(stop.set)
        thread.join(self.start_timeout)

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8089,
    *,
    log_level: str = "info",
) -> None:
    """Run the emulator in the foreground until interrupted (the `vidpipe emulator` command)."""
    config = config or EmulatorConfig()
    sock = _bind(host, port)
    bound = int(sock.getsockname()[1])
    base = f"http://{_url_host(host)}:{bound}"
    uv_config = uvicorn.Config(
        create_app(config), lifespan="off", log_level=log_level, server_header=False
    )
    # uvicorn's logger is the one its config just set up; with sockets it prints no URL itself.
    logging.getLogger("uvicorn.error").info(
        "vidpipe provider emulator on %s (azure endpoint %s, openai base url %s/v1)",
        base,
        base,
        base,
    )
    uvicorn.Server(uv_config).run(sockets=[sock])
