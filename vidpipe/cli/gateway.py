"""`vidpipe gateway`: the HTTP gateway and its dashboard (services/gateway), served by uvicorn.

vidpipe gateway [--host H] [--port P]   serve (keys: VIDPIPE_GATEWAY_API_KEYS, hashed)
vidpipe gateway --hash-key              read a key on stdin, print its `name:sha256` entry
vidpipe gateway --openapi               print the OpenAPI document (schemas/openapi.json)
"""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer

from vidpipe.cli.context import cli_context

__all__ = ["commands"]

commands = typer.Typer()


@commands.command()
def gateway(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Default: VIDPIPE_GATEWAY_HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Default: VIDPIPE_GATEWAY_PORT.")
    ] = None,
    hash_key: Annotated[
        str | None,
        typer.Option(
            "--hash-key",
            metavar="NAME",
            help="Read an API key on stdin (or make one when stdin is a terminal) and print "
            "the NAME:sha256 entry for VIDPIPE_GATEWAY_API_KEYS.",
        ),
    ] = None,
    openapi: Annotated[
        bool, typer.Option("--openapi", help="Print the OpenAPI document and exit.")
    ] = False,
) -> None:
    """Serve the HTTP gateway: POST/GET /v1/generations, SSE events, the dashboard at /."""
    if openapi:
        from services.gateway.app import openapi_json

        sys.stdout.write(openapi_json())
        return
    if hash_key is not None:
        from services.gateway.handlers import hash_key as digest

        made = sys.stdin.isatty()
        key = secrets.token_urlsafe(32) if made else sys.stdin.readline().strip()
        if made:
            # Shown once, on stderr: only the digest belongs in the environment.
            cli_context(ctx).err.print(f"new key (keep it, it is not stored): {key}")
        sys.stdout.write(f"{hash_key}:{digest(key)}\n")
        return
    import uvicorn

    from services.gateway.app import create_app
    from vidpipe.logs import configure_logging

    cli = cli_context(ctx)
    settings = cli.settings
    configure_logging(settings.log_level, settings.log_format)
    if settings.gateway_api_keys is None:
        raise cli.fail("VIDPIPE_GATEWAY_API_KEYS is not set: no one could call the gateway")
    try:
        app = create_app(settings, bootstrap_servers=cli.broker_address)
    except ValueError as exc:
        raise cli.fail(str(exc)) from None
    where_host = host or settings.gateway_host
    where_port = settings.gateway_port if port is None else port
    cli.err.print(f"gateway on http://{where_host}:{where_port}/ (dashboard at /dashboard/)")
    from vidpipe.bus.tracing import configure_tracing, traced_asgi

    # Off unless OTEL_* says where spans go; then each request's trace starts here.
    tracing = configure_tracing("gateway")
    try:
        uvicorn.run(
            traced_asgi(app) if tracing is not None else app,
            host=where_host,
            port=where_port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
    finally:
        if tracing is not None:
            tracing.shutdown()  # sends the spans still buffered
