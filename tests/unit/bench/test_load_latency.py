"""The load benchmark's latency summary: per stage, with the fleet's start-up left out."""

from __future__ import annotations

import pytest

from smap_bench.bench.load import LoadBenchmark, latency_summary
from smap_bench.config import Settings


def test_startup_samples_are_left_out_of_the_sustained_figure() -> None:
    # a stream's first window waited 3 s (topic discovery); later ones 0.2 s
    writer = [(100.0, 3.0)] + [(100.0 + 10 * k, 0.2) for k in range(1, 20)]
    router = [(100.0 + 10 * k, 0.05) for k in range(20)]
    whole = latency_summary([("writer", writer), ("router", router)])
    sustained = latency_summary([("writer", writer), ("router", router)], startup_s=30)
    assert whole["writer"]["samples"] == 20 and whole["writer"]["p99"] > 2000
    assert sustained["writer"] == {"p50": 200.0, "p99": 200.0, "samples": 17}
    assert sustained["router"]["samples"] == 17


def test_no_samples_no_summary() -> None:
    assert latency_summary([]) == {}
    assert latency_summary([("writer", [(1.0, 0.1)])], startup_s=10) == {}


@pytest.mark.parametrize(("duration", "cut"), [(600.0, 30.0), (45.0, 15.0)])
def test_startup_is_at_most_a_third_of_the_run(duration: float, cut: float) -> None:
    assert LoadBenchmark(Settings(), 5, duration).startup_cut_s == cut
