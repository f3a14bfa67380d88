"""A call belongs to the day it started: the proxy reads its clock once per call, and the call's
budget periods (a daily budget's counter) and its ledger row's ``start_time`` (which spend by
day groups on, and which a counter seeded again from the ledger counts) both come from it.

They came from two readings: the budget's ``now`` when the hold was taken, the event's start
when the SDK call began a moment later. A call admitted just before midnight held on one day's
counter and was settled there, while its ledger row said the next day: that day's counter,
seeded from the ledger while the call was in flight, never counted it.

The proxy's app is served by uvicorn on loopback from a thread (lifespan off: the test installs
the SQL ledger itself), with its clock replaced: the first call starts at 23:59:59.999, every
later reading is 00:00:00.001 the next day. The upstream is the session's fake, on loopback.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
import uvicorn

import tracking
from tests.conftest import make_png
from tests.ledger_support import open_ledger
from tests.proxy_support import free_port, one_deployment_config
from tracking.config import parse_config
from tracking.integrations.sql import query_spend
from tracking.proxy.app import ProxyApp, create_app
from tracking.proxy.shared_counters import to_units
from tracking.testing import recording

BEFORE = datetime(2026, 3, 1, 23, 59, 59, 999_000, tzinfo=UTC)
AFTER = datetime(2026, 3, 2, 0, 0, 0, 1_000, tzinfo=UTC)


@contextmanager
def served(app: ProxyApp) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port from a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="proxy-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a bound for "never"
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the proxy did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _counter(app: ProxyApp, name: str) -> int | None:
    """A budget counter's value (None: never used), read by reserving nothing on it."""
    return asyncio.run(app.accounts.counters.reserve(name, 0, 10**18, None))


def test_a_call_at_midnight_is_on_the_day_it_started_in_its_budget_and_the_ledger(
    fake, tmp_path: Path
):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = parse_config(
        one_deployment_config(
            fake.url,
            model_name="gpt-image-2",
            # the whole proxy's daily budget: one counter per UTC day
            litellm_settings={"max_budget": 100, "budget_duration": "1d"},
            general_settings={"database_url": url},
        )
    )
    app = create_app(config)
    readings = iter([BEFORE])
    app.clock = lambda: next(readings, AFTER)
    ledger = open_ledger(url, mode="durable")
    tracking.callbacks.append(ledger)
    try:
        with served(app) as base, recording() as recorder, httpx.Client(timeout=30) as client:
            for _ in range(2):
                answer = client.post(
                    f"{base}/v1/images/edits",
                    data={"model": "gpt-image-2", "prompt": "a hat", "quality": "low"},
                    files={"image": ("a.png", make_png(32, 32), "image/png")},
                )
                assert answer.status_code == 200, answer.text
    finally:
        tracking.callbacks[:] = [entry for entry in tracking.callbacks if entry is not ledger]
        ledger.shutdown(10)
        app.accounts.store.close()
        app.dispatcher.close()  # type: ignore[attr-defined]
    first, second = recorder.events
    assert (first.start_time, second.start_time) == (BEFORE, AFTER)
    assert first.cost_usd is not None and second.cost_usd is not None
    # each call's hold was taken, and settled, on the counter of the day it started
    assert _counter(app, "proxy:d2026-03-01") == to_units(first.cost_usd)
    assert _counter(app, "proxy:d2026-03-02") == to_units(second.cost_usd)
    # and the ledger's spend by day puts each call on the same day
    engine = sa.create_engine(url)
    try:
        by_day = {row.key: row.cost_usd for row in query_spend(engine, by="day")}
    finally:
        engine.dispose()
    assert by_day == {"2026-03-01": first.cost_usd, "2026-03-02": second.cost_usd}
