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


def test_a_settling_cancelled_partway_still_settles_every_counter(tmp_path: Path) -> None:
    """A call's settling is not cut short by its task's cancellation (a client gone, a worker
    stopping): each budget the call held on is told its real cost. It awaited each counter in
    turn, so a cancellation during the first left the others at the call's worst case, their
    holds in flight, for as long as the counter lived."""
    from decimal import Decimal

    from tracking.proxy.budgets import Reservation
    from tracking.proxy.shared_counters import to_units

    names = ["key:k:total", "user:u:total", "proxy:total"]
    worst, cost = 100, Decimal("0.0000004")  # 40 units

    async def scenario() -> tuple[list[int | None], int]:
        counters = MachineCounters(str(tmp_path / "counters.db"))
        try:
            reservation = Reservation(counters)
            for name in names:
                await counters.reserve(name, worst, LIMIT, 0, reservation)
                reservation.held.append((name, worst))
            settling = asyncio.ensure_future(reservation.settle(cost))
            await asyncio.sleep(0)  # it is waiting on the first counter now
            settling.cancel()
            with pytest.raises(asyncio.CancelledError):
                await settling
            for _ in range(500):  # the settling goes on without its caller
                values = [await counters.reserve(n, 0, LIMIT, None, object()) for n in names]
                (holds,) = counters._conn.execute("SELECT count(*) FROM holds").fetchone()
                if values == [to_units(cost)] * len(names) and holds == 0:
                    break
                await asyncio.sleep(0.01)
            return values, holds
        finally:
            await counters.aclose()

    assert asyncio.run(scenario()) == ([to_units(cost)] * len(names), 0)
