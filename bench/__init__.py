"""vidpipe benchmarks: every figure stands beside a baseline measured in the same run.

`python -m bench.run [--quick]` runs them all; see bench/README.md for what each one measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MIB", "BenchResult"]

MIB = 1024 * 1024


@dataclass
class BenchResult:
    """One benchmark's outcome: a small table for people, the raw samples for machines."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    #: Every measured number (including repeats), so the table can be re-derived or re-judged.
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: Parameters and environment details specific to this benchmark.
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "details": self.details,
            "notes": self.notes,
            "samples": self.samples,
        }

    def markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"
