"""`vidpipe submit` (publish requests, optionally follow them), `vidpipe status` (the records) and
`vidpipe cancel` (ask for a request to be stopped).

`follow_requests` and `status_table` are also what `vidpipe demo` shows.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.table import Table

from vidpipe.cli.context import CliContext, cli_context

__all__ = ["commands", "follow_requests", "status_table"]

commands = typer.Typer()


@commands.command()
def submit(
    ctx: typer.Context,
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

    cli = cli_context(ctx)
    settings = cli.settings
    if (prompt is None) == (file is None):
        raise cli.fail("give either a PROMPT or --file FILE")
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except OSError as exc:
            raise cli.fail(f"cannot read {file}: {exc.strerror}") from None
        requests, errors = load_ndjson(text.splitlines())
        if errors:
            for line in errors[:10]:
                cli.err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
            more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
            raise cli.fail(f"{len(errors)} invalid line(s){more}; nothing was sent")
        if not requests:
            raise cli.fail(f"{file} holds no request")
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
            raise cli.fail(
                f"invalid request: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
    broker = cli.broker_address  # resolved (or failed) before anything is sent
    from vidpipe.errors import BrokerNotReadyError

    try:
        asyncio.run(_publish_all(cli, broker, requests))
    except BrokerNotReadyError as exc:  # refused credentials or TLS: one line, no secret
        raise cli.fail(str(exc)) from None
    for request in requests:
        cli.console.print(request.request_id, highlight=False)
    if len(requests) > 1:
        cli.err.print(f"sent {len(requests)} requests to {settings.topics.generation_requested}")
    if wait:
        ids = [r.request_id for r in requests]
        views = asyncio.run(follow_requests(cli, ids, timeout))
        if any(views.get(rid, {}).get("status") != "stored" for rid in ids):
            raise typer.Exit(1)


async def _publish_all(cli: CliContext, broker: str, requests: list[Any]) -> None:
    from rich.progress import Progress

    from vidpipe.bus.upstream import RequestPublisher

    async with RequestPublisher(broker, topic_prefix=cli.settings.topic_prefix) as publisher:
        with Progress(console=cli.err, transient=True, disable=len(requests) < 50) as progress:
            task = progress.add_task("publishing", total=len(requests))
            for request in requests:
                await publisher.publish(request)
                progress.advance(task)


@commands.command()
def status(
    ctx: typer.Context,
    request_id: Annotated[str | None, typer.Argument(help="Default: the latest requests.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Show what the records say about one request, or the latest ones."""
    from vidpipe.db.records import Records
    from vidpipe.db.tables import open_engine

    cli = cli_context(ctx)
    settings = cli.settings

    async def load() -> list[dict[str, Any]]:
        engine = await open_engine(settings.database_url)
        try:
            records = Records(engine)
            if request_id:
                view = await records.get(request_id)
                if view is None:
                    return []
                from vidpipe.db.costs import lineage_cost

                # With its failover children: what the request cost in all (docs/costs.md).
                return [
                    {**view.as_json(), "lineage_cost_usd": await lineage_cost(engine, request_id)}
                ]
            return [v.as_json() for v in await records.recent(limit)]
        finally:
            await engine.dispose()

    rows = asyncio.run(load())
    if request_id and not rows:
        if as_json:
            cli.console.print_json(json.dumps({"request_id": request_id, "status": "unknown"}))
        raise cli.fail(f"no record of request {request_id!r}", 1)
    if as_json:
        payload: Any = rows[0] if request_id else rows
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    cli.console.print(status_table(rows))


@commands.command()
def cancel(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request to stop.")],
    reason: Annotated[str | None, typer.Option(help="Recorded with the cancel.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow until the request ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 120,
) -> None:
    """Publish a CancelRequested for a request the records know and that has not ended.

    A request not yet submitted never is; a job in flight is cancelled at the provider; the
    record ends `cancelled`. A request whose job already ended is refused (exit 1)."""
    from schemas.events import CancelRequested
    from vidpipe.db.records import Records
    from vidpipe.db.tables import open_engine
    from vidpipe.errors import BrokerNotReadyError
    from vidpipe.policy.cancel import lineage_cancels

    cli = cli_context(ctx)
    try:
        event = CancelRequested.model_validate(
            {"request_id": request_id, "source": "cli", "reason": reason}
        )
    except ValidationError as exc:
        raise cli.fail(f"invalid request id {request_id!r}: {exc.errors()[0]['msg']}") from None

    async def recorded() -> list[CancelRequested] | str:
        engine = await open_engine(cli.settings.database_url)
        try:
            records = Records(engine)
            view = await records.get(request_id)
            child_id = view.failover_request_id if view else None
            child_view = await records.get(child_id) if child_id else None
            child = (
                None if child_id is None else (child_id, child_view.status if child_view else None)
            )
            return lineage_cancels(event, view.status if view else None, child)
        finally:
            await engine.dispose()

    # The lineage's latest child too, while it can be stopped (vidpipe.policy.cancel).
    cancels = asyncio.run(recorded())
    if isinstance(cancels, str):
        raise cli.fail(cancels, 1)
    broker = cli.broker_address

    async def send() -> None:
        from vidpipe.bus.upstream import RequestPublisher

        async with RequestPublisher(broker, topic_prefix=cli.settings.topic_prefix) as publisher:
            for cancel in cancels:
                await publisher.publish_cancel(cancel)

    try:
        asyncio.run(send())
    except BrokerNotReadyError as exc:
        raise cli.fail(str(exc)) from None
    cli.err.print(f"cancel requested for {request_id}", highlight=False)
    if wait:
        views = asyncio.run(follow_requests(cli, [request_id], timeout))
        if views.get(request_id, {}).get("status") != "cancelled":
            raise typer.Exit(1)


def status_table(rows: list[dict[str, Any]]) -> Table:
    """One line per request: status (coloured), progress, provider, the video or the error."""
    table = Table("request", "status", "progress", "provider", "cost", "video / error")
    colours = {
        "stored": "green",
        "failed": "red",
        "download_unavailable": "yellow",
        "cancelled": "magenta",
    }
    for row in rows:
        colour = colours.get(row["status"], "cyan")
        detail = row.get("output_image_url") or row.get("error_message") or ""
        progress = "" if row.get("progress") is None else f"{row['progress']}%"
        table.add_row(
            row["request_id"],
            f"[{colour}]{row['status']}[/{colour}]",
            progress,
            row.get("provider") or "",
            _cost(row),
            detail,
        )
    return table


def _cost(row: dict[str, Any]) -> str:
    """The final cost, or `~` the estimate while the job runs (docs/costs.md)."""
    if row.get("cost_usd") is not None:
        return f"${row['cost_usd']:.2f}"
    if row.get("estimated_cost_usd") is not None:
        return f"~${row['estimated_cost_usd']:.2f}"
    return ""


async def follow_requests(
    cli: CliContext, request_ids: list[str], timeout_s: float
) -> dict[str, Any]:
    """A live table of the requests until each is terminal (or the timeout passes)."""
    from vidpipe.db.records import Records
    from vidpipe.db.tables import open_engine
    from vidpipe.policy.projection import TERMINAL_STATUSES

    engine = await open_engine(cli.settings.database_url)
    records = Records(engine)
    deadline = time.monotonic() + timeout_s
    rows: dict[str, Any] = {}
    try:
        with Live(console=cli.console, refresh_per_second=4, transient=False) as live:
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
                live.update(status_table(list(rows.values())))
                if all(r["status"] in TERMINAL_STATUSES for r in rows.values()):
                    break
                await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
    return rows
