"""A budget counter seeded again while calls are in flight on it counts their holds.

Changing a key's or an end user's budget drops its counter, so its next call counts from the
ledger. Calls in flight then are not in the ledger yet, and each, when it settles, replaces its
hold with its real cost on the new counter, which never had the hold. Without Redis (the
counters of one process, or the file ``tracking serve --workers N`` shares) the new counter
started from the ledger alone: it under-counted every such hold, so the budget could be passed
by as much (a settled call even drove it below the ledger). Redis's counters already added the
instance's holds in flight; now the others do too, every worker's for the shared file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracking.proxy.machine_counters import MachineCounters
from tracking.proxy.shared_counters import LocalCounters

NAME = "key:k:total"
LIMIT = 1_000


@pytest.fixture(params=["process", "workers"])
def two_sides(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LocalCounters | MachineCounters, LocalCounters | MachineCounters]]:
    """The counters the call is held on, and those that change the budget: one process's
    (the same), or two workers' sharing one file."""
    if request.param == "process":
        local = LocalCounters()
        yield local, local
        return
    path = str(tmp_path / "counters.db")
    first, second = MachineCounters(path), MachineCounters(path)
    try:
        yield first, second
    finally:
        asyncio.run(first.aclose())
        asyncio.run(second.aclose())


def test_a_counter_dropped_while_a_call_is_in_flight_still_counts_the_call(two_sides):
    calling, changing = two_sides

    async def scenario() -> list[int | None]:
        hold = object()  # the call's reservation
        held = await calling.reserve(NAME, 100, LIMIT, 0, hold)
        await changing.drop([NAME])  # the key's budget was changed
        # the next call: the counter is missing, and seeded from the ledger (nothing yet)
        missing = await changing.reserve(NAME, 0, LIMIT, None, object())
        seeded = await changing.reserve(NAME, 0, LIMIT, 0, object())
        await calling.adjust(NAME, 40 - 100, hold)  # it cost 40: its ledger row is written
        settled = await changing.reserve(NAME, 0, LIMIT, None, object())
        return [held, missing, seeded, settled]

    # the seeded counter has the call's hold, then its real cost (it had 0, then -60)
    assert asyncio.run(scenario()) == [100, None, 100, 40]


def test_a_settled_call_is_no_longer_in_flight(two_sides):
    """A guard: once settled, a call is in the ledger, and a counter seeded again from it does
    not count the call a second time."""
    calling, changing = two_sides

    async def scenario() -> int | None:
        hold = object()
        await calling.reserve(NAME, 100, LIMIT, 0, hold)
        await calling.adjust(NAME, 40 - 100, hold)
        await changing.drop([NAME])
        return await changing.reserve(NAME, 0, LIMIT, 40, object())  # the ledger has its 40

    assert asyncio.run(scenario()) == 40
