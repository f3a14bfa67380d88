"""The Grafana dashboard over the SQL ledger: generated as committed, and every query run on a
real PostgreSQL ledger with Grafana's ``$__timeFilter`` expanded as Grafana expands it.

The ledger is filled through the real ``SqlLedger`` with calls on three UTC days, two models,
two keys, two teams, three end users and one unpriced call; each panel's figures are compared
with sums computed here from the same events.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from dashboards import ledger as dashboard
from tests.ledger_support import make_event, open_ledger
from tracking.integrations.sql import event_to_row
from tracking.integrations.sql._codec import encode_row
from tracking.integrations.sql._target import SpendLogsInserter

COMMITTED = dashboard.OUTPUT_DIR / "image-edit-ledger.json"
DAY0 = datetime(2026, 11, 20, tzinfo=UTC)
RANGE = (DAY0 - timedelta(days=1), DAY0 + timedelta(days=5))


def _time_filter(sql: str, start: datetime, end: datetime) -> str:
    """Grafana's PostgreSQL macro: ``$__timeFilter(col)`` -> ``col BETWEEN 'from' AND 'to'``."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m[1]} BETWEEN '{start.strftime(stamp)}' AND '{end.strftime(stamp)}'",
        sql,
    )


def test_committed_dashboard_is_what_the_generator_builds(tmp_path, monkeypatch):
    assert COMMITTED.read_text(encoding="utf-8") == dashboard.render(), (
        "run python -m dashboards.ledger"
    )
    monkeypatch.setattr(dashboard, "OUTPUT_DIR", tmp_path)
    assert dashboard.main(["--check"]) == 1
    assert dashboard.main([]) == 0 and dashboard.main(["--check"]) == 0


def test_every_panel_reads_the_ledger_through_the_datasource_variable():
    document = json.loads(COMMITTED.read_text(encoding="utf-8"))
    (variable,) = document["templating"]["list"]
    assert variable["name"] == "datasource" and variable["query"] == dashboard.PLUGIN
    for panel in document["panels"]:
        assert panel["datasource"] == {"type": dashboard.PLUGIN, "uid": "${datasource}"}
        (target,) = panel["targets"]
        assert target["rawQuery"] and "FROM spend_calls" in target["rawSql"]
        assert "$__timeFilter(start_time)" in target["rawSql"]  # every panel follows the range
    titles = {p["title"] for p in document["panels"]}
    for wanted in ("model", "key", "team", "end user"):
        assert any(t.startswith(f"Spend per day by {wanted}") for t in titles), wanted
    provisioned = yaml.safe_load(
        (dashboard.OUTPUT_DIR.parent / "provisioning/datasources/ledger-postgres.yaml").read_text()
    )["datasources"][0]
    assert provisioned["type"] == dashboard.PLUGIN


@pytest.fixture
def filled(postgres_url, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    events = []
    for i in range(18):
        events.append(
            make_event(
                user=("ann", "bob", "cid")[i % 3],
                model=("gpt-image-1", "gpt-image-1-mini")[i % 2],
                cost=Decimal("0.011") + Decimal(i).scaleb(-4),
                start=DAY0 + timedelta(days=i % 3, hours=i),
                api_key_hash=("a" * 64, "b" * 64)[i % 2],
                key_alias=("alpha", None)[i % 2],
                team=("imaging", None)[i % 2],
            )
        )
    events.append(make_event(user="ann", model="some-new-model", cost=None, start=DAY0))
    events.append(make_event(user="ann", cost=Decimal("9"), start=DAY0 - timedelta(days=40)))
    ledger = open_ledger(postgres_url)
    for event in events:
        ledger.on_end(event)
    assert ledger.flush(10)
    yield ledger, [e for e in events if RANGE[0] <= e.start_time <= RANGE[1]]
    ledger.shutdown(10)


def _run(ledger: Any, title: str) -> list[sa.Row[Any]]:
    document = json.loads(COMMITTED.read_text(encoding="utf-8"))
    sql = _time_filter(dashboard.sql_queries(document)[title], *RANGE)
    with ledger.engine.connect() as conn:
        return list(conn.execute(sa.text(sql)))


def _per_day(events: list[Any], label: Any) -> dict[tuple[datetime, str], Decimal]:
    sums: dict[tuple[datetime, str], Decimal] = defaultdict(Decimal)
    for e in events:
        if e.cost_usd is not None:
            day = e.start_time.replace(hour=0, minute=0, second=0, microsecond=0)
            sums[day, label(e)] += e.cost_usd
    return dict(sums)


def _agrees(ledger: Any, events: list[Any]) -> None:
    """Every panel's figures are what ``events`` (each call once) add up to."""
    document = json.loads(COMMITTED.read_text(encoding="utf-8"))
    for title in dashboard.sql_queries(document):
        assert _run(ledger, title), f"{title}: no rows"

    priced = [e for e in events if e.cost_usd is not None]
    (spend,) = _run(ledger, "Spend in range")
    assert spend.spend == sum(e.cost_usd for e in priced)
    assert _run(ledger, "Unpriced calls in range")[0].calls == 1
    assert _run(ledger, "Calls in range")[0].calls == len(events)
    assert _run(ledger, "End users in range")[0].end_users == len({e.end_user for e in events})

    def key(e: Any) -> str:
        return str(e.key_alias or (e.api_key_hash or "")[:12] or "(no key)")

    labels = {
        "Spend per day by model": lambda e: e.model,
        "Spend per day by key": key,
        "Spend per day by team": lambda e: e.team or "(no team)",
        "Spend per day by end user (top 10 in range)": lambda e: e.end_user,
    }
    for title, label in labels.items():
        rows = {(r.time, r.metric): r.value for r in _run(ledger, title)}
        assert rows == _per_day(events, label), title

    table = _run(ledger, "Spend by day, end user, key, team and model")
    assert sum(r.spend for r in table) == spend.spend
    assert sum(r.calls for r in table) == len(events)
    assert {r.key for r in table} == {key(e) for e in events}


def test_every_query_runs_on_postgresql_and_agrees_with_the_events(filled):
    ledger, events = filled
    _agrees(ledger, events)
    assert "(no key)" in {e.key_alias or e.api_key_hash or "(no key)" for e in events}


def _quarantine(engine: sa.engine.Engine, event: Any) -> None:
    """The event's row kept in ``ledger_quarantine``, as the writer keeps a refused row."""
    line = encode_row(event_to_row(event))
    SpendLogsInserter(engine).quarantine([(event.request_id, line, "refused")])


def test_the_quarantined_calls_are_on_the_dashboard_each_call_once(filled):
    """A refused row is a billed call: the panels count it (they read ``spend_logs`` only until
    2026-12-06), once, by its own row when ``spend_logs`` holds its intent's estimate."""
    ledger, events = filled
    later = DAY0 + timedelta(days=1, hours=3)
    owner = {"api_key_hash": "c" * 64, "key_alias": "gamma", "team": "refused-team"}
    intent = make_event(request_id="cut-short", user="dee", cost=Decimal("0.9"), start=later,
                        status="incomplete", cost_source="estimate", **owner)  # fmt: skip
    ledger.on_end(intent)
    assert ledger.flush(10)
    own = make_event(request_id="cut-short", user="dee", cost=Decimal("0.05"), start=later,
                     **owner)  # fmt: skip
    refused = make_event(user="eve", cost=Decimal("0.125"), start=later, **owner)
    for event in (own, refused, events[0]):  # events[0] is in spend_logs too: counted there
        _quarantine(ledger.engine, event)
    _agrees(ledger, [*events, own, refused])
