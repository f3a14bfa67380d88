"""``tests.minute_support.in_one_minute``, which the rpm tests run their calls with: a run that
fits in a calendar minute is taken as it is, without waiting before it (the tests waited up to
10 s for a minute's first 50 seconds, and failed when their calls took longer than the rest of
it); a run straddling a minute's end is done again in a minute none of its calls was made in.
A clock the test moves stands in for the wall clock."""

from __future__ import annotations

import pytest

from tests.minute_support import in_one_minute


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_a_run_late_in_a_minute_is_taken_at_once_when_it_fits():
    clock = Clock(60 * 1000 + 58.0)  # two seconds before a minute ends

    def calls() -> float:
        clock.now += 1.5
        return clock.now

    assert in_one_minute(calls, clock=clock.time, sleep=clock.sleep) == 60 * 1000 + 59.5
    assert clock.slept == 0


def test_a_run_straddling_a_minute_is_done_again_in_a_minute_it_made_no_call_in():
    clock = Clock(60 * 1000 + 50.0)
    starts: list[float] = []

    def calls() -> int:
        starts.append(clock.now)
        clock.now += 12  # slow calls: past the minute's end the first time
        return len(starts)

    assert in_one_minute(calls, clock=clock.time, sleep=clock.sleep) == 2
    assert starts[1] // 60 == starts[0] // 60 + 2  # minute 1001 had calls of the first run
    assert starts[1] - 60 * 1002 < 0.5  # at the start of that minute, not later


def test_runs_that_never_fit_fail_the_test():
    clock = Clock(0.0)

    def calls() -> None:
        clock.now += 61

    with pytest.raises(AssertionError, match="never fitted in one calendar minute"):
        in_one_minute(calls, clock=clock.time, sleep=clock.sleep)
