"""The pure parts of the pipeline benchmarks: percentiles, pacing, the per-hop split, lag, CPU."""

from __future__ import annotations

import itertools
import os

import pytest
from aiokafka import TopicPartition

from bench.pipeline import (
    cpu_seconds_from_stat,
    fmt_range,
    group_lag,
    hop_split,
    percentile,
    pipeline_overhead,
    send_schedule,
    summarize,
)
from bench.pipeline_throughput import limiting_stage, thin_series


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    # rank (4 - 1) * 0.99 = 2.97: 3 + 0.97 * (4 - 3)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 95) == 7.0


def test_percentile_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_reports_the_tail() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    summary = summarize(values)
    assert summary["count"] == 100
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == 100
    assert summary["mean"] == pytest.approx(50.5)


def test_send_schedule_is_evenly_spaced_and_starts_at_zero() -> None:
    schedule = send_schedule(20, 2)
    assert len(schedule) == 40
    assert schedule[0] == 0
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(schedule)}
    assert gaps == {0.05}
    assert schedule[-1] == pytest.approx(1.95)


def test_send_schedule_rounds_the_count_and_refuses_nonsense() -> None:
    assert len(send_schedule(5, 0.5)) == 2  # 2.5 rounds to even
    assert len(send_schedule(3, 1.2)) == 4  # 3.6
    with pytest.raises(ValueError):
        send_schedule(0, 10)
    with pytest.raises(ValueError):
        send_schedule(10, -1)


def test_hop_split_adds_up_to_the_total() -> None:
    published = 1000.0
    occurred = {"JobSubmitted": 1000.05, "JobSucceeded": 1000.25, "VideoStored": 1000.40}
    split = hop_split(published, occurred, stored_recorded_at=1000.46)
    assert split["submit"] == pytest.approx(0.05)
    assert split["poll"] == pytest.approx(0.20)
    assert split["fetch"] == pytest.approx(0.15)
    assert split["record"] == pytest.approx(0.06)
    assert split["total"] == pytest.approx(0.46)
    hops = split["submit"] + split["poll"] + split["fetch"] + split["record"]
    assert hops == pytest.approx(split["total"])


def test_pipeline_overhead_subtracts_the_poll_wait_at_most_the_poll_hop() -> None:
    split = {"submit": 0.05, "poll": 0.2, "fetch": 0.15, "record": 0.06, "total": 0.46}
    assert pipeline_overhead(split, poll_wait_s=0.1, provider_s=0.0) == pytest.approx(0.36)
    assert pipeline_overhead(split, poll_wait_s=0.1, provider_s=0.05) == pytest.approx(0.31)
    # A poller that checked sooner than the configured wait: only its real poll hop comes off.
    assert pipeline_overhead(split, poll_wait_s=5.0, provider_s=0.0) == pytest.approx(0.26)


def test_group_lag_counts_uncommitted_partitions_of_committed_topics() -> None:
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    ends = {a0: 10, a1: 7, b0: 100}
    # Committed on a/0 only: a/1 counts from 0; topic b is another group's.
    assert group_lag({a0: 4}, ends) == 6 + 7
    assert group_lag({a0: 10, a1: 7}, ends) == 0
    assert group_lag({}, ends) is None


def test_cpu_seconds_from_stat_survives_odd_command_names() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S", *["0"] * 10, str(3 * ticks), str(ticks), *["0"] * 30]
    line = f"1234 (python -m (weird) name) {' '.join(fields)}"
    assert cpu_seconds_from_stat(line) == pytest.approx(4.0)
    with open("/proc/self/stat", encoding="utf-8") as f:
        assert cpu_seconds_from_stat(f.read()) > 0


def test_fmt_range_shows_median_and_spread() -> None:
    assert fmt_range([3.0, 1.0, 2.0]) == "2 (1-3)"
    assert fmt_range([12.34], 1) == "12.3"
    assert fmt_range([0.1, 0.2], 0, scale=1000) == "150 (100-200)"


def test_limiting_stage_is_the_one_that_backs_up() -> None:
    stages = ("submitter", "poller", "fetcher", "recorder")
    lag = {"submitter": 5.0, "poller": 0.0, "fetcher": 2.0, "recorder": 40.0}
    assert limiting_stage(lag, {}, stages) == "recorder"
    # No lag anywhere: the stage that costs the most CPU per request.
    assert limiting_stage({}, {"poller": 9.0, "fetcher": 3.0}, stages) == "poller"


def test_thin_series_keeps_the_last_sample() -> None:
    series = [{"t": float(i)} for i in range(200)]
    thinned = thin_series(series, points=10)
    assert len(thinned) == 10
    assert thinned[0] == {"t": 0.0}
    assert thinned[-1] == {"t": 199.0}
    assert thin_series(series[:5], points=10) == series[:5]
