"""The fault suite's schedule: every stage killed, every fault kind served, restarts apart."""

from __future__ import annotations

import itertools

import pytest

from services.registry import STAGES
from tests.chaos.plan import BURSTS, Fault, plan_faults


def _plan(seed: int = 7, window_s: float = 30.0, restarts: int = 2) -> list[Fault]:
    return plan_faults(
        seed, window_s=window_s, stages=STAGES, kills=12, broker_restarts=restarts, bursts=9
    )


def test_every_stage_is_killed_and_every_kind_of_burst_comes_at_least_once() -> None:
    plan = _plan()
    assert {f.target for f in plan if f.kind == "kill"} == set(STAGES)
    assert sum(f.kind == "kill" for f in plan) == 12
    assert {f.kind for f in plan} >= set(BURSTS) | {"broker_restart"}
    assert sum(f.kind in BURSTS for f in plan) == 9
    assert all(0 <= f.at_s <= 30 for f in plan)
    assert plan == sorted(plan)


def test_the_guaranteed_bursts_do_not_overlap_each_other_or_a_broker_restart() -> None:
    plan = _plan()
    first_half = sorted((f for f in plan if f.kind in BURSTS and f.at_s < 15), key=lambda f: f.at_s)
    restarts = [f for f in plan if f.kind == "broker_restart"]
    assert all(r.at_s >= 15 for r in restarts)
    assert restarts[1].at_s - restarts[0].at_s >= 15 * 0.5 * 0.75
    guaranteed = [f for f in first_half if f.until_served]
    assert {f.kind for f in guaranteed} == set(BURSTS)
    for before, after in itertools.pairwise(guaranteed):
        assert before.at_s + before.length_s <= after.at_s


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert _plan(seed=3) == _plan(seed=3)
    assert _plan(seed=3) != _plan(seed=4)


def test_a_plan_too_small_to_touch_everything_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one kill per stage"):
        plan_faults(1, window_s=30, stages=STAGES, kills=2, broker_restarts=1, bursts=9)
