"""`vidpipe replay …` and `vidpipe dlq …`: the operator's recovery commands (typer + rich).

vidpipe replay records --target-url URL      rebuild `projects` from the `events` log
vidpipe replay redrive --topic T --since -1h re-publish a window of a topic to itself
vidpipe replay reset --group G --to TIME     move a stopped group's offsets
vidpipe dlq list                             what is in the dead-letter topic
vidpipe dlq redrive --reason TEXT            send dead letters back to their topics

This module parses arguments, calls vidpipe.ops and renders; the logic lives in vidpipe.ops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.registry import STAGES
from vidpipe.cli.context import CliContext, cli_context
from vidpipe.errors import OpsError

if TYPE_CHECKING:
    from vidpipe.ops import ProgressHook

__all__ = ["commands", "dlq_app", "replay_app"]

T = TypeVar("T")

commands = typer.Typer()
replay_app = typer.Typer(
    help="Replay for recovery: rebuild the records, redrive a topic, reset a consumer group.",
    no_args_is_help=True,
)
dlq_app = typer.Typer(
    help="The dead-letter topic: list the letters, send them back where they came from.",
    no_args_is_help=True,
)
commands.add_typer(replay_app, name="replay")
commands.add_typer(dlq_app, name="dlq")

_TIME_HELP = "ISO 8601 (2026-11-24T10:00:00Z) or relative (-15m, -2h, -1d)."
_RECORDS_HELP = (
    "Rebuild the `projects` table from the `events` log into an empty database.\n\n"
    "Events are applied in log order (seq) through the recorder's own code, so the "
    "rebuilt rows are what the recorder would write. Refused when the target already "
    "holds projects or events."
)
_REDRIVE_HELP = (
    "Re-publish a time window of a topic to itself, so every stage reading it gets it "
    "again.\n\n"
    "Key, value and headers are kept, plus a `vidpipe-redriven-from: "
    "topic/partition/offset` header, on the same partition. Stages are idempotent "
    "(event ids, storage keys, the submitter's ledger), so a redrive repeats no "
    "provider job, no stored video and no record."
)
_RESET_HELP = (
    "Move a stopped consumer group's committed offsets.\n\n"
    "Refused (exit 1) while the group has live members: stop that stage, reset, start "
    "it again and it reads from the new offsets. A time past the end of a partition "
    "means its end."
)
_GROUP_HELP = f"A stage name ({', '.join(STAGES)}) or a full group id."
_LIST_HELP = "List the dead letters: when, stage, where from, key, reason, value."
_DLQ_REDRIVE_HELP = (
    "Send matching dead letters back: original value and key, to the original topic.\n\n"
    "Each copy carries `vidpipe-redriven-from-dlq: partition/offset`; a message "
    "several stages dead-lettered is sent once. Fix the cause first: a message that "
    "is still poison simply goes back to the dead-letter topic as a new letter (the "
    "old letters stay)."
)


def _run(cli: CliContext, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`; turn the failures an operator can act on into one line and an exit code."""
    from aiokafka.errors import KafkaError
    from sqlalchemy.exc import SQLAlchemyError

    # aiokafka logs each failed connection attempt; the one-line error below says it better.
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(work)
    except OpsError as exc:
        raise cli.fail(str(exc), exc.exit_code) from None
    except KafkaError as exc:
        raise cli.fail(f"Kafka: {_one_line(exc)}", 1) from None
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise cli.fail(f"database: {_one_line(cause)}", 1) from None
    except (OSError, TimeoutError) as exc:
        raise cli.fail(_one_line(exc), 1) from None
    finally:
        kafka_log.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]


