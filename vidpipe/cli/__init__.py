"""The `vidpipe` command (typer + rich).

vidpipe up                 the whole local stack, every stage its own process (Ctrl-C stops it)
vidpipe down               stop what `vidpipe up` started
vidpipe run SERVICE        one stage, in the foreground
vidpipe submit PROMPT      publish a request; --wait follows it to the end
vidpipe status [ID]        what the records say (--json for scripts)
vidpipe demo               up + sample requests + a live view + where the videos are
vidpipe emulator           the provider emulator on its own
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from vidpipe.cli.ops import dlq_app, replay_app
from vidpipe.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="vidpipe",
    help="A Kafka pipeline that turns prompts into stored videos, reliably.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
app.add_typer(replay_app, name="replay")
app.add_typer(dlq_app, name="dlq")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise _fail(f"bad setting VIDPIPE_{field.upper()}: {first['msg']}") from None


def _bootstrap(settings: Settings) -> str:
    """The broker: VIDPIPE_KAFKA_BOOTSTRAP, else the one a running `vidpipe up` started."""
    from vidpipe.dev.stack import read_state

    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    state = read_state(settings.state_dir)
    if state and state.get("bootstrap"):
        return str(state["bootstrap"])
    raise _fail("no broker: set VIDPIPE_KAFKA_BOOTSTRAP or start one with `vidpipe up`")


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="A stage: submitter, poller, fetcher, …")],
    replicas: Annotated[
        int, typer.Option(min=1, max=64, help="Processes of this stage, one consumer each.")
    ] = 1,
) -> None:
    """Run one stage in the foreground (needs VIDPIPE_KAFKA_BOOTSTRAP).

    With --replicas N, N processes join the stage's consumer group and Kafka shares the
    partitions between them; Ctrl-C stops them all.
    """
    from services.registry import STAGES, create_stage
    from vidpipe.errors import ConfigurationError

    if service not in STAGES:
        raise _fail(f"unknown service {service!r}; choose one of: {', '.join(STAGES)}")
    settings = _settings()
    if replicas > 1:
        _run_replicas(service, replicas, settings)
        return
    try:
        stage = create_stage(service, settings)
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    stage.run()


def _run_replicas(service: str, replicas: int, settings: Settings) -> None:
    from vidpipe.dev.stack import ManagedProcess, service_argv

    if not settings.kafka_bootstrap:
        raise _fail("VIDPIPE_KAFKA_BOOTSTRAP is not set")
    logs = settings.state_dir / "logs"
    processes = [
        ManagedProcess(
            f"{service}.{i}", service_argv(service), os.environ, logs / f"{service}.{i}.log"
        ).start()
        for i in range(replicas)
    ]
    err.print(
        f"{replicas} replicas of {service}: "
        f"pids {', '.join(str(p.pid) for p in processes)}; logs in {logs}"
    )
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop and any(p.running for p in processes):
            time.sleep(0.5)
    finally:
        for process in processes:
            process.stop()
    failed = [
        p.name
        for p in processes
        if p.proc is not None and p.proc.returncode not in (0, -signal.SIGTERM)
    ]
    if failed and not stop:
        raise _fail(f"exited: {', '.join(failed)}; see {logs}", 1)


@app.command()
def up(
    emulator: Annotated[
        bool | None,
        typer.Option("--emulator/--no-emulator", help="Default: only without provider keys."),
    ] = None,
) -> None:
    """Start the broker, the emulator (without provider keys) and every stage; Ctrl-C stops all."""
    from vidpipe.dev.stack import LocalStack

    settings = _settings()
    stack = LocalStack(settings, state_dir=settings.state_dir, emulator=emulator)
    with console.status("starting the local stack…"):
        stack.start()
    _print_stack(stack, settings)
    console.print("[dim]Ctrl-C or `vidpipe down` stops everything.[/dim]")
    try:
        _wait_for_signal(stack)
    finally:
        with console.status("stopping…"):
            stack.stop()
        console.print("stopped.")


def _wait_for_signal(stack: Any) -> None:
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        dead = [n for n, p in stack.processes.items() if not p.running]
        if dead:
            err.print(f"[red]{', '.join(dead)} exited; see {stack.logs_dir}[/red]")
            return
        time.sleep(0.5)


def _print_stack(stack: Any, settings: Settings) -> None:
    table = Table(title="vidpipe local stack", show_header=False)
    table.add_row("broker", str(stack.bootstrap))
    table.add_row(
        "provider",
        (stack.emulator_url and f"emulator at {stack.emulator_url}")
        or ", ".join(settings.providers.configured()),
    )
    table.add_row("database", settings.database_url_safe)
    table.add_row("videos", settings.storage_url)
    table.add_row("logs", str(stack.logs_dir))
    for name, proc in stack.processes.items():
        table.add_row(name, f"pid {proc.pid}")
    console.print(table)


@app.command()
def down() -> None:
    """Stop the stack a `vidpipe up` started."""
    from vidpipe.dev.stack import stop_recorded_stack

    stopped = stop_recorded_stack(_settings().state_dir)
    console.print("stopped: " + ", ".join(stopped) if stopped else "nothing was running.")


@app.command()
def submit(
    prompt: Annotated[str | None, typer.Argument(help="What the video should show.")] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="NDJSON, one request per line ('-' for stdin)."),
    ] = None,
    image_url: Annotated[str | None, typer.Option(help="https URL of an input image.")] = None,
    seconds: Annotated[int, typer.Option(min=1, max=60)] = 5,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT")] = "1280x720",
    variants: Annotated[int, typer.Option(min=1, max=4)] = 1,
    provider: Annotated[str | None, typer.Option(help="azure-sora or openai-videos")] = None,
    model: Annotated[str | None, typer.Option()] = None,
    request_id: Annotated[str | None, typer.Option(help="Default: a new one.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow until each one ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 900,
) -> None:
    """Publish GenerationRequested events (one from the options, or a batch with --file).

    Every request is validated before anything is sent; the request ids are printed.
    """
    from vidpipe.bus.upstream import load_ndjson, new_request

    settings = _settings()
    if (prompt is None) == (file is None):
        raise _fail("give either a PROMPT or --file FILE")
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot read {file}: {exc.strerror}") from None
        requests, errors = load_ndjson(text.splitlines())
        if errors:
            for line in errors[:10]:
                err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
            more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
            raise _fail(f"{len(errors)} invalid line(s){more}; nothing was sent")
        if not requests:
            raise _fail(f"{file} holds no request")
    else:
        assert prompt is not None
        fields: dict[str, Any] = {
            "seconds": seconds,
            "size": size,
            "variants": variants,
            "provider": provider,
            "model": model,
            "input_image_url": image_url,
        }
        try:
            requests = [new_request(prompt, request_id=request_id, **fields)]
        except ValidationError as exc:
            first = exc.errors()[0]
            raise _fail(
                f"invalid request: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
    bootstrap = _bootstrap(settings)
    asyncio.run(_publish_all(bootstrap, settings, requests))
    for request in requests:
        console.print(request.request_id, highlight=False)
    if len(requests) > 1:
        err.print(f"sent {len(requests)} requests to {settings.topics.generation_requested}")
    if wait:
        ids = [r.request_id for r in requests]
        views = asyncio.run(_follow(settings, ids, timeout))
        if any(views.get(rid, {}).get("status") != "stored" for rid in ids):
            raise typer.Exit(1)


async def _publish_all(bootstrap: str, settings: Settings, requests: list[Any]) -> None:
    from rich.progress import Progress

    from vidpipe.bus.upstream import RequestPublisher

    async with RequestPublisher(bootstrap, topic_prefix=settings.topic_prefix) as publisher:
        with Progress(console=err, transient=True, disable=len(requests) < 50) as progress:
            task = progress.add_task("publishing", total=len(requests))
            for request in requests:
                await publisher.publish(request)
                progress.advance(task)


@app.command()
def status(
    request_id: Annotated[str | None, typer.Argument(help="Default: the latest requests.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Show what the records say about one request, or the latest ones."""
    from vidpipe.db.records import Records
    from vidpipe.db.tables import open_engine

    settings = _settings()

    async def load() -> list[dict[str, Any]]:
        engine = await open_engine(settings.database_url)
        try:
            records = Records(engine)
            if request_id:
                view = await records.get(request_id)
                return [view.as_json()] if view else []
            return [v.as_json() for v in await records.recent(limit)]
        finally:
            await engine.dispose()

    rows = asyncio.run(load())
    if request_id and not rows:
        if as_json:
            console.print_json(json.dumps({"request_id": request_id, "status": "unknown"}))
        raise _fail(f"no record of request {request_id!r}", 1)
    if as_json:
        payload: Any = rows[0] if request_id else rows
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    console.print(_status_table(rows))


