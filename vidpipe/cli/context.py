"""What every command shares, made once per invocation: settings, broker address, consoles, fail().

Each command takes the `typer.Context` and calls `cli_context(ctx)`. The settings are read and
the broker address resolved on first use, so `--help` and the commands that need neither never
fail on them.
"""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from vidpipe.errors import ConfigurationError
from vidpipe.settings import Settings

__all__ = ["CliContext", "cli_context"]


class CliContext:
    """One invocation's settings, broker address and consoles (stdout for results, stderr else)."""

    def __init__(self) -> None:
        self.console = Console()
        self.err = Console(stderr=True)
        self._settings: Settings | None = None
        self._broker_address: str | None = None

    @property
    def settings(self) -> Settings:
        """The settings from the environment; a bad one ends the command naming the variable."""
        if self._settings is None:
            try:
                self._settings = Settings()
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                raise self.fail(f"bad setting VIDPIPE_{field.upper()}: {first['msg']}") from None
        return self._settings

    @property
    def broker_address(self) -> str:
        """Kafka's bootstrap servers, by vidpipe.bus.address's one rule; none ends the command."""
        if self._broker_address is None:
            # Imported here: the bus pulls in FastStream, which commands without Kafka never need.
            from vidpipe.bus.address import broker_address

            try:
                self._broker_address = broker_address(self.settings)
            except ConfigurationError as exc:
                raise self.fail(str(exc)) from None
        return self._broker_address

    def fail(self, message: str, code: int = 2) -> typer.Exit:
        """Print `message` as one line on stderr; return the exit for the caller to raise."""
        self.err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        return typer.Exit(code)


def cli_context(ctx: typer.Context) -> CliContext:
    """This invocation's context, kept on the root command's context (made on first use)."""
    return ctx.find_root().ensure_object(CliContext)
