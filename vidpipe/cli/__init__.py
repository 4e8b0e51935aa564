"""The production `vidpipe` command (typer + rich), one module per group of commands.

    run.py       vidpipe run STAGE [--replicas N]    one stage (or N processes of it)
                 vidpipe topics ensure               create the missing topics
    requests.py  vidpipe submit PROMPT | --file F    publish requests; --wait follows them
                 vidpipe status [ID]                 what the records say (--json for scripts)
                 vidpipe cancel ID                   ask for a request to be stopped
    ops.py       vidpipe replay records|redrive|reset, vidpipe dlq list|redrive   recovery
    costs.py     vidpipe costs [--by KEY]            what the jobs cost, by day and provider
    gateway.py   vidpipe gateway                     the HTTP gateway and its dashboard
    context.py   what they share: settings, the broker address, consoles, fail()

The dev stack's commands (up, down, demo, emulator) live in vidpipe.dev.cli: the program's entry
point (vidpipe/__main__.py) adds them when the dev tooling is installed.
"""

from __future__ import annotations

import typer

from vidpipe.cli import costs, gateway, ops, requests, run

__all__ = ["app", "build_app", "main"]


def build_app(*extra_commands: typer.Typer) -> typer.Typer:
    """The `vidpipe` app: the production commands, then each of `extra_commands`' commands."""
    program = typer.Typer(
        name="vidpipe",
        help="A Kafka pipeline that turns prompts into stored videos, reliably.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    # Without a name, a group's commands join the top level (`vidpipe run`, not `vidpipe run run`).
    for commands in (
        run.commands,
        requests.commands,
        ops.commands,
        costs.commands,
        gateway.commands,
        *extra_commands,
    ):
        program.add_typer(commands)
    return program


app = build_app()


def main() -> None:
    """The production commands only; `vidpipe/__main__.py` is the program with the dev ones."""
    app()
