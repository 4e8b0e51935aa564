"""SSRF protection for URLs that users hand us (input images, callback URLs).

`resolve_safe` accepts a URL only if its scheme is allowed, it has no userinfo, and *every* address
its host resolves to is public. `fetch_bounded` downloads an input image through it, following
redirects by hand so each hop is vetted again, and refusing anything that is not a small image.

DNS rebinding: a name can resolve to a public address when vetted and to a private one a moment
later when the HTTP client resolves it again. `SafeTarget.build_request` closes that gap by
connecting to the vetted IP itself: the URL's host is replaced with the IP, while the Host header
and the TLS server name (SNI, and therefore certificate verification) keep the original hostname.
The request also asks for `Connection: close` so a pooled connection opened for one hostname is
never reused for another that shares its IP (so the client must speak HTTP/1.1, httpx's default;
HTTP/2 forbids that header). Limitation: a client configured with a proxy lets
the proxy connect instead, so the pin then protects only as far as the proxy does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from vidpipe.errors import InputFetchError, UnsafeURLError

__all__ = [
    "ALLOWED_IMAGE_TYPES",
    "InputFetchError",
    "Resolver",
    "SafeTarget",
    "fetch_bounded",
    "is_metadata_address",
    "is_public_address",
    "resolve_safe",
    "system_resolver",
]

#: Resolves (host, port) to IP address strings. Injected in tests instead of patching DNS.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BLOCKED_NAMES = frozenset({"localhost", "metadata.google.internal", "metadata"})
# Ranges `ipaddress` counts as global but that must never be reached from a server.
_EXTRA_BLOCKED_V4 = (ipaddress.IPv4Network("100.64.0.0/10"),)  # CGNAT
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_AWS_METADATA_V6 = ipaddress.IPv6Address("fd00:ec2::254")


@dataclass(frozen=True, slots=True)
class SafeTarget:
    """A vetted URL and the addresses its host resolved to (all of them public, unless allowed)."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) form, lower case, no brackets
    port: int
    addresses: tuple[str, ...]

    def build_request(
        self,
        client: httpx.AsyncClient,
        method: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Request:
        """A request to this URL that connects to the first vetted address (see module doc)."""
        original = httpx.URL(self.url)
        pinned = original.copy_with(host=self.addresses[0])
        all_headers = {"Host": original.netloc.decode("ascii"), "Connection": "close"}
        all_headers.update(headers or {})
        extensions: dict[str, Any] = {}
        if self.scheme == "https" and not _is_ip_literal(self.host):
            extensions["sni_hostname"] = self.host
        if timeout is not None:
            kwargs["timeout"] = timeout
        return client.build_request(
            method, pinned, headers=all_headers, extensions=extensions, **kwargs
        )

    def pinned_request(
        self,
        method: str,
        *,
        headers: httpx.Headers | dict[str, str],
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Request:
        """Like `build_request`, but a bare request: none of a client's defaults (base URL,
        default query, headers) are added, for hops such as a pre-signed storage URL."""
        original = httpx.URL(self.url)
        all_headers = httpx.Headers(headers)
        all_headers["Host"] = original.netloc.decode("ascii")
        all_headers["Connection"] = "close"
        all_extensions = dict(extensions or {})
        if self.scheme == "https" and not _is_ip_literal(self.host):
            all_extensions["sni_hostname"] = self.host
        return httpx.Request(
            method,
            original.copy_with(host=self.addresses[0]),
            headers=all_headers,
            extensions=all_extensions,
        )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public_address(address: IPAddress) -> bool:
    """True if a server may connect to `address` on a user's behalf."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False  # zone-scoped addresses are link-local by nature
        # IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d, what DNS64 networks hand out)
        # reach exactly the IPv4 address they carry, so that address alone decides.
        if address.ipv4_mapped is not None:
            return is_public_address(address.ipv4_mapped)
        if address in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        # 6to4 and Teredo tunnel to an IPv4 address: both it and the IPv6 address must pass.
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and not is_public_address(embedded):
            return False
    if any(address in net for net in _EXTRA_BLOCKED_V4 if address.version == 4):
        return False
    # is_global excludes private, loopback, link-local (169.254/16 incl. cloud metadata),
    # unspecified, fc00::/7 and the other special-purpose ranges; multicast and reserved are
    # checked separately because some of those count as "global".
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_unspecified
    )


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Resolve with the operating system's resolver, without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


def is_metadata_address(address: IPAddress) -> bool:
    """True for link-local addresses (169.254/16, fe80::/10: where cloud metadata services
    answer, e.g. 169.254.169.254) and AWS's IPv6 metadata address; refused even in development."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_metadata_address(address.ipv4_mapped)
        if address in _NAT64:
            return is_metadata_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address == _AWS_METADATA_V6:
            return True
    return address.is_link_local


def _parse_address(text: str) -> IPAddress:
    # getaddrinfo may return "fe80::1%eth0"; keep the scope so it is refused, not misread.
    return ipaddress.ip_address(text)


async def resolve_safe(
    url: str,
    *,
    allow_private: bool = False,
    allowed_schemes: Collection[str] | None = None,
    resolver: Resolver | None = None,
) -> SafeTarget:
    """Vet a user-supplied URL; raise UnsafeURLError unless it may be fetched.

    `allowed_schemes` defaults to https only, or http and https when `allow_private` is set (local
    development against the emulator). `allow_private` skips the address checks, not the others,
    and never lets a URL reach a link-local / cloud metadata address (`is_metadata_address`).
    """
    if allowed_schemes is None:
        allowed_schemes = ("http", "https") if allow_private else ("https",)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UnsafeURLError("URL cannot be parsed") from None
    scheme = parsed.scheme.lower()
    if scheme not in allowed_schemes:
        raise UnsafeURLError(f"URL scheme {scheme or '(none)'!r} is not allowed")
    if parsed.userinfo:
        raise UnsafeURLError("URL must not contain a user name or password")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise UnsafeURLError("URL has no host")
    if not allow_private and (
        host in _BLOCKED_NAMES or host.endswith((".localhost", ".internal", ".local"))
    ):
        raise UnsafeURLError(f"URL host {host!r} is not allowed")
    port = parsed.port or _DEFAULT_PORTS.get(scheme, 443)

    if _is_ip_literal(host):
        texts: Sequence[str] = [host]
    else:
        try:
            texts = await (resolver or system_resolver)(host, port)
        except (OSError, UnicodeError):
            raise UnsafeURLError(f"URL host {host!r} does not resolve") from None
        if not texts:
            raise UnsafeURLError(f"URL host {host!r} does not resolve")
    addresses: list[str] = []
    for text in texts:
        try:
            address = _parse_address(text)
        except ValueError:
            raise UnsafeURLError(f"URL host {host!r} resolved to an invalid address") from None
        # Every address must pass: the HTTP client might pick any of them.
        if not allow_private and not is_public_address(address):
            raise UnsafeURLError(f"URL host {host!r} resolves to a non-public address")
        if is_metadata_address(address):
            raise UnsafeURLError(f"URL host {host!r} resolves to a link-local (metadata) address")
        if str(address) not in addresses:
            addresses.append(str(address))
    return SafeTarget(
        url=str(parsed), scheme=scheme, host=host, port=port, addresses=tuple(addresses)
    )


async def fetch_bounded(
    url: str,
    *,
    client: httpx.AsyncClient,
    max_bytes: int,
    allow_private: bool = False,
    timeout_s: float = 30.0,
    allowed_schemes: Collection[str] | None = None,
    allowed_types: Collection[str] = ALLOWED_IMAGE_TYPES,
    max_redirects: int = 3,
    resolver: Resolver | None = None,
) -> tuple[bytes, str]:
    """Download a user-supplied image: (bytes, content type). Everything is bounded: size, time,
    redirects. Raises UnsafeURLError for where it points, InputFetchError for what it serves."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(
                url,
                client=client,
                max_bytes=max_bytes,
                allow_private=allow_private,
                timeout_s=timeout_s,
                allowed_schemes=allowed_schemes,
                allowed_types=allowed_types,
                max_redirects=max_redirects,
                resolver=resolver,
            )
    except TimeoutError:
        raise InputFetchError(
            f"input download took longer than {timeout_s:g}s", retryable=True
        ) from None
    except httpx.TimeoutException:
        raise InputFetchError("input download timed out", retryable=True) from None
    except httpx.TransportError as exc:
        # The class name only: httpx messages can carry the URL, which may hold tokens.
        raise InputFetchError(
            f"input download failed: {type(exc).__name__}", retryable=True
        ) from None
    except (httpx.DecodingError, httpx.InvalidURL) as exc:
        # What the server sent (a garbled gzip body, a redirect to a host IDNA cannot encode) is
        # the request's problem, not the world's: terminal, never retried.
        raise InputFetchError(f"input download failed: {type(exc).__name__}") from None
    except UnicodeError:
        # idna.IDNAError is a UnicodeError; so is every other codec refusal of a host name.
        raise InputFetchError("input download failed: the URL's host cannot be encoded") from None


async def _fetch(
    url: str,
    *,
    client: httpx.AsyncClient,
    max_bytes: int,
    allow_private: bool,
    timeout_s: float,
    allowed_schemes: Collection[str] | None,
    allowed_types: Collection[str],
    max_redirects: int,
    resolver: Resolver | None,
) -> tuple[bytes, str]:
    current = url
    for _hop in range(max_redirects + 1):
        target = await resolve_safe(
            current,
            allow_private=allow_private,
            allowed_schemes=allowed_schemes,
            resolver=resolver,
        )
        request = target.build_request(
            client, "GET", headers={"Accept": ", ".join(sorted(allowed_types))}, timeout=timeout_s
        )
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code in _REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise InputFetchError(f"redirect ({response.status_code}) without a Location")
                # Relative to the URL as the user wrote it, not to the pinned IP.
                current = str(httpx.URL(target.url).join(location))
                continue
            return await _read_image(response, max_bytes=max_bytes, allowed_types=allowed_types)
        finally:
            await response.aclose()
    raise InputFetchError(f"more than {max_redirects} redirects")


async def _read_image(
    response: httpx.Response, *, max_bytes: int, allowed_types: Collection[str]
) -> tuple[bytes, str]:
    status = response.status_code
    if status != 200:
        raise InputFetchError(
            f"input download answered HTTP {status}", retryable=status == 429 or status >= 500
        )
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type not in allowed_types:
        raise InputFetchError(
            f"input has content type {media_type or '(none)'!r}, not an accepted image type"
        )
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise InputFetchError(f"input is larger than the {max_bytes}-byte limit")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        # Stop reading the moment the limit is crossed, whatever Content-Length claimed.
        if len(body) > max_bytes:
            raise InputFetchError(f"input is larger than the {max_bytes}-byte limit")
    if not body:
        raise InputFetchError("input download is empty")
    return bytes(body), media_type
