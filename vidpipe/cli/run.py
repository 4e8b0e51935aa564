"""`vidpipe run STAGE` (one stage, or N replicas of it) and `vidpipe topics ensure`."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from services.registry import CORE_STAGES, FALLBACK_STAGES, REGISTRY, STAGES, create_stage
from vidpipe.cli.context import CliContext, cli_context
from vidpipe.cli.processes import ManagedProcess, stage_argv, wait_for_signal
from vidpipe.errors import ConfigurationError

__all__ = ["commands"]

if TYPE_CHECKING:
    StageName = str
else:
    # The registry's names as a Literal, so typer refuses any other (mypy sees a plain str).
    StageName = Literal[STAGES]

_STAGE_HELP = (
    f"The stage to run: one of {', '.join(CORE_STAGES)} (the pipeline), "
    f"or {', '.join(FALLBACK_STAGES)} (the fallbacks)."
)
# Every stage with what it does, from the registry (the one list of stages).
_STAGES_EPILOG = "Stages:\n\n" + "\n".join(
    f"  {stage.name:<13} {stage.summary}" for stage in REGISTRY
)

commands = typer.Typer()
topics_app = typer.Typer(help="Create or check vidpipe's Kafka topics.", no_args_is_help=True)
commands.add_typer(topics_app, name="topics")


@commands.command(epilog=_STAGES_EPILOG)
def run(
    ctx: typer.Context,
    name: Annotated[
        StageName, typer.Argument(metavar="STAGE", help=_STAGE_HELP, show_choices=False)
    ],
    replicas: Annotated[
        int, typer.Option(min=1, max=64, help="Processes of this stage, one consumer each.")
    ] = 1,
) -> None:
    """Run one stage in the foreground (broker: VIDPIPE_KAFKA_BOOTSTRAP, else `vidpipe up`'s).

    With --replicas N, N processes join the stage's consumer group and Kafka shares the
    partitions between them; Ctrl-C stops them all.
    """
    cli = cli_context(ctx)
    if replicas > 1:
        _run_replicas(cli, name, replicas)
        return
    try:
        stage = create_stage(name, cli.settings, bootstrap_servers=cli.broker_address)
    except ConfigurationError as exc:
        raise cli.fail(str(exc)) from None
    stage.run()


def _run_replicas(cli: CliContext, stage: str, replicas: int) -> None:
    # Resolved once here, so every replica joins the same broker.
    env = {**os.environ, "VIDPIPE_KAFKA_BOOTSTRAP": cli.broker_address}
    logs = cli.settings.state_dir / "logs"
    processes = [
        ManagedProcess(f"{stage}.{i}", stage_argv(stage), env, logs / f"{stage}.{i}.log").start()
        for i in range(replicas)
    ]
    cli.err.print(
        f"{replicas} replicas of {stage}: "
        f"pids {', '.join(str(p.pid) for p in processes)}; logs in {logs}"
    )
    stop = False
    try:
        stop = wait_for_signal(lambda: any(p.running for p in processes))
    finally:
        for process in processes:
            process.stop()
    failed = [
        p.name
        for p in processes
        if p.proc is not None and p.proc.returncode not in (0, -signal.SIGTERM)
    ]
    if failed and not stop:
        raise cli.fail(f"exited: {', '.join(failed)}; see {logs}", 1)


@topics_app.command("ensure")
def topics_ensure(ctx: typer.Context) -> None:
    """Create every missing topic with its configured partitions; report the others."""
    from vidpipe.bus.admin import BrokerNotReadyError, ensure_all_topics

    cli = cli_context(ctx)
    settings = cli.settings
    try:
        report = asyncio.run(ensure_all_topics(settings, cli.broker_address))
    except BrokerNotReadyError as exc:  # refused credentials or TLS: one line, no secret
        raise cli.fail(str(exc)) from None
    table = Table("topic", "partitions", "state")
    mismatched = 0
    for topic, state in report.items():
        colour = "green" if state == "created" else "yellow" if "wanted" in state else "dim"
        mismatched += "wanted" in state
        table.add_row(topic, str(settings.partitions_for(topic)), f"[{colour}]{state}[/{colour}]")
    cli.console.print(table)
    created = sum(state == "created" for state in report.values())
    cli.console.print(
        f"{created} created, {len(report) - created - mismatched} already right, "
        f"{mismatched} with another partition count (left as they are: changing it re-keys data)"
    )
