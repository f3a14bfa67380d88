"""Intents: every request the upstream received has a row, even across a kill -9 (issue 18,
finding 4).

The proxy commits each call's intent before sending it; a process killed with calls in flight
leaves them as intents, which the next process turns into rows marked ``incomplete`` with an
estimated cost. The check is against the fake upstream's own request log: each request carries
a unique ``user``, and every ``user`` the upstream saw must be in ``spend_logs`` exactly once.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.ledger_support import ledger_url, make_event  # noqa: F401
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.testing import FakeOpenAI

from .conftest import API_KEY, make_png
from .proxy_support import MASTER_KEY, ProxyProcess
from .test_reliability_faults import proxy_config
from .test_reliability_ledger import LoadUntilStopped, _migrate

PNG = make_png(16, 16)


_users = itertools.count()


def edit_as_a_new_user(url: str) -> httpx.Response:
    """One edit whose ``user`` no other request had: the upstream's log names each request."""
    return httpx.post(
        f"{url}/v1/images/edits",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        data={
            "model": "gpt-image-1",
            "prompt": "hat",
            "quality": "low",
            "user": f"u-{next(_users)}",
        },
        files={"image": ("a.png", PNG, "image/png")},
        timeout=20,
    )


def _rows(url: str) -> list[tuple[str | None, str, str, object]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.select(
                spend_logs.c.end_user,
                spend_logs.c.status,
                spend_logs.c.cost_source,
                spend_logs.c.cost_usd,
            )
            return [tuple(r) for r in conn.execute(query)]  # type: ignore[misc]
    finally:
        engine.dispose()


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_kill_9_under_load_leaves_a_row_for_every_request_the_upstream_received(
    tmp_path: Path, monkeypatch, request, target: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    if target == "postgres":
        url = request.getfixturevalue("postgres_url")
        _migrate(url)
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # Slow answers: at any moment most of the 8 clients' calls are in flight upstream.
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=0.4;always"]) as upstream:
        config = proxy_config(tmp_path, upstream.url, general={"database_url": url})
        current = {"proxy": ProxyProcess(config).start()}
        try:
            with LoadUntilStopped(lambda: current["proxy"].url, post=edit_as_a_new_user) as load:
                load.wait_for(16)
                deadline = time.monotonic() + 20
                while upstream.hits - len(load.successes) < 3:  # calls in flight upstream
                    assert time.monotonic() < deadline, "no calls in flight to kill"
                    time.sleep(0.01)
                current["proxy"].process.kill()  # SIGKILL with calls in flight
                current["proxy"].process.wait(10)
                current["proxy"] = ProxyProcess(config).start(timeout=60)  # a loaded machine
                load.wait_for(len(load.successes) + 8, timeout=30)
            time.sleep(0.5)  # the last answers' rows
            received = {r.fields["user"] for r in upstream.requests}
            deadline = time.monotonic() + 20
            while True:
                rows = _rows(url)
                users = Counter(user for user, *_ in rows)
                if received <= set(users) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        finally:
            current["proxy"].stop()
    missing = received - set(users)
    assert not missing, f"{len(missing)} requests the upstream received have no row"
    assert [u for u, n in users.items() if n > 1] == []
    incomplete = [row for row in rows if row[1] == "incomplete"]
    assert incomplete, "the kill left no call in flight: the test proved nothing"
    for _, _, source, cost in incomplete:
        assert source == "estimate" and cost is not None and float(str(cost)) > 0
    print(f"{len(received)} requests upstream, {len(incomplete)} incomplete rows")


def test_a_calls_own_row_replaces_its_incomplete_one_never_the_reverse(
    tmp_path: Path,
    ledger_url: str,  # noqa: F811
) -> None:
    """A dead process's intent and its acknowledged row may reach the target in either order."""
    from tracking.integrations.sql import event_to_row

    ledger = SqlLedger(ledger_url, auto_migrate=True, mode="durable", outbox_dir=tmp_path)
    try:
        real = make_event(request_id="call-1")
        incomplete = event_to_row(make_event(request_id="call-1", user="someone-else"))
        incomplete.update(status="incomplete", cost_source="estimate")
        ledger.writer.submit_many([incomplete])
        assert ledger.flush(10)
        ledger.on_end(real)  # arrives second: replaces the incomplete row
        ledger.writer.submit_many([incomplete])  # arrives third: changes nothing
        assert ledger.flush(10)
        with ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(spend_logs.c.status, spend_logs.c.end_user)).all()
    finally:
        ledger.shutdown(10)
    assert [tuple(r) for r in rows] == [("success", "alice")]


def test_a_dead_processes_log_leaves_its_open_intents_priced_and_nothing_else(tmp_path: Path):
    """Done intents are skipped, a torn last line too; open ones become estimated rows."""
    import json
    from datetime import UTC, datetime

    from tracking.integration import CallStart
    from tracking.integrations.sql._codec import decode_row, encode_row
    from tracking.integrations.sql._intents import IntentLog, intent_row, open_intents
    from tracking.request import parse_call

    request, options = parse_call(
        model="gpt-image-1", prompt="a hat", image=PNG, api_key="sk-x", user="zoe", quality="low"
    )
    log = IntentLog(tmp_path)
    for request_id in ("open-1", "done-1", "open-2"):
        call = CallStart(request_id, "aimage_edit", request, options, "h", datetime.now(UTC))
        log.record(request_id, encode_row(intent_row(call)))
    log.complete("done-1")
    log.record("open-3", "{torn")  # a write cut short
    text = log.path.read_text()
    rows = [decode_row(line) for line in open_intents(text)]
    assert [r["request_id"] for r in rows] == ["open-1", "open-2"]
    for row in rows:
        assert row["status"] == "incomplete" and row["end_user"] == "zoe"
        assert row["cost_source"] == "estimate" and row["cost_usd"] > 0
        assert "tracking_estimate" not in row
        json.dumps(row, default=str)
    log.close()
    assert log.path.exists()  # open intents stay for the next start
