"""The dev stack's commands: `vidpipe up`, `down`, `demo` and `emulator`.

vidpipe/__main__.py adds them to the production commands when vidpipe.dev is installed (a
checkout, the compose image); the wheel leaves this package out.

vidpipe up          the whole dev stack, every stage its own process, and the gateway with its
                    dashboard (Ctrl-C stops it); its broker keeps its log in `.vidpipe/kafka/`,
                    so jobs in flight carry on
vidpipe down        stop what `vidpipe up` started (the broker's log stays)
vidpipe wipe        stop it and remove the broker's log, the logs, local records and videos
vidpipe demo        up + sample requests (one through the gateway's HTTP API) + a live view +
                    where the videos are
vidpipe emulator    the provider emulator on its own
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from vidpipe.cli.context import CliContext, cli_context
from vidpipe.cli.processes import wait_for_signal
from vidpipe.cli.requests import follow_requests
from vidpipe.errors import DevStackError
from vidpipe.providers import configured_providers

if TYPE_CHECKING:
    from schemas.events import GenerationRequested
    from vidpipe.dev.stack import DevStack

__all__ = ["commands"]

# Their own panel in `vidpipe --help`, so nobody mistakes them for production commands.
_PANEL = "Dev stack"

commands = typer.Typer()


@commands.command(rich_help_panel=_PANEL)
def up(
    ctx: typer.Context,
    emulator: Annotated[
        bool | None,
        typer.Option("--emulator/--no-emulator", help="Default: only without provider keys."),
    ] = None,
    gateway: Annotated[
        bool, typer.Option("--gateway/--no-gateway", help="The HTTP gateway and dashboard.")
    ] = True,
) -> None:
    """Start the broker, the emulator (without provider keys), every stage and the gateway;
    Ctrl-C stops all."""
    # The stack's modules are imported by the commands that use them: every other command
    # (a stage's `vidpipe run`, say) starts without them.
    from vidpipe.dev.stack import DevStack

    cli = cli_context(ctx)
    settings = cli.settings
    stack = DevStack(
        settings,
        state_dir=settings.state_dir,
        emulator=emulator,
        keep_broker=True,
        gateway=gateway,
    )
    try:
        with cli.console.status("starting the dev stack…"):
            stack.start()
    except DevStackError as exc:  # e.g. a stack already runs from this state dir
        raise cli.fail(str(exc)) from None
    if stack.cleaned:
        cli.console.print(
            "left by an earlier `vidpipe up`, stopped: " + ", ".join(stack.cleaned),
            soft_wrap=True,
        )
    _print_stack(cli, stack)
    cli.console.print("[dim]Ctrl-C or `vidpipe down` stops everything.[/dim]")
    try:
        _wait_for_signal(cli, stack)
    finally:
        with cli.console.status("stopping…"):
            stack.stop()
        cli.console.print("stopped.")


@commands.command(rich_help_panel=_PANEL)
def down(ctx: typer.Context) -> None:
    """Stop the stack a `vidpipe up` started."""
    from vidpipe.dev.stack import stop_recorded_stack

    cli = cli_context(ctx)
    settings = cli.settings
    stopped = stop_recorded_stack(settings.state_dir, settings.shutdown_timeout_s)
    cli.console.print("stopped: " + ", ".join(stopped) if stopped else "nothing was running.")


@commands.command(rich_help_panel=_PANEL)
def wipe(ctx: typer.Context) -> None:
    """Stop the stack, then delete its broker log, logs, and local records and videos."""
    from vidpipe.dev.stack import wipe_state

    cli = cli_context(ctx)
    removed = wipe_state(cli.settings)
    for path in removed:
        cli.console.print(f"removed {path}", highlight=False, soft_wrap=True)
    if not removed:
        cli.console.print("nothing to remove.")


@commands.command(rich_help_panel=_PANEL)
def demo(
    ctx: typer.Context,
    keep: Annotated[bool, typer.Option(help="Leave the stack running afterwards.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the samples.")] = 300,
) -> None:
    """Start the dev stack, send sample requests, follow them, show where the videos are."""
    from vidpipe.bus.upstream import RequestPublisher, new_request
    from vidpipe.dev.stack import DevStack

    # The emulator's jobs take seconds; poll often and retry downloads soon so the demo moves.
    # Set before the settings are first read.
    os.environ.setdefault("VIDPIPE_POLL_INTERVAL_S", "1")
    os.environ.setdefault("VIDPIPE_REDOWNLOAD_INITIAL_S", "2")
    os.environ.setdefault("VIDPIPE_REDOWNLOAD_MAX_INTERVAL_S", "5")
    cli = cli_context(ctx)
    settings = cli.settings
    # The same kept broker as `up`: a sample still in flight at Ctrl-C carries on next time,
    # as its record in the same database says it will.
    stack = DevStack(settings, state_dir=settings.state_dir, keep_broker=True, gateway=True)
    with cli.console.status("starting the dev stack (the first run fetches Kafka from Maven)…"):
        stack.start()
    _print_stack(cli, stack)
    tag = time.strftime("%H%M%S")
    samples = [
        new_request(
            "A paper boat drifting down a rainy street, cinematic",
            request_id=f"demo-{tag}-boat",
            provider="azure-sora",
        ),
        new_request(
            "Time-lapse of a city skyline from dusk to night",
            request_id=f"demo-{tag}-skyline",
            provider="openai-videos",
            size="1280x720",
            seconds=4,
        ),
        # Sent through the gateway's `POST /v1/generations`, as an HTTP system would.
        new_request(
            "A red fox trotting through fresh snow",
            request_id=f"demo-{tag}-fox",
            provider="azure-sora",
            size="854x480",
        ),
        # The seed's situation: generated, but the download only appears 15 s later. The
        # placeholder stands in at once, the notifier writes the message, the redownloader
        # fetches the real video when it appears and it replaces the placeholder.
        new_request(
            "A lighthouse in a storm [emulator:download=delayed] [emulator:download_delay=15]",
            request_id=f"demo-{tag}-lighthouse",
            provider="azure-sora",
            fallbacks=["placeholder", "notify", "retry"],
            metadata={"lang": "fr"},
        ),
    ]
    ok = False
    try:
        over_http = samples[2]

        async def send() -> None:
            async with RequestPublisher(
                stack.bootstrap_servers or "", topic_prefix=settings.topic_prefix
            ) as publisher:
                for request in samples:
                    if request is not over_http:
                        await publisher.publish(request)
            await _post_to_gateway(stack, over_http)

        try:
            asyncio.run(send())
        except DevStackError as exc:
            raise cli.fail(str(exc)) from None
        cli.console.print(
            f"sent {len(samples)} requests ({over_http.request_id} through the gateway);"
            " following them…"
        )
        rows = asyncio.run(follow_requests(cli, [s.request_id for s in samples], timeout))
        cli.console.print()
        ok = _report_demo(cli, rows)
    finally:
        if keep:
            cli.console.print("[dim]the stack keeps running; `vidpipe down` stops it[/dim]")
            _wait_for_signal(cli, stack)
        with cli.console.status("stopping the dev stack…"):
            stack.stop()
    if not ok:
        raise typer.Exit(1)


@commands.command(rich_help_panel=_PANEL)
def emulator(
    ctx: typer.Context,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8089,
    time_scale: Annotated[float, typer.Option(min=0.001, help="60 = a minute per second.")] = 1.0,
    download: Annotated[
        str,
        typer.Option(
            help="ok, missing, delayed, flaky, json_body, truncated or redirect (for every job)."
        ),
    ] = "ok",
) -> None:
    """Serve the provider emulator (both protocols). Its key: VIDPIPE_EMULATOR_API_KEY."""
    from vidpipe.dev.emulator.config import EmulatorConfig
    from vidpipe.dev.emulator.server import serve

    cli = cli_context(ctx)
    key = os.environ.get("VIDPIPE_EMULATOR_API_KEY")
    if not key:
        raise cli.fail("set VIDPIPE_EMULATOR_API_KEY: the emulator checks keys like the real APIs")
    try:
        config = EmulatorConfig.model_validate(
            {"api_key": key, "time_scale": time_scale, "download": download}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise cli.fail(f"--{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    serve(config, host=host, port=port)


def _wait_for_signal(cli: CliContext, stack: DevStack) -> None:
    """Until SIGINT/SIGTERM, or until a process of the stack exits (then say which)."""

    def all_running() -> bool:
        return all(p.running for p in stack.processes.values())

    if not wait_for_signal(all_running):
        dead = [n for n, p in stack.processes.items() if not p.running]
        cli.err.print(f"[red]{', '.join(dead)} exited; see {stack.logs_dir}[/red]")


async def _post_to_gateway(stack: DevStack, request: GenerationRequested) -> None:
    """One request through `POST /v1/generations`, with the key the stack made."""
    import httpx

    if stack.gateway_url is None or stack.gateway_key_file is None:
        raise DevStackError("the demo needs its own gateway key; unset VIDPIPE_GATEWAY_API_KEYS")
    key = stack.gateway_key_file.read_text().strip()
    body = request.model_dump(
        mode="json",
        exclude_none=True,
        exclude={"event_id", "event_type", "schema_version", "occurred_at", "causation_id"},
    )
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        answer = await client.post(
            "/v1/generations", json=body, headers={"Authorization": f"Bearer {key}"}
        )
    if answer.status_code != 202:
        raise DevStackError(
            f"the gateway answered {answer.status_code} to the demo's request: {answer.text[:500]}"
        )


def _print_stack(cli: CliContext, stack: DevStack) -> None:
    settings = cli.settings
    table = Table(title="vidpipe dev stack", show_header=False)
    if stack.gateway_url is not None:
        table.add_row("dashboard", f"{stack.gateway_url}/dashboard/")
        login = (
            f"the key in {stack.gateway_key_file}"
            if stack.gateway_key_file is not None
            else "a key of VIDPIPE_GATEWAY_API_KEYS"
        )
        table.add_row("log in with", login)
    table.add_row("broker", str(stack.bootstrap_servers))
    table.add_row(
        "provider",
        (stack.emulator_url and f"emulator at {stack.emulator_url}")
        or ", ".join(configured_providers()),
    )
    table.add_row("database", settings.database_url_safe)
    table.add_row("videos", settings.storage_url)
    table.add_row("logs", str(stack.logs_dir))
    for name, proc in stack.processes.items():
        table.add_row(name, f"pid {proc.pid}")
    cli.console.print(table)


def _report_demo(cli: CliContext, rows: dict[str, Any]) -> bool:
    """Each sample's video (size, frames, codec, path) or why it has none; True if all stored."""
    from vidpipe.media.sample import probe_mp4

    ok = True
    for rid, row in rows.items():
        url = row.get("output_image_url")
        if row.get("status") != "stored" or not url:
            cli.err.print(f"[red]{rid} ended {row.get('status')}: {row.get('error_message')}[/red]")
            ok = False
            continue
        path = Path(url.removeprefix("file://"))
        info = probe_mp4(path)
        cli.console.print(
            f"[green]{rid}[/green] {info['width']}x{info['height']}, {info['frames']} frames,"
            f" {info['codec']}, opens in PyAV:",
        )
        cli.console.print(f"  {path}", soft_wrap=True, highlight=False)
        if row.get("user_message"):
            cli.console.print(f"  told the user: {row['user_message']}", soft_wrap=True)
    cli.console.print(
        f"records: {cli.settings.database_url_safe} (table `projects`; `vidpipe status`)"
    )
    return ok
