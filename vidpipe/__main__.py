"""The `vidpipe` program (`vidpipe ...` or `python -m vidpipe ...`).

The production commands (vidpipe.cli), plus the dev stack's (up, down, demo, emulator from
vidpipe.dev.cli) when vidpipe.dev is installed: a checkout's editable install and the compose
image have it; the wheel leaves it out.
"""

from __future__ import annotations

import importlib.util

import typer

from vidpipe.cli import build_app

__all__ = ["main", "program"]


def program() -> typer.Typer:
    """The app with every command this installation has."""
    if importlib.util.find_spec("vidpipe.dev") is None:
        return build_app()
    from vidpipe.dev.cli import commands as dev_commands

    return build_app(dev_commands)


def main() -> None:
    program()()


if __name__ == "__main__":
    main()
