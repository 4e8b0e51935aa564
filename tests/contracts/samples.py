"""Byte streams the contract suites feed to the adapters."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator


def fake_mp4(payload_size: int = 5000, brand: bytes = b"isom") -> bytes:
    """ftyp + mdat: all the MP4 validator looks at (test_mp4check uses a real encoded file)."""
    ftyp = struct.pack(">I", 24) + b"ftyp" + brand + b"\x00\x00\x02\x00isomiso2"
    payload = bytes(i % 251 for i in range(payload_size))
    return ftyp + struct.pack(">I", 8 + payload_size) + b"mdat" + payload


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def failing_after(data: bytes, n_bytes: int) -> AsyncIterator[bytes]:
    """The first `n_bytes` of `data`, then the connection drops."""
    async for chunk in chunks_of(data[:n_bytes], 100):
        yield chunk
    raise ConnectionResetError("provider hung up")
