"""A call counts once toward budgets when its intent's ``incomplete`` row and its own row ended
up on two sides: one in ``spend_logs``, the other in ``ledger_quarantine``.

A process killed within milliseconds between committing a call's row and marking its intent
done leaves both behind: the row in its outbox, the intent open in its log. The next ledger
ships both; when the database refuses the call's own row for good (a token count out of range,
which the intent does not carry), the intent's estimate lands in ``spend_logs`` and the call's
cost in the quarantine, and what the budgets start from counted the call twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from tests.ledger_support import (
    intent_line_of,
    leave_outbox,
    ledger_url,  # noqa: F401
    leftovers_dir,
    make_event,
    open_ledger,
    refused_rows,
    row_line,
)
from tracking.integrations.sql import SqlLedger, event_to_row, spend_logs
from tracking.integrations.sql._codec import encode_row
from tracking.integrations.sql._intents import IntentLog
from tracking.integrations.sql._quarantine import list_quarantine
from tracking.integrations.sql._target import SpendLogsInserter
from tracking.proxy.account_store import AccountStore

OWN_COST = Decimal("0.3000000000")


def _status_of(engine: sa.Engine, request_id: str) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(spend_logs.c.status).where(spend_logs.c.request_id == request_id)
        ).scalar()
    return None if found is None else str(found)


def _spent(url: str, **who: object) -> Decimal:
    store = AccountStore(url, auto_migrate=True)
    try:
        return store.spent(**who)  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_call_killed_before_its_intent_was_done_counts_once_when_its_row_is_refused(
    ledger_url,  # noqa: F811
):
    """The leftovers written as a kill -9 leaves them: the open intent in a dead process's
    log, the call's own row (refused by the database) in its outbox."""
    open_ledger(ledger_url).shutdown(10)  # the schema
    folder = leftovers_dir(ledger_url)
    folder.mkdir(parents=True, exist_ok=True)
    dead = IntentLog(folder)
    dead.record("killed-1", intent_line_of("killed-1", user="zoe", key_hash="k"))
    dead.close()  # its process is gone: the intent stays open for the next start
    _, refused = refused_rows("sqlite")[0]  # a token count out of range, on both dialects
    started = datetime.now(UTC)  # the call's start, which its intent holds too
    own = row_line(
        "killed-1", user="zoe", api_key_hash="k", cost=OWN_COST, start=started, **refused
    )
    leave_outbox(folder, [own])

    ledger = SqlLedger(ledger_url, mode="durable", intents=True, auto_migrate=True)
    try:
        deadline = time.monotonic() + 30
        while not (ledger.quarantined_rows == 1 and ledger.flush(0.1)):
            assert time.monotonic() < deadline, "the leftovers were not shipped"
        assert _status_of(ledger.engine, "killed-1") == "incomplete"
        assert [r.request_id for r in list_quarantine(ledger.engine)] == ["killed-1"]
    finally:
        ledger.shutdown(10)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    assert _spent(ledger_url, end_user="zoe", since=None) == OWN_COST
    assert _spent(ledger_url, key_hashes=["k"], since=yesterday) == OWN_COST


def test_a_calls_own_row_beside_its_quarantined_intent_counts_once(ledger_url):  # noqa: F811
    """The other way round: the call's row went in, its intent's row was refused."""
    ledger = open_ledger(ledger_url)
    try:
        inserter = SpendLogsInserter(ledger.engine)
        inserter.insert_rows([event_to_row(make_event(request_id="kept-1", cost=OWN_COST))])
        intent = make_event(
            request_id="kept-1",
            cost=Decimal("0.5"),
            status="incomplete",
            cost_source="estimate",
        )
        inserter.quarantine([("kept-1", encode_row(event_to_row(intent)), "refused")])
    finally:
        ledger.shutdown(10)
    assert _spent(ledger_url, end_user="alice", since=None) == OWN_COST
