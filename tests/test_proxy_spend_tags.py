"""LiteLLM's ``GET /spend/tags`` and ``GET /global/spend/tags``: spend per request tag.

Both answered 404, so LiteLLM's admin UI (its tag usage page reads ``/global/spend/tags``) and
scripts calling ``/spend/tags`` found nothing. They sum the ledger's calls per tag (its ``tags``
column: JSON on SQLite, JSONB on PostgreSQL), each call once in each of its tags, the calls whose
rows the database refused (the quarantine) included and flagged, exactly (decimal text at the
ledger's scale); ``start_date`` inclusive, ``end_date`` exclusive (a date: its whole day); the
master key alone; at most
``limit`` tags; hostile input is an OpenAI-shaped 400.

The proxy's app is called in-process over ASGI (httpx), on a real SQLite file and a real
PostgreSQL database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.accounts_support import asgi_request, in_process_proxy
from tests.ledger_support import (  # noqa: F401
    ledger_url,
    make_event,
    quarantine_event,
    record_events,
    row_line,
)
from tests.proxy_support import MASTER_KEY
from tracking.integrations.sql import event_to_row, spend_logs
from tracking.integrations.sql._target import SpendLogsInserter
from tracking.proxy.app import ProxyApp

DAY = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
PATHS = ["/spend/tags", "/global/spend/tags"]


@pytest.fixture
def app(ledger_url: str) -> Iterator[ProxyApp]:  # noqa: F811
    with in_process_proxy(ledger=ledger_url) as proxy:
        yield proxy


def _call(app: ProxyApp, path: str, key: str = MASTER_KEY, **params: Any) -> httpx.Response:
    return asgi_request(app, "GET", path, key, params=params)


def _rows(app: ProxyApp, path: str, **params: Any) -> list[dict[str, Any]]:
    """The per-tag rows in one shape: ``/spend/tags``' names (LiteLLM answers a list there,
    and ``{"spend_per_tag": [{"name", "spend", "log_count"}]}`` on ``/global/spend/tags``)."""
    answer = _call(app, path, **params)
    assert answer.status_code == 200, answer.text
    if path == "/spend/tags":
        rows: list[dict[str, Any]] = answer.json()
        return rows
    renamed = {"name": "individual_request_tag", "spend": "total_spend"}
    return [
        {renamed.get(k, k): v for k, v in row.items()} for row in answer.json()["spend_per_tag"]
    ]


def _tagged_calls(url: str) -> None:
    record_events(
        url,
        make_event(cost=Decimal("0.1000000001"), start=DAY, tags=("app:prod", "job:7")),
        make_event(cost=Decimal("0.2"), start=DAY, tags=("app:prod",)),
        make_event(cost=Decimal("0.05"), start=DAY, tags=("app:prod", "app:prod")),  # once
        make_event(cost=Decimal("0.3"), start=DAY, tags=("job:7",), cost_source="estimate"),
        make_event(cost=None, start=DAY, tags=("job:7",)),  # unpriced: counted, not summed
        make_event(cost=Decimal("9"), start=DAY),  # no tag: in no row
        make_event(cost=Decimal("0.4"), start=NEXT, tags=("later",)),
    )


@pytest.mark.parametrize("path", PATHS)
def test_spend_per_tag_is_exact_with_our_flags(app, ledger_url, path):  # noqa: F811
    _tagged_calls(ledger_url)
    quarantine_event(app.accounts.store.engine, cost=Decimal("0.7"), start=DAY, tags=["job:7"])
    rows = _rows(app, path)
    assert rows == [
        {
            "individual_request_tag": "job:7",
            "log_count": 4,
            "total_spend": "1.1000000001",
            "unpriced_requests": 1,
            "estimated_requests": 1,
            "estimated_usd": "0.3000000000",
            "quarantined_requests": 1,
            "quarantined_usd": "0.7000000000",
        },
        {"individual_request_tag": "later", "log_count": 1, "total_spend": "0.4000000000"},
        {"individual_request_tag": "app:prod", "log_count": 3, "total_spend": "0.3500000001"},
    ]


@pytest.mark.parametrize("path", PATHS)
def test_the_window_keeps_its_start_and_leaves_its_end_out(app, ledger_url, path):  # noqa: F811
    midnight = datetime(NEXT.year, NEXT.month, NEXT.day, tzinfo=UTC)
    record_events(
        ledger_url,
        make_event(cost=Decimal("0.1"), start=DAY, tags=("t",)),
        make_event(cost=Decimal("0.2"), start=midnight, tags=("t",)),
        make_event(cost=Decimal("0.4"), start=NEXT, tags=("t",)),
    )
    # a datetime end is left out; a date end covers its day, as LiteLLM sums tags per day
    # (tests/test_spend_tags_litellm_params.py)
    first = {"start_date": DAY.date().isoformat(), "end_date": midnight.isoformat()}
    assert _rows(app, path, **first) == [
        {"individual_request_tag": "t", "log_count": 1, "total_spend": "0.1000000000"}
    ]
    after = {"start_date": NEXT.date().isoformat(), "end_date": NEXT.date().isoformat()}
    assert _rows(app, path, **after) == [
        {"individual_request_tag": "t", "log_count": 2, "total_spend": "0.6000000000"}
    ]
    empty = {"start_date": DAY.isoformat(), "end_date": DAY.isoformat()}
    assert _rows(app, path, **empty) == []


@pytest.mark.parametrize("path", PATHS)
def test_limit_keeps_the_dearest_tags(app, ledger_url, path):  # noqa: F811
    record_events(
        ledger_url,
        *(make_event(cost=Decimal(n), start=DAY, tags=(f"tag-{n}",)) for n in range(1, 6)),
    )
    rows = _rows(app, path, limit=2)
    assert [r["individual_request_tag"] for r in rows] == ["tag-5", "tag-4"]


def test_global_spend_tags_keeps_the_tags_asked_for(app, ledger_url):  # noqa: F811
    _tagged_calls(ledger_url)
    rows = _rows(app, "/global/spend/tags", tags="later,app:prod")
    assert [r["individual_request_tag"] for r in rows] == ["later", "app:prod"]
    every = _rows(app, "/global/spend/tags", tags="later,all-tags")  # LiteLLM's "every tag"
    assert [r["individual_request_tag"] for r in every] == ["job:7", "later", "app:prod"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2026-13-45"}, "end_date"),
        ({"start_date": "2026-06-02", "end_date": "2026-06-01"}, "start_date"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10000000000000"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"user_id": "bob"}, "user_id"),
        ({"start_date": "9999-12-31T23:59:59-23:59"}, "start_date"),
    ],
)
def test_hostile_input_is_an_openai_shaped_400(app, ledger_url, path, params, param):  # noqa: F811
    _tagged_calls(ledger_url)
    answer = _call(app, path, **params)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


def test_tags_asked_for_are_bounded_text(app, ledger_url):  # noqa: F811
    _tagged_calls(ledger_url)
    for tags, code in [
        ("a\nb", "invalid_value"),
        (",".join(["x"] * 1001), "array_above_max_length"),
    ]:
        answer = _call(app, "/global/spend/tags", tags=tags)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == code
    # /spend/tags takes no tag filter (LiteLLM's does not): said, not ignored
    refused = _call(app, "/spend/tags", tags="a")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tags"


@pytest.mark.parametrize("path", PATHS)
def test_only_the_master_key_reads_them(app, ledger_url, path):  # noqa: F811
    _tagged_calls(ledger_url)
    made = _generate(app)
    refused = _call(app, path, key=made)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "master_key_required"
    assert _call(app, path, key="sk-not-a-key").status_code == 401


def _generate(app: ProxyApp) -> str:
    made = asgi_request(app, "POST", "/key/generate", json={})
    assert made.status_code == 200, made.text
    key: str = made.json()["key"]
    return key


def test_hostile_tags_in_the_ledger_are_read_not_a_500(app, ledger_url):  # noqa: F811
    """Tags that are no list, or elements that are no text, name no tag, in ``spend_logs`` (a
    row written by another writer) and in a quarantined row's JSON alike; their calls still
    count in ``/global/spend``, and the text elements beside them are read."""
    _tagged_calls(ledger_url)
    engine = app.accounts.store.engine
    row = event_to_row(make_event(cost=Decimal("1"), start=DAY))
    with engine.begin() as conn:
        conn.execute(spend_logs.insert(), {**row, "tags": {"not": "a list"}})
    for rid, tags in [("q-object", {"not": "a list"}), ("q-mixed", [1, None, ["x"], "ok\u2603"])]:
        doc = json.loads(row_line(rid, cost=Decimal("2"), start=DAY))
        doc["tags"] = tags
        SpendLogsInserter(engine).quarantine([(rid, json.dumps(doc), "refused")])
    SpendLogsInserter(engine).quarantine([("q-broken", "{not json", "refused")])
    rows = _rows(app, "/spend/tags")
    assert {r["individual_request_tag"]: r["log_count"] for r in rows} == {
        "job:7": 3,
        "later": 1,
        "app:prod": 3,
        "ok\u2603": 1,
    }
    assert _call(app, "/global/spend").json()["spend"] == "15.0500000001"


def test_a_huge_tag_in_the_ledger_is_listed_cut_not_whole(app, ledger_url):  # noqa: F811
    """A tag of megabytes in an old row (or another writer's) is listed by its first 256
    characters and ``…``: a listing of ``limit`` rows stays small. Two such tags alike in those
    characters are one row; a call tagged with both counts once; a short tag is as it was."""
    huge = "x" * 256
    record_events(
        ledger_url,
        make_event(cost=Decimal("1"), start=DAY, tags=(huge + "a" * 300_000, "short")),
        make_event(cost=Decimal("2"), start=DAY, tags=(huge + "b" * 200_000,)),
    )
    for path in PATHS:
        answer = _call(app, path)
        assert answer.status_code == 200, answer.text
        assert len(answer.content) < 5_000
        rows = _rows(app, path)
        assert [(r["individual_request_tag"], r["log_count"]) for r in rows] == [
            (huge + "\u2026", 2),
            ("short", 1),
        ]
        assert rows[0]["total_spend"] == "3.0000000000"
