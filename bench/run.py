"""Run every benchmark and write bench/results/latest.json and latest.md.

`python -m bench.run` runs the full sizes (a few minutes on 2 cores); `--quick` the small ones
(under a minute); `--only NAME` picks benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    BenchResult,
    download_memory,
    download_vs_curl,
    emulator_capacity,
    gateway_latency,
    pipeline_latency,
    pipeline_throughput,
    poller_inflight,
    recorder_throughput,
    stage_alone,
)

__all__ = ["BENCHMARKS", "machine_info", "main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCHMARKS: dict[str, Callable[[bool], BenchResult]] = {
    "download_memory": download_memory.run,
    "download_vs_curl": download_vs_curl.run,
    "emulator_capacity": emulator_capacity.run,
    "gateway_latency": gateway_latency.run,
    "pipeline_latency": pipeline_latency.run,
    "pipeline_throughput": pipeline_throughput.run,
    "poller_inflight": poller_inflight.run,
    "recorder_throughput": recorder_throughput.run,
    "stage_alone": stage_alone.run,
}


def _read_first(path: str, prefix: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    """Enough about the host to tell whether two result files are comparable."""
    mem_kib = _read_first("/proc/meminfo", "MemTotal")
    return {
        "platform": platform.platform(),
        "cpu_model": _read_first("/proc/cpuinfo", "model name") or platform.processor(),
        # Affinity, not os.cpu_count(): what this process may actually run on.
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "python": platform.python_version(),
    }


def _markdown(meta: dict[str, Any], results: list[BenchResult]) -> str:
    machine = meta["machine"]
    head = (
        f"## vidpipe benchmarks ({meta['mode']} mode)\n\n"
        f"{meta['started_at']} · {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB RAM · Python {machine['python']} · "
        f"{machine['platform']} · {meta['seconds']:.0f} s\n"
    )
    return head + "".join("\n" + r.markdown() for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run vidpipe's benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument(
        "--only", choices=sorted(BENCHMARKS), action="append", help="run just this one (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)

    names = args.only or list(BENCHMARKS)
    started_at = datetime.now(UTC).replace(microsecond=0)
    clock = time.monotonic()
    results: list[BenchResult] = []
    for name in names:
        print(f"running {name} ({'quick' if args.quick else 'full'})...", file=sys.stderr)
        t0 = time.monotonic()
        results.append(BENCHMARKS[name](args.quick))
        print(f"  done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    meta = {
        "mode": "quick" if args.quick else "full",
        "started_at": started_at.isoformat(),
        "seconds": time.monotonic() - clock,
        "machine": machine_info(),
    }

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "latest.json"
    md_path = args.out / "latest.md"
    payload = {**meta, "results": [r.as_json() for r in results]}
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    markdown = _markdown(meta, results)
    md_path.write_text(markdown, encoding="utf-8")
    print(markdown)
    print(json_path)
    print(md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
