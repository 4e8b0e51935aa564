"""A large download over loopback HTTP: the fetcher's real path against curl on the same URL.

A small local HTTP server (its own process) serves one "video": a real tiny MP4 from
`render_sample_mp4` followed by one `free` box of filler up to the size, produced on the fly by
`bench.download_memory.synthetic_video`, so it passes the fetcher's checks (content type, box
structure, a decode of the first frame, the announced length). Each measurement downloads it
once, in a fresh process, variants alternated:

- vidpipe: `vidpipe.usecases.fetch_video.fetch_and_store` (storage stat, then `store_video`) with
  an `AzureSoraClient` pointed at the server, so the bytes come through the client's streamed
  download (`vidpipe.providers.download.stream_video`, httpx) into `LocalFolderStorage.put_stream`
  (validation, sha256, batched writes, fsync, rename): what the fetcher runs per video;
- curl -o /dev/null (the baseline): the network and HTTP floor on this machine;
- httpx /dev/null: a bare httpx stream of the same URL (`aiter_raw`, bytes dropped), in a fresh
  process: the ceiling of the HTTP client vidpipe is built on, before any of vidpipe's work;
- curl -o FILE, into the same temp dir as the storage: adds the page-cache write; and the same
  file's fsync timed after it, so the disk's share of the fetcher's time is visible.

MiB/s: size / time of the transfer (vidpipe: the whole store; curl: its own `time_total`), median
(min-max). Peak RSS growth of the vidpipe process: VmHWM reset just before the store, minus VmRSS
then (as in download_memory).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import httpx

from bench import MIB, BenchResult
from bench.download_memory import _reset_peak_rss, _status_bytes, synthetic_video
from schemas.events import utcnow
from vidpipe.dev.processes import free_ports
from vidpipe.providers import AzureSoraClient
from vidpipe.storage import LocalFolderStorage
from vidpipe.usecases.fetch_video import DownloadPolicy, Stored, VideoTarget, fetch_and_store

__all__ = ["mp4_with_filler_head", "rate_mib_s", "run"]

Variant = Literal["vidpipe", "httpx /dev/null", "curl /dev/null", "curl FILE", "curl FILE + fsync"]
# What one measurement round runs, in this order (the fsync figure comes from the FILE run).
MEASURED: tuple[Variant, ...] = ("vidpipe", "httpx /dev/null", "curl /dev/null", "curl FILE")
ROWS: tuple[Variant, ...] = (
    "vidpipe",
    "httpx /dev/null",
    "curl /dev/null",
    "curl FILE",
    "curl FILE + fsync",
)
SERVER_CHUNK = 256 * 1024
GENERATION = "gen-bench"
# The route the Azure client asks for; the server answers any path the same way.
_PATH = f"/openai/v1/video/generations/{GENERATION}/content/video?api-version=preview&quality=high"
_KEY = "bench-download-key"
_CHILD_TIMEOUT_S = 300.0
_ROOT = Path(__file__).resolve().parent.parent


def mp4_with_filler_head(sample: bytes, size: int) -> bytes:
    """The sample MP4 then the header of one `free` box whose payload fills up to `size`."""
    filler = size - len(sample)
    if filler < 8 or filler >= 2**32:
        raise ValueError(f"size {size} does not fit one 32-bit free box after the sample")
    return sample + struct.pack(">I", filler) + b"free"


def rate_mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


# -- the server ------------------------------------------------------------------------------


async def _serve(port: int, head: bytes, size: int) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request; every path gets the video
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\n"
                + f"content-length: {size}\r\nconnection: close\r\n\r\n".encode()
            )
            async for chunk in synthetic_video(head, size, SERVER_CHUNK):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to clean up but the socket
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _start_server(head_path: Path, size: int) -> tuple[subprocess.Popen[bytes], str]:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "bench.download_vs_curl", "--serve", str(port)]
    argv += ["--head", str(head_path), "--size", str(size)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=_ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the download server did not start") from None
            time.sleep(0.05)


# -- the measurements ------------------------------------------------------------------------


async def _store(base: str, root: Path, size: int) -> dict[str, Any]:
    client = AzureSoraClient(endpoint=base, api_key=_KEY, deployment="sora", timeout_s=30)
    target = VideoTarget(
        request_id="bench-download",
        causation_id=uuid.uuid4(),
        provider=client.name,
        provider_job_id="task-bench",
        generation_id=GENERATION,
        variant_index=0,
        # The sample lasts 0.25 s whatever the size: no duration check (the fetcher passes the
        # request's seconds here, which costs the same decode).
        expected_seconds=None,
    )
    # The fetcher's bound is VIDPIPE_MAX_VIDEO_BYTES (512 MiB by default): raised to fit 1 GiB.
    policy = DownloadPolicy(max_bytes=max(size, DownloadPolicy.max_bytes))
    storage = LocalFolderStorage(root)
    try:
        gc.collect()
        _reset_peak_rss()
        before = _status_bytes("VmRSS")
        cpu_before = _cpu_self()
        started = time.perf_counter()
        stored = await fetch_and_store(
            target, providers={client.name: client}, storage=storage, policy=policy, clock=utcnow
        )
        elapsed = time.perf_counter() - started
        cpu = _cpu_self() - cpu_before
        peak = _status_bytes("VmHWM")
    finally:
        await client.aclose()
    if not isinstance(stored, Stored) or not stored.fetched or stored.object.size_bytes != size:
        raise RuntimeError(f"the store did not fetch {size} bytes: {stored!r}")
    return {
        "seconds": elapsed,
        "cpu_s": cpu,
        "rss_before_bytes": before,
        "rss_peak_bytes": peak,
        "rss_growth_bytes": peak - before,
    }


async def _httpx_only(url: str, size: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        cpu_before = _cpu_self()
        started = time.perf_counter()
        received = 0
        async with client.stream("GET", url) as response:
            async for chunk in response.aiter_raw():
                received += len(chunk)
        elapsed = time.perf_counter() - started
        cpu = _cpu_self() - cpu_before
    if response.status_code != 200 or received != size:
        raise RuntimeError(f"httpx got HTTP {response.status_code}, {received} of {size} bytes")
    return {"seconds": elapsed, "cpu_s": cpu}


def _run_httpx(url: str, size: int) -> dict[str, Any]:
    return _run_child("httpx", ["--httpx-child", url, "--size", str(size)])


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_vidpipe(base: str, root: Path, size: int) -> dict[str, Any]:
    return _run_child("vidpipe", ["--child", base, "--size", str(size), "--root", str(root)])


def _run_child(name: str, args: list[str]) -> dict[str, Any]:
    """One download in a fresh process of this module; its JSON result line."""
    cmd = [sys.executable, "-m", "bench.download_vs_curl", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S, cwd=_ROOT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the {name} download child failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _run_curl(url: str, out: str, size: int) -> dict[str, Any]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        ["curl", "-s", "-o", out, "-w", "%{http_code} %{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        timeout=_CHILD_TIMEOUT_S,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}): {proc.stderr[-500:]}")
    code, downloaded, seconds = proc.stdout.split()
    if code != "200" or int(downloaded) != size:
        raise RuntimeError(f"curl got HTTP {code}, {downloaded} of {size} bytes")
    cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {"seconds": float(seconds), "cpu_s": cpu}


def _fsync_seconds(path: Path) -> float:
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def _round(base: str, work: Path, size: int, repeat: int) -> list[dict[str, Any]]:
    """One measurement of each variant, alternated so drift hits every variant alike."""
    url = base + _PATH
    found: list[dict[str, Any]] = []
    for variant in MEASURED:
        target = work / f"{variant.replace(' ', '_').replace('/', '')}-{repeat}"
        if variant == "vidpipe":
            result = _run_vidpipe(base, target, size)
        elif variant == "httpx /dev/null":
            result = _run_httpx(url, size)
        elif variant == "curl /dev/null":
            result = _run_curl(url, "/dev/null", size)
        else:
            result = _run_curl(url, str(target), size)
            fsync_s = _fsync_seconds(target)
            found.append(
                {**result, "variant": "curl FILE + fsync", "seconds": result["seconds"] + fsync_s}
            )
        found.append({**result, "variant": variant})
        # 1 GiB files add up: only one lives at a time.
        _remove(target)
    for sample in found:
        sample.update(repeat=repeat, size_bytes=size)
    return found


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _summary(size: int, samples: list[dict[str, Any]]) -> tuple[float, str]:
    rates = sorted(rate_mib_s(size, float(s["seconds"])) for s in samples)
    median = statistics.median(rates)
    return median, f"{median:.0f} ({rates[0]:.0f}-{rates[-1]:.0f})"


def run(quick: bool = False) -> BenchResult:
    # Imported here: PyAV is only needed to make the head; the children never load it.
    from vidpipe.media.sample import render_sample_mp4

    size_mib = 256 if quick else 1024
    size = size_mib * MIB
    repeats = 3
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-curl-") as tmp:
        work = Path(tmp)
        head_path = work / "head.bin"
        sample = render_sample_mp4(64, 64, seconds=0.25, fps=8, label="bench")
        head_path.write_bytes(mp4_with_filler_head(sample, size))
        server, base = _start_server(head_path, size)
        try:
            for repeat in range(repeats):
                samples.extend(_round(base, work, size, repeat))
        finally:
            server.terminate()
            server.wait(timeout=10)
    by_variant = {v: [s for s in samples if s["variant"] == v] for v in ROWS}
    curl_rate, _ = _summary(size, by_variant["curl /dev/null"])
    rows = []
    for variant in ROWS:
        runs = by_variant[variant]
        median, text = _summary(size, runs)
        growth = (
            f"{statistics.median(float(s['rss_growth_bytes']) for s in runs) / MIB:.1f}"
            if variant == "vidpipe"
            else "-"
        )
        cpu = statistics.median(float(s["cpu_s"]) for s in runs)
        rows.append([variant, text, f"{median / curl_rate:.2f}", growth, f"{cpu:.2f}"])
    vidpipe_ratio = float(rows[0][2])
    vidpipe_growth = float(rows[0][3])
    notes = [
        f"{size_mib} MiB over loopback from a local asyncio server (its own process, "
        f"{SERVER_CHUNK // 1024} KiB writes of bench.download_memory.synthetic_video); "
        f"{repeats} rounds, variants alternated, each download in a fresh process",
        "vidpipe: fetch_and_store with an AzureSoraClient (httpx streamed download) into "
        "LocalFolderStorage in the same temp dir as curl's FILE: validation, sha256, writes, "
        "fsync, rename; MiB/s over the whole store; targets >= 0.5x curl, growth < 64 MiB",
        "curl: `curl -s -o /dev/null|FILE URL`, MiB/s from curl's own time_total; "
        "+ fsync adds the time to fsync that FILE afterwards (what the fetcher pays too)",
        "httpx /dev/null: `client.stream(...).aiter_raw()` of the same URL, bytes dropped, in a "
        "fresh process: the HTTP client's own ceiling (httpcore reads 64 KiB at a time)",
        "peak RSS +MiB: VmHWM (reset just before the store) minus VmRSS then, median; "
        "CPU s: user + system CPU of the downloading process during the transfer, median",
        f"script: {Path(__file__).name}; `python -m bench.run --only download_vs_curl`",
    ]
    if vidpipe_ratio < 0.5 or vidpipe_growth >= 64:
        notes.append(
            f"WARNING: target missed: {vidpipe_ratio:.2f}x curl, {vidpipe_growth:.1f} MiB growth"
        )
    return BenchResult(
        name="download_vs_curl",
        title=f"{size_mib} MiB download: the fetcher's path vs curl on the same URL",
        columns=[
            "client",
            "MiB/s, median (min-max)",
            "x curl /dev/null",
            "peak RSS +MiB",
            "CPU s",
        ],
        rows=rows,
        samples=samples,
        details={
            "size_bytes": size,
            "repeats": repeats,
            "server_chunk_bytes": SERVER_CHUNK,
            "storage": "LocalFolderStorage in a temp dir (fsync + rename)",
            "curl": subprocess.run(
                ["curl", "--version"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[:1],
        },
        notes=notes,
    )


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", type=int, metavar="PORT", help="internal: run the server")
    parser.add_argument("--child", metavar="BASE_URL", help="internal: one vidpipe download")
    parser.add_argument("--httpx-child", metavar="URL", help="internal: one bare httpx stream")
    parser.add_argument("--head", type=Path)
    parser.add_argument("--size", type=int)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.head.read_bytes(), args.size))
        return
    if args.child:
        print(json.dumps(asyncio.run(_store(args.child, args.root, args.size))))
        return
    if args.httpx_child:
        print(json.dumps(asyncio.run(_httpx_only(args.httpx_child, args.size))))
        return
    print(run(quick=args.quick).markdown())


if __name__ == "__main__":
    _main()
