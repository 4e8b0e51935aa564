"""No URL query string, password or token in any log line: `vidpipe.logs` as the stages set it up.

The end-to-end tests configure logging as a stage does, fetch signed URLs from a real HTTP server
on loopback with httpx, log them every way the code does (fields, messages, stdlib loggers,
exceptions with tracebacks) and read what reached stderr.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import structlog

from vidpipe.logs import QUIET_LOGGERS, configure_logging, redact, redact_url

SECRET = "SIGSECRET0123456789"
PASSWORD = "hunter2-db-password"


@pytest.fixture
def logging_as_a_stage() -> Iterator[None]:
    """configure_logging for one test; the process's logging and structlog set-up restored."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    saved_config = structlog.get_config()
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)
    structlog.configure(**saved_config)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:  # the server stays quiet
        return None


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_fetching_signed_urls_leaves_no_secret_in_the_logs(
    logging_as_a_stage: None, server: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("DEBUG", fmt)  # even at DEBUG
    signed = f"http://{server}/video.mp4?sv=2024-01-01&se=2030&sig={SECRET}"
    missing = f"http://{server}/missing/cb?token={SECRET}#frag-{SECRET}"
    database = f"postgresql://vidpipe:{PASSWORD}@db.example:5432/vidpipe?sslmode=require"
    log = structlog.get_logger("vidpipe.test")
    async with httpx.AsyncClient() as client:
        assert (await client.get(signed)).status_code == 200
        response = await client.get(missing)
        try:
            response.raise_for_status()  # its message quotes the whole URL
        except httpx.HTTPStatusError as exc:
            log.exception("download_failed", error=exc, url=httpx.URL(missing))
    log.info(f"fetched {signed}", url=signed, nested={"urls": [signed, database]}, n=3)
    logging.getLogger("some.library").warning("GET %s failed, database %s", signed, database)
    try:
        raise RuntimeError(f"could not open {database}")
    except RuntimeError:
        logging.getLogger("some.library").exception("connect failed")

    written = capsys.readouterr().err
    assert server in written and "/video.mp4" in written  # the lines were written...
    for secret in (SECRET, PASSWORD, "sv=2024", "frag-"):
        assert secret not in written  # ...without a secret
    assert "HTTP Request" not in written  # httpx's own request lines are held back
    if fmt == "json":
        lines = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
        fetched = next(line for line in lines if line["event"].startswith("fetched"))
        assert fetched["n"] == 3 and len(fetched["nested"]["urls"]) == 2  # shapes are kept


def test_http_client_loggers_are_held_at_warning(logging_as_a_stage: None) -> None:
    configure_logging("DEBUG", "json")
    for name in ("httpx", "httpcore", "httpcore.connection", "aiokafka"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert logging.getLogger("vidpipe.fetcher").isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://h.example/p/v.mp4?sig=abc", "https://h.example/p/v.mp4?[redacted]"),
        (
            "GET https://acct.blob.core.windows.net/c/v.mp4?sv=1&sig=x%2Fy HTTP/1.1",
            "GET https://acct.blob.core.windows.net/c/v.mp4?[redacted] HTTP/1.1",
        ),
        ("postgresql://u:p@ss@db:5432/x", "postgresql://[redacted]@db:5432/x"),
        ("redis://:pw@cache/0", "redis://[redacted]@cache/0"),
        ("'https://h/cb?token=t#frag'", "'https://h/cb?[redacted]#[redacted]'"),
        (
            "a https://x/?q=1 and http://y/z?w=2.",
            "a https://x/?[redacted] and http://y/z?[redacted]",
        ),
        ("https://h.example/plain/path", "https://h.example/plain/path"),
        ("no url here: a@b.c ?x=1", "no url here: a@b.c ?x=1"),
        ("file:///srv/videos/r/0.mp4", "file:///srv/videos/r/0.mp4"),
    ],
)
def test_urls_keep_where_they_point_and_lose_their_secrets(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert redact_url(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        f"sv=2024-01-01&sig={SECRET}",
        f"Authorization: Bearer {SECRET}",
        f"api_key={SECRET}",
        f'{{"password": "{SECRET}"}}',
        f"X-Amz-Signature={SECRET}",
        f"signature={SECRET}",
        "sk-" + SECRET,
    ],
)
def test_credentials_outside_urls_are_masked(text: str) -> None:
    assert SECRET not in redact(text)
    assert redact(redact(text)) == redact(text)
