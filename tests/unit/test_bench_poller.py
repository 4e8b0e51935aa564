"""The pure parts of the poller-in-flight and download-vs-curl benchmarks."""

from __future__ import annotations

import math
import struct

import pytest
from aiokafka import TopicPartition

from bench import MIB
from bench.download_vs_curl import mp4_with_filler_head, rate_mib_s
from bench.poller_inflight import (
    JobRun,
    Sample,
    calls_per_job_minute,
    delay_target_s,
    detection_delays,
    parse_proc_status,
    percentile,
    topic_lags,
    ulid_time_s,
    watched_job_minutes,
    window_rates,
)
from vidpipe.dev.emulator.state import new_ulid

_STATUS = """Name:\tpython
VmPeak:\t  400000 kB
VmHWM:\t  120000 kB
VmRSS:\t  100000 kB
Threads:\t4
"""


def test_parse_proc_status_reads_kib_as_bytes() -> None:
    assert parse_proc_status(_STATUS, "VmRSS") == 100_000 * 1024
    assert parse_proc_status(_STATUS, "VmHWM") == 120_000 * 1024


def test_parse_proc_status_refuses_a_missing_field() -> None:
    with pytest.raises(ValueError, match="VmSwap"):
        parse_proc_status(_STATUS, "VmSwap")


def test_percentile_interpolates_and_is_nan_when_empty() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(values, 100) == 4.0
    assert math.isnan(percentile([], 50))


def test_detection_delays_skip_jobs_never_seen_done() -> None:
    jobs = [
        JobRun("a", finishes_at=100.0, uncertainty_s=0.001, detected_at=103.5),
        JobRun("b", finishes_at=101.0, uncertainty_s=0.001, detected_at=None),
        JobRun("c", finishes_at=102.0, uncertainty_s=0.001, detected_at=102.25),
    ]
    assert detection_delays(jobs) == pytest.approx([3.5, 0.25])


def test_delay_target_is_the_larger_of_a_tenth_and_the_hint() -> None:
    assert delay_target_s(120, None) == pytest.approx(12)
    assert delay_target_s(120, 5) == pytest.approx(12)
    assert delay_target_s(20, 5) == 5


def _sample(t: float, calls: int, watched: int) -> Sample:
    return Sample(t=t, rss_bytes=0, cpu_s=0.0, status_calls=calls, watched=watched)


def test_window_rates_divide_calls_by_the_jobs_watched() -> None:
    # 100 jobs watched, 20 calls/s for 10 s = 200 calls = 2 calls per job in 10 s = 12/min;
    # then half the jobs are done and the next window makes 100 calls: still 12 per job per min.
    samples = [
        _sample(0, 0, 100),
        _sample(5, 100, 100),
        _sample(10, 200, 50),
        _sample(15, 250, 50),
        _sample(20, 300, 0),
        _sample(30, 300, 0),
    ]
    assert window_rates(samples, 10) == pytest.approx([12.0, 12.0])


def test_window_rates_need_a_full_window() -> None:
    assert window_rates([_sample(0, 0, 10), _sample(9, 50, 10)], 10) == []


def test_watched_minutes_and_overall_rate() -> None:
    jobs = [
        JobRun("a", finishes_at=50.0, uncertainty_s=0.0, detected_at=60.0),
        JobRun("b", finishes_at=50.0, uncertainty_s=0.0, detected_at=None),
    ]
    # From submission at 0: a watched 60 s, b until the end at 120 s: 3 job-minutes.
    assert watched_job_minutes(jobs, submitted_at=0.0, ended_at=120.0) == pytest.approx(3.0)
    assert calls_per_job_minute(36, jobs, 0.0, 120.0) == pytest.approx(12.0)
    assert math.isnan(calls_per_job_minute(5, [], 0.0, 120.0))


def test_ulid_time_is_the_emulators_creation_clock_to_the_millisecond() -> None:
    created = 1_796_178_776.4688
    assert ulid_time_s(new_ulid(created)) == pytest.approx(1_796_178_776.468, abs=1e-6)
    assert ulid_time_s(new_ulid(created).upper()) == pytest.approx(1_796_178_776.468, abs=1e-6)


def test_topic_lags_sum_partitions_and_count_uncommitted_from_zero() -> None:
    ends = {
        TopicPartition("t.job.submitted", 0): 10,
        TopicPartition("t.job.submitted", 1): 5,
        TopicPartition("t.poller.due", 0): 7,
    }
    committed = {
        TopicPartition("t.job.submitted", 0): 4,
        # A commit past the end (read between the two calls) is no negative lag.
        TopicPartition("t.poller.due", 0): 9,
    }
    assert topic_lags(committed, ends) == {"t.job.submitted": 6 + 5, "t.poller.due": 0}


def test_mp4_with_filler_head_announces_the_whole_size() -> None:
    sample = b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00"
    head = mp4_with_filler_head(sample, 1024)
    assert head.startswith(sample)
    (box_size,) = struct.unpack(">I", head[len(sample) : len(sample) + 4])
    assert head[len(sample) + 4 :] == b"free"
    assert len(sample) + box_size == 1024


def test_mp4_with_filler_head_refuses_sizes_one_box_cannot_hold() -> None:
    with pytest.raises(ValueError):
        mp4_with_filler_head(b"x" * 100, 104)
    with pytest.raises(ValueError):
        mp4_with_filler_head(b"x" * 100, 100 + 2**32)


def test_rate_is_mib_per_second() -> None:
    assert rate_mib_s(256 * MIB, 2.0) == pytest.approx(128.0)