@contextmanager
def _progress(cli: CliContext, description: str) -> Iterator[ProgressHook]:
    """A progress bar on stderr (so --json output stays clean); silent when not a terminal."""
    err = cli.err
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=None)

        def hook(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield hook


def _time(cli: CliContext, text: str, option: str) -> datetime:
    from vidpipe.ops import parse_time

    try:
        return parse_time(text)
    except OpsError as exc:
        raise cli.fail(f"{option}: {exc}") from None


def _safe_url(url: str) -> str:
    """The URL without its password, for summaries."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


def _clip(text: str | None, width: int) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- replay --------------------------------------------------------------------------------


@replay_app.command("records", help=_RECORDS_HELP)
def replay_records(
    ctx: typer.Context,
    target_url: Annotated[
        str,
        typer.Option(help="An EMPTY database to rebuild into (sqlite:///path or postgresql://)."),
    ],
    source_url: Annotated[
        str | None, typer.Option(help="Where the `events` log is. Default: VIDPIPE_DATABASE_URL.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Events read per query.")] = 500,
) -> None:
    from sqlalchemy.engine import make_url

    from vidpipe.db.tables import normalise_database_url, open_engine
    from vidpipe.ops.records import RecordsReplay
    from vidpipe.ops.records import replay_records as replay

    cli = cli_context(ctx)
    source = source_url or cli.settings.database_url
    for option, url in (("--source-url", source), ("--target-url", target_url)):
        try:
            normalise_database_url(url)
        except Exception:
            raise cli.fail(f"{option}: not a sqlite:// or postgresql:// URL") from None
    if normalise_database_url(source) == normalise_database_url(target_url):
        raise cli.fail("--target-url is the source database; give an empty one")
    # SQLite would create a missing source file (empty) and report "no events table": say why.
    source_file = make_url(source).database if source.startswith("sqlite") else None
    if source_file and source_file != ":memory:" and not Path(source_file).exists():
        raise cli.fail(f"--source-url: no SQLite file at {source_file}")

    async def work() -> RecordsReplay:
        source_engine = await open_engine(source, create=False)
        target_engine = await open_engine(target_url, create=True)
        try:
            with _progress(cli, "replaying events") as hook:
                return await replay(source_engine, target_engine, batch=batch, progress=hook)
        finally:
            await source_engine.dispose()
            await target_engine.dispose()

    result = _run(cli, work())
    table = Table(title="replay records", show_header=False)
    table.add_row("from", _safe_url(source))
    table.add_row("into", _safe_url(target_url))
    table.add_row("events read", str(result.events_read))
    table.add_row("events applied", str(result.applied))
    table.add_row("projects built", str(result.projects_built))
    skipped = ", ".join(f"{t}: {n}" for t, n in sorted(result.skipped_unknown.items()))
    table.add_row(
        "skipped (unknown types)", f"{result.skipped}" + (f" ({skipped})" if skipped else "")
    )
    table.add_row("skipped (invalid payloads)", str(result.invalid))
    table.add_row("time", f"{result.elapsed_s:.2f} s")
    cli.console.print(table)


@replay_app.command("redrive", help=_REDRIVE_HELP)
def replay_redrive(
    ctx: typer.Context,
    topic: Annotated[str, typer.Option(help="A full topic name or a suffix like job.succeeded.")],
    since: Annotated[str, typer.Option(help=f"Start of the window. {_TIME_HELP}")],
    until: Annotated[
        str | None, typer.Option(help=f"End of the window (default: now). {_TIME_HELP}")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option(help="Only this request's messages (the message key).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")
    ] = False,
) -> None:
    from vidpipe.ops.redrive import RedriveResult, redrive

    cli = cli_context(ctx)
    since_at = _time(cli, since, "--since")
    until_at = _time(cli, until, "--until") if until else None
    bootstrap_servers = cli.broker_address

    async def work() -> RedriveResult:
        with _progress(cli, "reading the window") as hook:
            return await redrive(
                bootstrap_servers,
                topic,
                prefix=cli.settings.topic_prefix,
                since=since_at,
                until=until_at,
                request_id=request_id,
                dry_run=dry_run,
                progress=hook,
            )

    result = _run(cli, work())
    verb = "would send" if dry_run else "sent"
    end = until_at.isoformat(timespec="seconds") if until_at else "now"
    window = f"{since_at.isoformat(timespec='seconds')} … {end}"
    table = Table(
        "partition", "offsets", "scanned", "matched", verb, "keys", title=f"{result.topic}"
    )
    for part in result.partitions:
        sent = part.matched if dry_run else part.sent
        keys = ", ".join(part.sample_keys) + (" …" if part.matched > len(part.sample_keys) else "")
        table.add_row(
            str(part.partition),
            f"{part.start}..{part.end}",
            str(part.scanned),
            str(part.matched),
            str(sent),
            keys,
        )
    cli.console.print(table)
    only = f", request {request_id}" if request_id else ""
    total_sent = result.matched if dry_run else result.sent
    cli.console.print(
        f"{'dry run: ' if dry_run else ''}{result.matched} matched, {total_sent} {verb} "
        f"(window {window}{only}) in {result.elapsed_s:.2f} s",
        highlight=False,
    )


@replay_app.command("reset", help=_RESET_HELP)
def replay_reset(
    ctx: typer.Context,
    group: Annotated[str, typer.Option(help=_GROUP_HELP)],
    to: Annotated[str, typer.Option(help=f"earliest, latest, or a time: {_TIME_HELP}")],
    topic: Annotated[
        list[str] | None,
        typer.Option(help="Topic (full or suffix); repeatable. Default: the group's topics."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the new offsets; commit nothing.")
    ] = False,
) -> None:
    from vidpipe.ops.offsets import ResetResult, reset_offsets, resolve_group

    cli = cli_context(ctx)
    target: Literal["earliest", "latest"] | datetime
    if to in ("earliest", "latest"):
        target = "earliest" if to == "earliest" else "latest"
    else:
        target = _time(cli, to, "--to")
    bootstrap_servers = cli.broker_address
    prefix = cli.settings.topic_prefix
    group_id = resolve_group(group, prefix=prefix, stages=STAGES)

    async def work() -> ResetResult:
        with _progress(cli, "resetting offsets") as hook:
            hook(0, 1)
            result = await reset_offsets(
                bootstrap_servers,
                group_id,
                to=target,
                topics=topic or (),
                prefix=prefix,
                dry_run=dry_run,
            )
            hook(1, 1)
            return result

    result = _run(cli, work())
    label = "new (dry run)" if dry_run else "after"
    table = Table("topic", "partition", "before", label, "moved", title=f"group {result.group}")
    for change in result.changes:
        moved = "" if change.delta is None else f"{change.delta:+d}"
        table.add_row(
            change.topic,
            str(change.partition),
            "-" if change.before is None else str(change.before),
            str(change.after),
            moved,
        )
    cli.console.print(table)
    what = "would move" if dry_run else "moved"
    cli.console.print(
        f"{'dry run: ' if dry_run else ''}{what} {len(result.changes)} partition(s) of group "
        f"{result.group} (was {result.state}) to {result.to}",
        highlight=False,
    )


# --- dead letters --------------------------------------------------------------------------


@dlq_app.command("list", help=_LIST_HELP)
def dlq_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Show the latest N.")] = 50,
    reason: Annotated[
        str | None, typer.Option(help="Only letters whose reason contains this (any case).")
    ] = None,
    stage: Annotated[str | None, typer.Option(help="Only letters from this stage.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list on stdout.")] = False,
) -> None:
    from vidpipe.ops.dlq import DlqListing, list_dead_letters

    cli = cli_context(ctx)
    settings = cli.settings
    bootstrap_servers = cli.broker_address

    async def work() -> DlqListing:
        with _progress(cli, "reading dead letters") as hook:
            return await list_dead_letters(
                bootstrap_servers,
                settings.topics.deadletter,
                reason=reason,
                stage=stage,
                limit=limit,
                progress=hook,
            )

    listing = _run(cli, work())
    if as_json:
        sys.stdout.write(json.dumps([e.as_json() for e in listing.entries], indent=2) + "\n")
        return
    table = Table("when (UTC)", "stage", "key", "reason", "value")
    # Where the letter came from is what an operator acts on: fold it, never cut it.
    table.add_column("original (topic/partition/offset)", overflow="fold")
    for entry in listing.entries:
        letter = entry.letter
        when = entry.when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        if letter is None:
            table.add_row(when, "?", "", entry.problem, "", f"dlq {entry.partition}/{entry.offset}")
            continue
        table.add_row(
            when,
            letter.stage,
            _clip(letter.original_key, 24),
            _clip(letter.reason, 60),
            _clip(letter.original_value, 40),
            f"{letter.original_topic}/{letter.original_partition}/{letter.original_offset}",
        )
    cli.console.print(table)
    cli.console.print(
        f"{len(listing.entries)} shown of {listing.matched} matching; "
        f"{listing.scanned} letters in {settings.topics.deadletter}"
        + (f", {listing.unreadable} unreadable" if listing.unreadable else ""),
        highlight=False,
    )


@dlq_app.command("redrive", help=_DLQ_REDRIVE_HELP)
def dlq_redrive(
    ctx: typer.Context,
    reason: Annotated[
        str | None, typer.Option(help="Only letters whose reason contains this (any case).")
    ] = None,
    stage: Annotated[str | None, typer.Option(help="Only letters from this stage.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")
    ] = False,
) -> None:
    from vidpipe.ops.dlq import DlqRedrive, redrive_dead_letters

    cli = cli_context(ctx)
    deadletter_topic = cli.settings.topics.deadletter
    bootstrap_servers = cli.broker_address

    async def work() -> DlqRedrive:
        with _progress(cli, "redriving dead letters") as hook:
            return await redrive_dead_letters(
                bootstrap_servers,
                deadletter_topic,
                reason=reason,
                stage=stage,
                dry_run=dry_run,
                progress=hook,
            )

    result = _run(cli, work())
    verb = "would send" if dry_run else "sent"
    table = Table("original topic", "matched", verb, title="dlq redrive")
    for name, counts in sorted(result.topics.items()):
        missing = result.missing_topics.get(name, 0)
        sent = counts.matched - missing if dry_run else counts.sent
        table.add_row(name, str(counts.matched), str(sent) + (" (topic gone)" if missing else ""))
    cli.console.print(table)
    total = sum(c.matched for c in result.topics.values()) - sum(result.missing_topics.values())
    cli.console.print(
        f"{'dry run: ' if dry_run else ''}{result.matched} letters matched of {result.scanned}; "
        f"{total if dry_run else result.sent} {verb}"
        + (
            f"; {result.duplicates} duplicate letters of the same message"
            if result.duplicates
            else ""
        )
        + f" in {result.elapsed_s:.2f} s",
        highlight=False,
    )
    for refused in result.refused:
        cli.console.print(f"refused: {refused}", highlight=False, markup=False)
