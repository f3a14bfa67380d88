"""A ledger shut down while its database stops answering leaves its outbox to the next ledger.

The shipper was in the middle of an attempt (the database paused, not down: the connection
waits) when shutdown's deadline passed: the outbox stayed open and locked by the process until
it exited, so a ledger opened again in the same process could not claim it, and the rows behind
the attempt waited for the next process. The shipper now closes its outboxes when the attempt
ends.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from tests.accounts_support import wait_for
from tests.ledger_support import ids_in, make_event, open_ledger
from tests.relay import TcpRelay
from tracking.integrations.sql import SqlLedger


def test_rows_behind_an_attempt_that_outlived_shutdown_ship_from_the_next_ledger(
    postgres_url, tmp_path
):
    folder = tmp_path / "outbox"
    open_ledger(postgres_url, outbox_dir=folder).shutdown(10)  # the schema
    relay = TcpRelay(postgres_url)
    try:
        ledger = SqlLedger(relay.url, mode="durable", outbox_dir=folder)
        relay.pause()  # the database stops answering; connections wait
        first = make_event(user="paused-a", cost=Decimal("0.0100000000"))
        ledger.on_end(first)  # acknowledged in the outbox; the shipper's attempt waits
        behind = [make_event(user=f"paused-{n}") for n in range(3)]
        for event in behind:
            ledger.on_end(event)
        ledger.shutdown(1)
        shipper = ledger._outbox._shipper  # type: ignore[union-attr]
        assert shipper is not None
        relay.restore()  # the attempt ends; the shipper stops
        wait_for(lambda: not shipper._thread.is_alive(), timeout=60)
        again = SqlLedger(relay.url, mode="durable", outbox_dir=folder)
        try:
            assert again.flush(30)
        finally:
            again.shutdown(10)
        engine = sa.create_engine(postgres_url)
        try:
            wanted = {first.request_id, *(e.request_id for e in behind)}
            assert wanted <= ids_in(engine)
        finally:
            engine.dispose()
    finally:
        relay.close()
