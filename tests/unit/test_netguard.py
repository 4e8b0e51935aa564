from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest

from vidpipe.errors import UnsafeURLError
from vidpipe.net.guard import InputFetchError, Resolver, fetch_bounded, resolve_safe

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


def resolver_for(table: dict[str, Sequence[str]]) -> Resolver:
    """A resolver answering from a table; unknown names fail like NXDOMAIN."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


PUBLIC = resolver_for({"img.example.com": [PUBLIC_V4], "cdn.example.net": [PUBLIC_V6]})


BAD_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",  # noqa: S104 - an address to refuse, not one we bind
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "fd00::1",
    "fe80::1",
    "fe80::1%eth0",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 wrapping 10.0.0.1
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
async def test_names_resolving_to_bad_addresses_rejected(address: str) -> None:
    resolver = resolver_for({"evil.example.com": [address]})
    with pytest.raises(UnsafeURLError, match="non-public address"):
        await resolve_safe("https://evil.example.com/x.png", resolver=resolver)


@pytest.mark.parametrize("address", [a for a in BAD_ADDRESSES if "%" not in a])
async def test_ip_literals_rejected(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeURLError):
        await resolve_safe(f"https://{host}/x.png", resolver=PUBLIC)


@pytest.mark.parametrize("address", ["::ffff:93.184.216.34", "64:ff9b::5db8:d822"])
async def test_ipv6_forms_of_public_ipv4_accepted(address: str) -> None:
    resolver = resolver_for({"img.example.com": [address]})
    target = await resolve_safe("https://img.example.com/a.png", resolver=resolver)
    assert [ipaddress.ip_address(a) for a in target.addresses] == [ipaddress.ip_address(address)]


async def test_one_bad_address_among_good_ones_rejected() -> None:
    resolver = resolver_for({"mixed.example.com": [PUBLIC_V4, "10.0.0.5"]})
    with pytest.raises(UnsafeURLError, match="non-public"):
        await resolve_safe("https://mixed.example.com/", resolver=resolver)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://img.example.com/a.png", "scheme 'http'"),
        ("ftp://img.example.com/a.png", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("https://user:pass@img.example.com/a.png", "user name or password"),
        ("https://user@img.example.com/a.png", "user name or password"),
        ("https://localhost/a.png", "'localhost'"),
        ("https://LOCALHOST./a.png", "'localhost'"),
        ("https://api.localhost/a.png", "not allowed"),
        ("https://metadata.google.internal/computeMetadata/v1/", "not allowed"),
        ("https://nowhere.invalid/a.png", "does not resolve"),
        ("https:///a.png", "no host"),
    ],
)
async def test_bad_urls_rejected(url: str, fragment: str) -> None:
    with pytest.raises(UnsafeURLError, match=fragment) as info:
        await resolve_safe(url, resolver=PUBLIC)
    assert "\n" not in str(info.value)
    assert "user:pass" not in str(info.value)


async def test_public_addresses_accepted() -> None:
    target = await resolve_safe("https://img.example.com/a.png?x=1", resolver=PUBLIC)
    assert (target.host, target.port, target.addresses) == ("img.example.com", 443, (PUBLIC_V4,))
    target6 = await resolve_safe("https://cdn.example.net:8443/a.png", resolver=PUBLIC)
    assert (target6.port, target6.addresses) == (8443, (PUBLIC_V6,))
    literal = await resolve_safe(f"https://{PUBLIC_V4}/a.png", resolver=PUBLIC)
    assert literal.addresses == (PUBLIC_V4,)


async def test_allow_private_for_local_development() -> None:
    resolver = resolver_for({"emulator": ["127.0.0.1"]})
    target = await resolve_safe(
        "http://emulator:8080/img.png", allow_private=True, resolver=resolver
    )
    assert target.addresses == ("127.0.0.1",)
    # Userinfo is refused even then.
    with pytest.raises(UnsafeURLError):
        await resolve_safe("http://u:p@emulator/", allow_private=True, resolver=resolver)


async def test_default_system_resolver_handles_ip_literal() -> None:
    with pytest.raises(UnsafeURLError):
        await resolve_safe("https://127.0.0.1/")


# --- fetch_bounded ----------------------------------------------------------------------------


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_fetch_connects_to_vetted_ip_with_original_host() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Content-Type": "image/png"}, content=PNG)

    async with client_for(handler) as client:
        body, ctype = await fetch_bounded(
            "https://img.example.com/a.png", client=client, max_bytes=1000, resolver=PUBLIC
        )
    assert (body, ctype) == (PNG, "image/png")
    (request,) = seen
    assert request.url.host == PUBLIC_V4  # pinned: no second DNS lookup by the HTTP client
    assert request.headers["host"] == "img.example.com"
    assert request.extensions["sni_hostname"] == "img.example.com"
    assert request.headers["connection"] == "close"


async def test_fetch_follows_safe_redirects_manually() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.headers["host"]
        if host == "img.example.com":
            return httpx.Response(302, headers={"Location": "https://cdn.example.net/real.webp"})
        if request.url.path == "/real.webp":
            return httpx.Response(301, headers={"Location": "/final.webp"})
        return httpx.Response(200, headers={"Content-Type": "image/webp"}, content=b"RIFFwebp")

    async with client_for(handler) as client:
        body, ctype = await fetch_bounded(
            "https://img.example.com/a", client=client, max_bytes=1000, resolver=PUBLIC
        )
    assert (body, ctype) == (b"RIFFwebp", "image/webp")


@pytest.mark.parametrize(
    "location",
    [
        "https://internal.example.com/secret.png",
        "https://169.254.169.254/latest/meta-data/",
        "http://img.example.com/a.png",
        "https://[::1]/a.png",
    ],
)
async def test_redirect_to_private_address_rejected(location: str) -> None:
    resolver = resolver_for({"img.example.com": [PUBLIC_V4], "internal.example.com": ["10.0.0.7"]})
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(302, headers={"Location": location})

    async with client_for(handler) as client:
        with pytest.raises(UnsafeURLError) as info:
            await fetch_bounded(
                "https://img.example.com/a.png", client=client, max_bytes=1000, resolver=resolver
            )
    assert not isinstance(info.value, InputFetchError)
    assert len(requested) == 1  # the private target was never contacted


async def test_too_many_redirects() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again"})

    async with client_for(handler) as client:
        with pytest.raises(InputFetchError, match="more than 3 redirects"):
            await fetch_bounded(
                "https://img.example.com/a", client=client, max_bytes=1000, resolver=PUBLIC
            )


async def test_oversized_image_rejected_while_streaming() -> None:
    served: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            served.append(1)
            yield b"\x00" * 1000

    def handler(request: httpx.Request) -> httpx.Response:
        # No Content-Length: only the streaming check can stop it.
        return httpx.Response(200, headers={"Content-Type": "image/jpeg"}, content=body())

    async with client_for(handler) as client:
        with pytest.raises(InputFetchError, match="5000-byte limit"):
            await fetch_bounded(
                "https://img.example.com/big.jpg", client=client, max_bytes=5000, resolver=PUBLIC
            )
    assert len(served) <= 6


async def test_oversized_by_content_length_rejected_before_reading() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "image/png"}, content=b"x" * 6000)

    async with client_for(handler) as client:
        with pytest.raises(InputFetchError, match="limit"):
            await fetch_bounded(
                "https://img.example.com/a.png", client=client, max_bytes=5000, resolver=PUBLIC
            )


@pytest.mark.parametrize(
    ("status", "ctype", "fragment", "retryable"),
    [
        (200, "text/html; charset=utf-8", "'text/html'", False),
        (200, "application/json", "'application/json'", False),
        (200, "image/svg+xml", r"'image/svg\+xml'", False),
        (404, "image/png", "HTTP 404", False),
        (503, "image/png", "HTTP 503", True),
    ],
)
async def test_unusable_responses(status: int, ctype: str, fragment: str, retryable: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Content-Type": ctype}, content=b"<html></html>")

    async with client_for(handler) as client:
        with pytest.raises(InputFetchError, match=fragment) as info:
            await fetch_bounded(
                "https://img.example.com/a.png", client=client, max_bytes=5000, resolver=PUBLIC
            )
    assert info.value.retryable is retryable


async def test_transport_errors_are_retryable_and_terse() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("boom at https://img.example.com/a.png?token=abc")

    async with client_for(handler) as client:
        with pytest.raises(InputFetchError) as info:
            await fetch_bounded(
                "https://img.example.com/a.png?token=abc",
                client=client,
                max_bytes=5000,
                resolver=PUBLIC,
            )
    assert info.value.retryable
    assert "token" not in str(info.value)


async def test_real_http_client_reaches_pinned_loopback_server() -> None:
    """The pinned request works through httpx's real transport, not only MockTransport."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
        writer.write(head % len(PNG) + PNG)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            body, ctype = await fetch_bounded(
                f"http://emulator.test:{port}/img.png",
                client=client,
                max_bytes=10_000,
                allow_private=True,
                resolver=resolver_for({"emulator.test": ["127.0.0.1"]}),
            )
    finally:
        server.close()
        await server.wait_closed()
    assert (body, ctype) == (PNG, "image/png")
    assert f"Host: emulator.test:{port}".encode() in seen[0]
