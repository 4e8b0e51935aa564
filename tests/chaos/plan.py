"""The fault schedule of a chaos run: a pure function of a seed, so a failing run can be re-run.

A plan is a list of `Fault`s at offsets (seconds) from the start of the run. Every kind of fault
happens at least once, every stage is killed at least once, the rest is drawn at random over
the window. Nothing here touches a process or a socket: `tests/chaos/runner.py` carries it out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["BURSTS", "Fault", "FaultKind", "plan_faults"]

FaultKind = Literal["kill", "broker_restart", "rate_limit", "server_error", "drop_create", "slow"]

#: The emulator-side faults, each a burst: the share of provider requests it hits meanwhile.
BURSTS: dict[FaultKind, float] = {
    "rate_limit": 0.5,
    "server_error": 0.4,
    "drop_create": 0.6,
    "slow": 0.3,
}


@dataclass(frozen=True, order=True)
class Fault:
    at_s: float
    kind: FaultKind
    #: The stage killed ("" for the others).
    target: str = ""
    #: How long the stage stays down, the burst lasts, or the broker stays stopped.
    length_s: float = 0.0
    #: A burst that stays on past its length until it has hit at least one request (the
    #: pipeline may be stalled by a rebalance when it starts); the run must serve every kind.
    until_served: bool = False

    def describe(self) -> str:
        what = f"{self.kind} {self.target}".strip()
        return f"t+{self.at_s:5.1f}s {what} for {self.length_s:.1f}s"


def plan_faults(
    seed: int,
    *,
    window_s: float,
    stages: Sequence[str],
    kills: int,
    broker_restarts: int,
    bursts: int,
) -> list[Fault]:
    """`kills` SIGKILLs (each stage at least once) at random moments, `bursts` emulator bursts
    (each kind once in a slot of its own, the rest at random), and `broker_restarts` broker
    restarts kept apart from each other in the second half of `window_s`."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    if kills < len(stages) or bursts < len(BURSTS):
        raise ValueError("need at least one kill per stage and one burst per kind")
    rng = random.Random(seed)
    faults: list[Fault] = []
    targets = list(stages) + [rng.choice(list(stages)) for _ in range(kills - len(stages))]
    rng.shuffle(targets)
    for target in targets:
        faults.append(
            Fault(
                round(rng.uniform(0, window_s * 0.9), 2),
                "kill",
                target,
                round(rng.uniform(0.2, 2.0), 2),
            )
        )
    # One burst of each kind in its own slot of the first half, clear of the broker restarts:
    # a burst while the broker is down would meet no provider traffic and prove nothing.
    kinds = list(BURSTS)
    rng.shuffle(kinds)
    slot_s = window_s * 0.5 / len(kinds)
    for index, kind in enumerate(kinds):
        faults.append(
            Fault(
                round(index * slot_s, 2), kind, length_s=round(slot_s * 0.9, 2), until_served=True
            )
        )
    for _ in range(bursts - len(kinds)):
        faults.append(
            Fault(
                round(rng.uniform(0, window_s * 0.85), 2),
                rng.choice(list(BURSTS)),
                length_s=rng.choice((3.0, 5.0)),
            )
        )
    # Broker restarts in equal slices of the second half, so two never overlap.
    slice_s = window_s * 0.5 / broker_restarts
    for index in range(broker_restarts):
        faults.append(
            Fault(
                round(window_s * 0.5 + index * slice_s + rng.uniform(0.05, 0.3) * slice_s, 2),
                "broker_restart",
                length_s=round(rng.uniform(0.5, 2.0), 2),
            )
        )
    return sorted(faults)
