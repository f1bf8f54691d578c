"""The bench report's verdict: which rows make `make bench` fail, and with which exit code."""

from __future__ import annotations

from ops.bench.report import Report, Row


def _report(*rows: Row) -> Report:
    report = Report("t")
    for row in rows:
        report.add(row)
    return report


def test_every_target_met_exits_0() -> None:
    report = _report(Row("store", "raw", "1 ev/s"))
    report.check("store", "ratio", 0.9, 0.7, ".2f")
    report.check_max("heartbeats", "non-200", 0, 0, "d")
    assert (report.exit_code, report.verdict()) == (0, "bench: every target met")
    assert "SUMMARY: 2/2 targets met" in report.render()


def test_a_missed_target_exits_1_and_is_named() -> None:
    report = _report()
    report.check("store", "ratio append/raw", 0.69, 0.70, ".2f")
    report.check("catchup", "ratio audit / runner floor", 0.5, 0.2, ".2f")
    report.check_max("heartbeats", "non-200", 3, 0, "d")
    assert report.exit_code == 1
    assert report.verdict() == ("bench: FAILED: store: ratio append/raw = 0.69 (target >= 0.70);"
                                " heartbeats: non-200 = 3 (target <= 0)")
    assert "SUMMARY: 1/3 targets met" in report.render()


def test_a_phase_that_could_not_run_exits_2() -> None:
    report = _report()
    report.check("store", "ratio", 0.1, 0.7, ".2f")
    report.error("timers", RuntimeError("broker down"))
    assert report.exit_code == 2
    assert report.verdict().endswith("timers: phase did not complete")
