"""A replay or quarantine hook added after ``SqlLedger(...)`` hears of what the opening did.

A ledger replays and quarantines rows while it opens: an SQLite ledger writes, in its
constructor, the rows an earlier ledger for the file kept at shutdown (quarantining those the
file refuses for good), and a ledger with an outbox ships a dead process's rows at once. A hook
its creator adds afterwards (or an exporter subscribing later) is first called with the rows
counted so far, then with each count after, so what every hook is given adds up to the ledger's
own count, whenever it was added; and the Prometheus counters show the opening's rows however
late they are wired.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.ledger_support import (
    fresh_sqlite_ledger,
    ids_in,
    leave_outbox,
    ledger_url,  # noqa: F401  (a fixture)
    leftovers_dir,
    make_event,
    open_ledger,
    refused_line,
    refused_rows,
    row_line,
)
from tracking import ledger_stats
from tracking.integrations.sql import SqlLedger
from tracking.integrations.sql._hooks import CountHooks


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return fresh_sqlite_ledger(tmp_path, monkeypatch)


def _leave_kept_rows(url: str) -> None:
    """Rows an earlier SQLite ledger for the file kept at shutdown: one good, one refused."""
    leave_outbox(leftovers_dir(url), [row_line("good-1"), refused_line()])


def test_hooks_added_after_an_sqlite_ledger_opened_hear_of_its_quarantines_and_replays(
    url: str,
) -> None:
    _leave_kept_rows(url)
    ledger = SqlLedger(url, mode="durable")  # writes the kept rows, quarantines one
    try:
        assert ledger.ledger_stats().quarantined_rows == 1  # the opening did quarantine it
        quarantined: list[int] = []
        replayed: list[int] = []
        ledger.quarantine_hooks.append(quarantined.append)
        ledger.replay_hooks.append(replayed.append)
        assert quarantined == [1] and replayed == [1]  # told at once, on registration
        late: list[int] = []
        ledger.quarantine_hooks.extend([late.append])  # any way of adding one
        ledger.quarantine_hooks += [late.append]
        assert late == [1, 1]
        with pytest.raises(AttributeError, match="cannot be replaced"):
            ledger.quarantine_hooks = []  # the outbox and the shippers hold the ledger's list

        ledger.on_end(
            make_event(request_id="bad-later", usage=refused_rows("sqlite")[0][1]["usage"])
        )  # type: ignore[arg-type]
        assert ledger.flush(10)
        # Later quarantines are told once each, as before; no row twice.
        assert sum(quarantined) == sum(late) / 2 == ledger.ledger_stats().quarantined_rows == 2
        assert sum(replayed) == ledger.ledger_stats().replayed_rows == 1
        assert ids_in(ledger.engine) == {"good-1"}
    finally:
        ledger.shutdown(10)


def test_quarantines_at_open_show_in_the_metric_wired_after_the_ledger(url: str) -> None:
    """The metric reads the live ledgers when scraped, so wiring it late misses nothing."""
    from prometheus_client import CollectorRegistry

    from tracking.integrations.prometheus import PrometheusLogger

    _leave_kept_rows(url)
    before = ledger_stats.live_stats()
    ledger = SqlLedger(url)
    try:
        registry = CollectorRegistry()
        PrometheusLogger(registry)  # the exporter comes after the ledger opened
        quarantined = registry.get_sample_value("tracking_ledger_quarantined_total")
        replayed = registry.get_sample_value("tracking_ledger_replayed_total")
        assert quarantined == before.quarantined_rows + 1
        assert replayed == before.replayed_rows + 1
    finally:
        ledger.shutdown(10)
    # A ledger shut down keeps its counts in the process's totals.
    assert ledger_stats.live_stats().quarantined_rows == before.quarantined_rows + 1


def test_hooks_added_after_a_shipper_drained_a_dead_outbox_hear_of_it(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With an outbox (PostgreSQL's, or an SQLite ledger given one) the shipper drains a dead
    process's rows from the start; a hook added once that is done still hears of them."""
    open_ledger(ledger_url).shutdown(10)  # the tables
    dialect = "postgresql" if ledger_url.startswith("postgresql") else "sqlite"
    directory = tmp_path / "own-outbox"
    leave_outbox(directory, [row_line("good-1"), refused_line(dialect), row_line("good-2")])
    ledger = SqlLedger(ledger_url, outbox_dir=directory)
    try:
        assert ledger.flush(10)
        assert {"good-1", "good-2"} <= ids_in(ledger.engine)
        quarantined: list[int] = []
        replayed: list[int] = []
        ledger.quarantine_hooks.append(quarantined.append)
        ledger.replay_hooks.insert(0, replayed.append)
        stats = ledger.ledger_stats()
        assert sum(quarantined) == stats.quarantined_rows == ledger.quarantined_rows == 1
        assert sum(replayed) == stats.replayed_rows == 3  # the batch shipped late, as before
    finally:
        ledger.shutdown(10)


def test_count_hooks_tell_every_hook_every_row_exactly_once_whenever_it_was_added() -> None:
    hooks = CountHooks("quarantine")
    seen: list[list[int]] = []
    rounds = 10
    # Every round starts the four deliverers and the adder together, so hooks are added while
    # rows are being delivered however the threads are scheduled (a busy machine once let the
    # deliverers finish before the adder's second hook).
    start = threading.Barrier(5)

    def deliver() -> None:
        for _ in range(rounds):
            start.wait()
            for _ in range(200):
                hooks.deliver(1)

    def add() -> None:
        for _ in range(rounds):
            start.wait()
            for _ in range(3):
                got: list[int] = []
                seen.append(got)
                hooks.append(got.append)
                time.sleep(0.0002)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    threads.append(threading.Thread(target=add))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hooks.total == 8000
    assert len(seen) == 3 * rounds and all(sum(got) == 8000 for got in seen)


def test_a_failing_hook_is_logged_and_stops_nothing(caplog: pytest.LogCaptureFixture) -> None:
    hooks = CountHooks("replay")
    hooks.deliver(3)

    def broken(rows: int) -> None:
        raise RuntimeError("no")

    told: list[int] = []
    hooks.append(broken)  # its catch-up raises: logged, and the hook stays
    hooks.append(told.append)
    hooks.deliver(2)
    assert told == [3, 2] and hooks.total == 5 and broken in hooks
    assert "ledger replay hook" in caplog.text
