"""What the load benchmark says about the machine it shared."""

from __future__ import annotations

from smap_bench.bench.load import _host_report, _lag_summary


def test_host_cpu_is_split_into_the_pipeline_and_everything_else() -> None:
    before = {"router": 10.0, "scheduler": 20.0}
    after = {"router": 13.0, "scheduler": 26.0}  # 9 CPU seconds over 30 s: 30 %
    report = _host_report(busy_s=45.0, before=before, after=after, seconds=30.0)
    assert report["cpu_percent"] == 150.0
    assert report["pipeline_cpu_percent"] == 30.0
    assert report["other_cpu_percent"] == 120.0
    assert report["cores"] >= 1


def test_other_cpu_is_never_negative() -> None:
    report = _host_report(busy_s=1.0, before={"a": 0.0}, after={"a": 2.0}, seconds=10.0)
    assert report["other_cpu_percent"] == 0.0


def test_a_process_restarted_during_the_run_counts_nothing() -> None:
    report = _host_report(busy_s=10.0, before={"a": 5.0}, after={"a": 1.0}, seconds=10.0)
    assert report["pipeline_cpu_percent"] == 0.0
    assert report["other_cpu_percent"] == 100.0


def test_lag_is_summed_over_groups_and_kept_per_group() -> None:
    samples = [{"router": 0, "scheduler": 700}, {"router": 30, "scheduler": 650}]
    assert _lag_summary(samples) == {
        "max": 700,
        "last": 680,
        "max_by_group": {"router": 30, "scheduler": 700},
    }
    assert _lag_summary([]) == {"max": 0, "last": 0, "max_by_group": {}}
