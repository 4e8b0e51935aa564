"""Byte streams the contract suites feed to the adapters."""

from __future__ import annotations

import functools
import struct
from collections.abc import AsyncIterator

from vidpipe.media.sample import render_sample_mp4


@functools.cache
def _tiny_mp4() -> bytes:
    return render_sample_mp4(32, 32, seconds=0.25, fps=8)


def fake_mp4(payload_size: int = 5000, brand: bytes = b"isom") -> bytes:
    """A real, playable tiny MP4 (what storage validates: boxes, then a decode) with its major
    brand set to `brand`, padded with a `free` box so it is about `payload_size` bytes larger."""
    real = _tiny_mp4()
    (ftyp_size,) = struct.unpack(">I", real[:4])
    ftyp = real[:8] + brand + real[12:ftyp_size]
    padding = bytes(i % 251 for i in range(payload_size))
    return ftyp + real[ftyp_size:] + struct.pack(">I", 8 + payload_size) + b"free" + padding


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def failing_after(data: bytes, n_bytes: int) -> AsyncIterator[bytes]:
    """The first `n_bytes` of `data`, then the connection drops."""
    async for chunk in chunks_of(data[:n_bytes], 100):
        yield chunk
    raise ConnectionResetError("provider hung up")