def _status_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("request", "status", "progress", "provider", "video / error")
    colours = {"stored": "green", "failed": "red", "download_unavailable": "yellow"}
    for row in rows:
        colour = colours.get(row["status"], "cyan")
        detail = row.get("output_image_url") or row.get("error_message") or ""
        progress = "" if row.get("progress") is None else f"{row['progress']}%"
        table.add_row(
            row["request_id"],
            f"[{colour}]{row['status']}[/{colour}]",
            progress,
            row.get("provider") or "",
            detail,
        )
    return table


async def _follow(settings: Settings, request_ids: list[str], timeout_s: float) -> dict[str, Any]:
    """A live table of the requests until each is terminal (or the timeout passes)."""
    from vidpipe.db.records import TERMINAL_STATUSES, Records
    from vidpipe.db.tables import open_engine

    engine = await open_engine(settings.database_url)
    records = Records(engine)
    deadline = time.monotonic() + timeout_s
    rows: dict[str, Any] = {}
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while time.monotonic() < deadline:
                views = await records.many(request_ids)
                rows = {
                    rid: (
                        views[rid].as_json()
                        if rid in views
                        else {"request_id": rid, "status": "published"}
                    )
                    for rid in request_ids
                }
                live.update(_status_table(list(rows.values())))
                if all(r["status"] in TERMINAL_STATUSES for r in rows.values()):
                    break
                await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
    return rows


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Leave the stack running afterwards.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the samples.")] = 300,
) -> None:
    """Start the local stack, send sample requests, follow them, show where the videos are."""
    from vidpipe.bus.upstream import RequestPublisher, new_request
    from vidpipe.dev.stack import LocalStack

    # The emulator's jobs take seconds; poll often and retry downloads soon so the demo moves.
    os.environ.setdefault("VIDPIPE_POLL_INTERVAL_S", "1")
    os.environ.setdefault("VIDPIPE_REDOWNLOAD_INITIAL_S", "2")
    os.environ.setdefault("VIDPIPE_REDOWNLOAD_MAX_INTERVAL_S", "5")
    settings = _settings()
    stack = LocalStack(settings, state_dir=settings.state_dir)
    with console.status("starting the local stack (the first run fetches Kafka from Maven)…"):
        stack.start()
    _print_stack(stack, settings)
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

        async def send() -> None:
            async with RequestPublisher(
                stack.bootstrap or "", topic_prefix=settings.topic_prefix
            ) as publisher:
                for request in samples:
                    await publisher.publish(request)

        asyncio.run(send())
        console.print(f"sent {len(samples)} requests; following them…")
        rows = asyncio.run(_follow(settings, [s.request_id for s in samples], timeout))
        console.print()
        ok = _report_demo(rows, settings)
    finally:
        if keep:
            console.print("[dim]the stack keeps running; `vidpipe down` stops it[/dim]")
            _wait_for_signal(stack)
        with console.status("stopping the local stack…"):
            stack.stop()
    if not ok:
        raise typer.Exit(1)


