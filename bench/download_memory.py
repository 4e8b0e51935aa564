"""Peak memory and throughput of storing a download: the fetcher's streamed path vs buffering.

Streamed: `vidpipe.usecases.fetch_video.store_video` -> `LocalFolderStorage.put_stream`, exactly
what the fetcher and the redownloader run. Baseline: what a naive client does (and what httpx's
`Response.aread()` does): collect every chunk, `b"".join` them, validate, write the file.

The "video" is a real tiny MP4 from `render_sample_mp4` followed by one `free` box of filler up to
the target size, so it passes the same validation (box structure, a PyAV decode of the first
frame, announced length). It is produced chunk by chunk on the fly, so the source itself holds no
more than one 64 KiB chunk.

Each measurement runs in a fresh subprocess that has done nothing else, so its heap holds no
leftovers from earlier runs; peak RSS is read from VmHWM, reset just before the store (see
`_reset_peak_rss` for why not `ru_maxrss`). tracemalloc's peak of Python allocations comes from
one extra run per point, so its overhead stays out of the throughput figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bench import MIB, BenchResult
from vidpipe.providers.base import ProviderJob, VideoDownload, VideoSpec
from vidpipe.storage import LocalFolderStorage
from vidpipe.storage.validation import Mp4StreamValidator, check_content_type
from vidpipe.usecases.fetch_video import DownloadPolicy, store_video

__all__ = ["run", "synthetic_video"]

CHUNK = 64 * 1024
Variant = Literal["streamed", "buffered"]
VARIANTS: tuple[Variant, ...] = ("streamed", "buffered")
# Generous: a 512 MiB buffered run on a slow disk takes a few seconds; this only catches hangs.
_CHILD_TIMEOUT_S = 300.0


async def synthetic_video(
    head: bytes, size: int, chunk: int = CHUNK
) -> AsyncGenerator[bytes, None]:
    """`head` then filler up to `size` bytes, as fresh `chunk`-sized bytes objects.

    Every chunk is a new object (as a socket read would return) built from one reusable
    template, so the source's own memory stays at one chunk whatever `size` is.
    """
    template = bytearray(i % 251 for i in range(chunk))
    offset = 0
    while offset < size:
        n = min(chunk, size - offset)
        if offset < len(head):
            part = head[offset : offset + n]
            block = part + bytes(template[: n - len(part)])
        else:
            # Vary the content a little so no layer can get away with deduplicating chunks.
            template[:8] = offset.to_bytes(8, "big")
            block = bytes(template) if n == chunk else bytes(template[:n])
        offset += n
        await asyncio.sleep(0)  # a network source yields to the loop between reads
        yield block


class _SyntheticProvider:
    """A ProviderClient whose only working call is `download`, serving the synthetic video."""

    name = "bench"
    endpoint_host = "bench.invalid"

    def __init__(self, head: bytes, size: int) -> None:
        self._head = head
        self._size = size

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        raise NotImplementedError

    async def list_jobs(self, since: datetime) -> list[ProviderJob]:
        raise NotImplementedError("the benchmark only downloads")

    async def get_job(self, job_id: str) -> ProviderJob:
        raise NotImplementedError

    async def cancel_job(self, job_id: str) -> bool:
        raise NotImplementedError("the benchmark only downloads")

    def download(
        self, job_id: str, generation_id: str
    ) -> AbstractAsyncContextManager[VideoDownload]:
        return self._download()

    @asynccontextmanager
    async def _download(self) -> AsyncIterator[VideoDownload]:
        chunks = synthetic_video(self._head, self._size)
        try:
            yield VideoDownload(
                status_code=200,
                content_type="video/mp4",
                content_length=self._size,
                chunks=chunks,
            )
        finally:
            await chunks.aclose()

    async def aclose(self) -> None:
        return None


async def _store_streamed(provider: _SyntheticProvider, root: Path, size: int) -> int:
    policy = DownloadPolicy(max_bytes=max(size, DownloadPolicy.max_bytes))
    stored = await store_video(
        provider,
        LocalFolderStorage(root),
        job_id="job-bench",
        generation_id="gen-bench",
        key="bench/0-gen-bench.mp4",
        policy=policy,
    )
    return stored.size_bytes


def _write_whole(path: Path, body: bytes) -> None:
    # The same durability as LocalFolderStorage (temp file, fsync, rename) so only buffering
    # differs between the two variants.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def _store_buffered(provider: _SyntheticProvider, root: Path, size: int) -> int:
    async with provider.download("job-bench", "gen-bench") as download:
        check_content_type(download.content_type)
        body = b"".join([chunk async for chunk in download.chunks])
    # Validated and hashed like the streamed path, just all at once.
    validator = Mp4StreamValidator(max_bytes=max(size, 1), expected_length=download.content_length)
    validator.feed(body)
    video = validator.finish()
    await asyncio.to_thread(_write_whole, root / "bench" / "0-gen-bench.mp4", body)
    return video.size_bytes


def _status_bytes(field: str) -> int:
    """A `/proc/self/status` figure (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    # ru_maxrss cannot serve here: Linux carries the *parent's* RSS across fork+exec into the
    # child's ru_maxrss (the parent holds PyAV and more), which hides any growth below it.
    # VmHWM belongs to this address space only, and writing 5 to clear_refs resets it to the
    # current RSS (Linux >= 4.0), so after - before is the peak growth of the store alone.
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def _ru_maxrss_bytes() -> int:
    # Kept in the JSON for comparison only (Linux reports KiB); see _reset_peak_rss.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(variant: Variant, size: int, head_path: Path, root: Path, trace: bool) -> dict[str, Any]:
    """One measurement; everything it needs is imported at module level, before "before"."""
    head = head_path.read_bytes()
    # The filler is the payload of one `free` box, so the file's boxes add up to its size.
    head += struct.pack(">I", size - len(head)) + b"free"
    provider = _SyntheticProvider(head, size)
    store = _store_streamed if variant == "streamed" else _store_buffered
    gc.collect()
    _reset_peak_rss()
    before = _status_bytes("VmRSS")
    ru_before = _ru_maxrss_bytes()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    stored = asyncio.run(store(provider, root, size))
    elapsed = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    after = _status_bytes("VmHWM")
    ru_after = _ru_maxrss_bytes()
    if stored != size:
        raise RuntimeError(f"stored {stored} bytes, expected {size}")
    return {
        "variant": variant,
        "size_bytes": size,
        "traced": trace,
        "seconds": elapsed,
        "rss_before_bytes": before,
        "rss_peak_bytes": after,
        "rss_growth_bytes": after - before,
        "ru_maxrss_before_bytes": ru_before,
        "ru_maxrss_after_bytes": ru_after,
        "tracemalloc_peak_bytes": traced_peak,
    }


def _run_child(variant: Variant, size: int, head_path: Path, trace: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-dl-") as root:
        cmd = [
            sys.executable,
            "-m",
            "bench.download_memory",
            "--child",
            variant,
            "--size",
            str(size),
            "--head",
            str(head_path),
            "--root",
            root,
        ]
        if trace:
            cmd.append("--trace")
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=_CHILD_TIMEOUT_S,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} {size} B child failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _median(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(s[key]) for s in samples)


def _rate(size: int, samples: list[dict[str, Any]]) -> str:
    """Median MiB/s with the range beside it: on a shared VM the spread is part of the answer."""
    rates = sorted(size / MIB / float(s["seconds"]) for s in samples)
    median = statistics.median(rates)
    if len(rates) == 1:
        return f"{median:.0f}"
    return f"{median:.0f} ({rates[0]:.0f}-{rates[-1]:.0f})"


def run(quick: bool = False) -> BenchResult:
    # Imported here: PyAV is only needed to make the head, and the children should not load it.
    from vidpipe.media.sample import render_sample_mp4

    sizes_mib = [8, 32] if quick else [32, 128, 512]
    repeats = 2 if quick else 3
    samples: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-head-") as tmp:
        head_path = Path(tmp) / "head.mp4"
        head = render_sample_mp4(64, 64, seconds=0.25, fps=8, label="bench")
        head_bytes = len(head)
        head_path.write_bytes(head)
        del head
        for size_mib in sizes_mib:
            size = size_mib * MIB
            by_variant: dict[Variant, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
            traced: dict[Variant, dict[str, Any]] = {}
            # Alternate the variants so drift (page cache, disk, thermal) hits both alike.
            for _ in range(repeats):
                for variant in VARIANTS:
                    by_variant[variant].append(_run_child(variant, size, head_path, trace=False))
            # tracemalloc slows allocation a little, so its peak comes from separate runs that
            # are kept out of the throughput figures.
            for variant in VARIANTS:
                traced[variant] = _run_child(variant, size, head_path, trace=True)
            for variant in VARIANTS:
                samples.extend(by_variant[variant])
                samples.append(traced[variant])
            growth = {v: _median(by_variant[v], "rss_growth_bytes") / MIB for v in VARIANTS}
            rate = {v: _rate(size, by_variant[v]) for v in VARIANTS}
            py_peak = {v: traced[v]["tracemalloc_peak_bytes"] / MIB for v in VARIANTS}
            rows.append(
                [
                    str(size_mib),
                    f"{growth['streamed']:.1f}",
                    f"{growth['buffered']:.1f}",
                    f"{py_peak['streamed']:.1f}",
                    f"{py_peak['buffered']:.1f}",
                    rate["streamed"],
                    rate["buffered"],
                ]
            )
    return BenchResult(
        name="download_memory",
        title="Download to storage: streamed (fetcher path) vs buffered baseline",
        columns=[
            "size MiB",
            "streamed peak RSS +MiB",
            "baseline peak RSS +MiB",
            "streamed py peak MiB",
            "baseline py peak MiB",
            "streamed MiB/s",
            "baseline MiB/s",
        ],
        rows=rows,
        samples=samples,
        details={
            "chunk_bytes": CHUNK,
            "repeats": repeats,
            "head": f"render_sample_mp4(64x64, 0.25 s, {head_bytes} bytes), then filler",
            "storage": "LocalFolderStorage in a temp dir (fsync + rename)",
        },
        notes=[
            "peak RSS +MiB: peak RSS (VmHWM, reset just before) minus RSS before the store, "
            f"median of {repeats} fresh subprocesses",
            "py peak MiB: tracemalloc peak of Python allocations, from one extra run each",
            "MiB/s: size / wall time of the whole store (validation, sha256, write, fsync); "
            "median (min-max) of the same runs",
        ],
    )


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=VARIANTS, help="internal: run one measurement")
    parser.add_argument("--size", type=int)
    parser.add_argument("--head", type=Path)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        result = _child(args.child, args.size, args.head, args.root, args.trace)
        print(json.dumps(result))
        return
    print(run(quick=args.quick).markdown())


if __name__ == "__main__":
    _main()
