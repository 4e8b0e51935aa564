"""`vidpipe costs`: what the jobs cost, by day, provider and optionally a metadata key.

Read from the records (`projects`: each job's estimate and final cost, docs/costs.md); failover
children count in their root request's lineage.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from vidpipe.cli.context import CliContext, cli_context

__all__ = ["commands", "costs_table"]

commands = typer.Typer()


def _time(cli: CliContext, text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    from vidpipe.errors import OpsError
    from vidpipe.ops import parse_time

    try:
        return parse_time(text)
    except OpsError as exc:
        raise cli.fail(f"{option}: {exc}") from None


@commands.command()
def costs(
    ctx: typer.Context,
    by: Annotated[
        str | None, typer.Option("--by", help="A metadata key to group by (tenant, user_id).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Requests created from (ISO 8601 or -7d, -24h).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Requests created before.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Report what the jobs cost, by day and provider (and --by a metadata key)."""
    from vidpipe.db.costs import cost_rows
    from vidpipe.db.tables import open_engine
    from vidpipe.policy.cost_report import cost_report

    cli = cli_context(ctx)
    start, end = _time(cli, since, "--since"), _time(cli, until, "--until")

    async def load() -> list[dict[str, Any]]:
        engine = await open_engine(cli.settings.database_url)
        try:
            rows = await cost_rows(engine, since=start, until=end)
        finally:
            await engine.dispose()
        return [line.as_json(by) for line in cost_report(rows, by)]

    lines = asyncio.run(load())
    if as_json:
        sys.stdout.write(json.dumps(lines, indent=2) + "\n")
        return
    cli.console.print(costs_table(lines, by))


def costs_table(lines: list[dict[str, Any]], key: str | None) -> Table:
    """The report as a table, with a total line."""
    columns = ["day", "provider", *([key] if key else []), "requests", "jobs", "failed"]
    table = Table(*columns, "cost (USD)", "in flight (USD)", show_footer=False)
    totals = {"requests": 0, "jobs": 0, "failed": 0, "cost_usd": 0.0, "open_usd": 0.0}
    for line in lines:
        for name in totals:
            totals[name] += line[name]
        table.add_row(
            line["day"],
            line["provider"],
            *([str(line.get(key) or "-")] if key else []),
            str(line["requests"]),
            str(line["jobs"]),
            str(line["failed"]),
            f"{line['cost_usd']:.2f}",
            f"{line['open_usd']:.2f}",
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        *([""] if key else []),
        str(totals["requests"]),
        str(totals["jobs"]),
        str(totals["failed"]),
        f"{totals['cost_usd']:.2f}",
        f"{totals['open_usd']:.2f}",
    )
    return table