def _report_demo(rows: dict[str, Any], settings: Settings) -> bool:
    from vidpipe.media.sample import probe_mp4

    ok = True
    for rid, row in rows.items():
        url = row.get("output_image_url")
        if row.get("status") != "stored" or not url:
            err.print(f"[red]{rid} ended {row.get('status')}: {row.get('error_message')}[/red]")
            ok = False
            continue
        path = Path(url.removeprefix("file://"))
        info = probe_mp4(path)
        console.print(
            f"[green]{rid}[/green] {info['width']}x{info['height']}, {info['frames']} frames,"
            f" {info['codec']}, opens in PyAV:",
        )
        console.print(f"  {path}", soft_wrap=True, highlight=False)
        if row.get("user_message"):
            console.print(f"  told the user: {row['user_message']}", soft_wrap=True)
    console.print(f"records: {settings.database_url_safe} (table `projects`; `vidpipe status`)")
    return ok


@app.command()
def emulator(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8089,
    time_scale: Annotated[float, typer.Option(min=0.001, help="60 = a minute per second.")] = 1.0,
    download: Annotated[
        str, typer.Option(help="ok, missing, delayed, flaky or json_body (for every job).")
    ] = "ok",
) -> None:
    """Serve the provider emulator (both protocols). Its key: VIDPIPE_EMULATOR_API_KEY."""
    from vidpipe.dev.emulator.config import EmulatorConfig
    from vidpipe.dev.emulator.server import serve

    key = os.environ.get("VIDPIPE_EMULATOR_API_KEY")
    if not key:
        raise _fail("set VIDPIPE_EMULATOR_API_KEY: the emulator checks keys like the real APIs")
    try:
        config = EmulatorConfig.model_validate(
            {"api_key": key, "time_scale": time_scale, "download": download}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _fail(f"--{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    serve(config, host=host, port=port)


topics_app = typer.Typer(help="Create or check vidpipe's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create every missing topic with its configured partitions; report the others."""
    from vidpipe.bus.admin import ensure_all_topics

    settings = _settings()
    bootstrap = _bootstrap(settings)
    report = asyncio.run(ensure_all_topics(settings, bootstrap))
    table = Table("topic", "partitions", "state")
    mismatched = 0
    for topic, state in report.items():
        colour = "green" if state == "created" else "yellow" if "wanted" in state else "dim"
        mismatched += "wanted" in state
        table.add_row(topic, str(settings.partitions_for(topic)), f"[{colour}]{state}[/{colour}]")
    console.print(table)
    created = sum(state == "created" for state in report.values())
    console.print(
        f"{created} created, {len(report) - created - mismatched} already right, "
        f"{mismatched} with another partition count (left as they are: changing it re-keys data)"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
