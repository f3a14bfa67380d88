"""A hand-made event whose ``latency_ms`` is NaN is kept by an SQLite ledger, never dropped.

An SQLite ledger bound the NaN as is; SQLite stores a NaN as NULL, the ``NOT NULL`` column refused
the row, and the quarantine could not take it either: its line was encoded with money and times
as JSON allows no NaN. The row was logged "not recorded" and its call, billed, was in no report
and no budget. Such a row is now quarantined as its text (the non-finite number as a string), a
call every reader counts.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger_support import make_event, open_ledger
from tracking.integrations.sql import query_spend
from tracking.integrations.sql._quarantine import list_quarantine
from tracking.proxy.account_store import AccountStore


def test_a_row_with_a_nan_latency_is_quarantined_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url, mode="durable")
    try:
        event = make_event(request_id="odd-latency", user="lea", cost=Decimal("0.5"),
                           latency_ms=math.nan)  # fmt: skip
        ledger.on_end(event)
        assert ledger.flush(10)
        (kept,) = list_quarantine(ledger.engine)
        assert kept.request_id == "odd-latency"
        (lea,) = query_spend(ledger.engine, user="lea")
        assert (lea.requests, lea.cost_usd, lea.quarantined_requests) == (1, Decimal("0.5"), 1)
    finally:
        ledger.shutdown(10)
    store = AccountStore(url)
    try:
        assert store.spent(end_user="lea", since=None) == Decimal("0.5")
    finally:
        store.close()
