"""A call in flight when its end user is deleted keeps its hold (decided 2026-12-07).

The deletion drops the end user's counters; the end user made again with a budget starts them
from the ledger, counted from the deletion, plus the holds of the calls still in flight, the
call started before the deletion among them: when it settles its real cost stays on the new
counter, though the end user's spend (``/customer/info``, counted from the deletion) leaves it
out. The budget errs toward refusing, by at most what such calls cost, until the counter next
starts from the ledger; it never lets a call past it. On every kind of counter: one process's,
the workers' file, Redis; the store is a real SQLite ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from tests.test_proxy_budget_seeded_after_row import PARAMS, make_counters  # noqa: F401
from tracking.config import parse_config
from tracking.proxy.account_store import AccountStore, EndUserRecord
from tracking.proxy.auth import MASTER
from tracking.proxy.budgets import Budgets, period_window
from tracking.proxy.known_end_users import delete_end_users
from tracking.proxy.shared_counters import Counters, to_units

USER = "alice"
REAL = Decimal("0.004")


def _record() -> EndUserRecord:
    now = datetime.now(UTC)
    return EndUserRecord(USER, Decimal(1), "total", False, now, now)


def test_a_call_in_flight_at_its_end_users_deletion_keeps_its_hold(
    make_counters: Callable[[], Counters],  # noqa: F811
    tmp_path,
    monkeypatch,
) -> None:
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    store = AccountStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    name = f"user:{USER}:{period_window('total', datetime.now(UTC))[1]}"
    params = {**PARAMS, "user": USER}

    async def scenario() -> tuple[int, int | None, int | None]:
        counters = make_counters()
        budgets = Budgets(parse_config({"model_list": []}), store, counters, cache_seconds=0)
        try:
            before = await budgets.reserve(MASTER, params, PARAMS["model"], request_id="r-1")
            (_, held), *_ = before.held
            await asyncio.to_thread(delete_end_users, store, [USER])
            await budgets.reset_end_user(USER)
            await asyncio.to_thread(store.create_end_user, _record())
            after = await budgets.reserve(MASTER, params, PARAMS["model"], request_id="r-2")
            started = await counters.reserve(name, 0, 10**12, None)
            await before.settle(REAL)  # its real cost stays on the new counter
            settled = await counters.reserve(name, 0, 10**12, None)
            await after.release()
            return held, started, settled
        finally:
            await counters.aclose()

    try:
        store.create_end_user(_record())
        held, started, settled = asyncio.run(scenario())
        assert started == 2 * held  # the new counter: both calls' holds
        assert settled == to_units(REAL) + held
        assert store.spent(end_user=USER, since=None) == 0  # the spend from the deletion: none
    finally:
        store.close()
