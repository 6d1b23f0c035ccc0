"""Counting results by window as well as by message (the benchmarks' duplicates), and
counters that a restart reset."""

from __future__ import annotations

from typing import Any

from smap_bench.bench.live import ResultTally, _counted_delta, window_key
from smap_bench.bench.load import _result_counts


def result(
    sat: str, start: int | None, *, loop: int = 0, job: str = "j", worker: float = 1.0
) -> dict[str, Any]:
    return {
        "satellite_id": sat,
        "subsystem": "ACS",
        "loop": loop,
        "record_index_start": start,
        "job_id": job,
        "stages": {"scheduler": 0.5, "worker": worker},
    }


def test_a_window_published_twice_is_one_window_and_one_duplicate() -> None:
    tally = ResultTally("b1-")
    for item in [
        result("b1-1", 0),
        result("b1-1", 10),
        result("b1-1", 10, worker=2.0),  # scored again
        result("b1-2", 10),
        result("sat1", 0),  # other traffic
    ]:
        tally.add(item)
    summary = tally.summary()
    assert (summary["results"], summary["windows"], summary["duplicates"]) == (4, 3, 1)
    assert summary["other_results"] == 1
    [example] = summary["duplicate_examples"]
    assert example["window"] == ["b1-1", "ACS", 0, 10] and example["copies"] == 2
    assert [copy["worker"] for copy in example["stamps"]] == [1.0, 2.0]


def test_loops_and_streams_are_different_windows() -> None:
    tally = ResultTally("b1-")
    for item in [result("b1-1", 0), result("b1-1", 0, loop=1), result("b1-2", 0)]:
        tally.add(item)
    assert (tally.windows, tally.duplicates) == (3, 0)
    assert tally.examples() == []


def test_a_result_without_record_index_is_identified_by_job_id() -> None:
    assert window_key(result("b1-1", None, job="abc")) == ("job", "abc")
    tally = ResultTally("b1-")
    for item in [
        result("b1-1", None, job="a"),
        result("b1-1", None, job="a"),
        result("b1-1", None, job="b"),
    ]:
        tally.add(item)
    assert (tally.results, tally.windows, tally.duplicates) == (3, 2, 1)


def test_examples_are_bounded() -> None:
    tally = ResultTally("b1-", keep_examples=2)
    for start in range(0, 50, 10):
        tally.add(result("b1-1", start))
        tally.add(result("b1-1", start))
    assert tally.duplicates == 5 and len(tally.examples()) == 2


def test_the_bench_reports_windows_and_messages_apart() -> None:
    # The session-4 shape: counters one result ahead of the windows sent, because one
    # window was published twice; by window nothing is lost and one is a duplicate.
    on_topic = {"results": 7781, "windows": 7780, "duplicates": 1, "other_results": 0}
    counts = _result_counts(sent=7780, results=7781, rejected=0, on_topic=on_topic)
    assert counts["windows_sent"] == 7780 and counts["results"] == 7781
    assert counts["windows_scored"] == 7780 and counts["duplicates"] == 1
    assert counts["lost"] == 0 and counts["lost_by_counters"] == 0


def test_a_lost_window_is_not_hidden_by_a_duplicate() -> None:
    # one window published twice, another never: the counters balance, the windows do not
    on_topic = {"results": 100, "windows": 99, "duplicates": 1, "other_results": 0}
    counts = _result_counts(sent=100, results=100, rejected=0, on_topic=on_topic)
    assert counts["lost_by_counters"] == 0
    assert counts["lost"] == 1


def test_other_traffic_and_dead_letters_are_accounted_for() -> None:
    on_topic = {"results": 95, "windows": 95, "duplicates": 0, "other_results": 3}
    counts = _result_counts(sent=100, results=98, rejected=2, on_topic=on_topic)
    assert counts["lost"] == 0 and counts["other_traffic_results"] == 3


def test_a_counter_of_a_stage_restarted_during_a_run_counts_as_not_known() -> None:
    before = {"confirmation": {"judged": 1500.0, "incomplete": 0.0, "created": 100.0}}
    steady = {"confirmation": {"judged": 11875.0, "incomplete": 0.0, "created": 100.0}}
    fell = {"confirmation": {"judged": 10.0, "incomplete": 0.0, "created": 100.0}}
    # a process started since: it counts from 0 again, even when it has counted more
    later = {"confirmation": {"judged": 21995.0, "incomplete": 0.0, "created": 150.0}}
    assert _counted_delta(steady, before, "confirmation", "judged") == 10375
    assert _counted_delta(fell, before, "confirmation", "judged") is None
    assert _counted_delta(fell, before, "confirmation", "incomplete") == 0
    assert _counted_delta(later, before, "confirmation", "judged") is None
    assert _counted_delta(later, before, "confirmation", "incomplete") is None
    # a counter the stage does not serve is not known, not 0
    assert _counted_delta(steady, before, "confirmation", "unconfirmed") is None
