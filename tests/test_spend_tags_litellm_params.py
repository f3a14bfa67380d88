"""LiteLLM's parameters of ``GET /spend/tags`` and ``GET /global/spend/tags``, with its meaning.

LiteLLM's tag routes take ``start_date``, ``end_date`` and (``/global/spend/tags``) ``tags``
(``spend_management_endpoints.py``, ``view_spend_tags`` / ``global_view_spend_tags``), and sum
the tags per day with both dates' days included (``ui_get_spend_by_tags``:
``spend_date >= start_date AND spend_date <= end_date``). Here a date as ``end_date`` left its
day out, so what LiteLLM's clients send for today (``start_date=D&end_date=D``) answered nothing.
A date now covers its whole day on these routes; a datetime stays an exact end. LiteLLM takes no
paging there: ``offset``, ``page``... are a 400 saying what keeps the answer small.

A real proxy (``tracking serve``) over loopback, on an SQLite file and a PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.ledger_support import ledger_url, make_event, record_events  # noqa: F401
from tests.proxy_support import managed_client

DAY = datetime(2026, 6, 1, tzinfo=UTC)
PATHS = ["/spend/tags", "/global/spend/tags"]


@pytest.fixture
def client(ledger_url: str, tmp_path) -> Iterator[httpx.Client]:  # noqa: F811
    record_events(
        ledger_url,
        make_event(cost=Decimal("0.1"), start=DAY + timedelta(hours=10), tags=("t",)),
        make_event(
            cost=Decimal("0.2"), start=DAY + timedelta(days=1, microseconds=-1), tags=("t",)
        ),
        make_event(cost=Decimal("0.4"), start=DAY + timedelta(days=1), tags=("t",)),  # next day
    )
    with managed_client(tmp_path, database_url=ledger_url) as client:
        yield client


def _spend(client: httpx.Client, path: str, **params: Any) -> list[tuple[str, int, str]]:
    """(tag, calls, spend) rows, in one shape for both routes."""
    answer = client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    if path == "/spend/tags":
        return [
            (r["individual_request_tag"], r["log_count"], r["total_spend"]) for r in answer.json()
        ]
    return [(r["name"], r["log_count"], r["spend"]) for r in answer.json()["spend_per_tag"]]


@pytest.mark.parametrize("path", PATHS)
def test_a_date_as_end_date_covers_its_whole_day_as_in_litellm(client, path):
    day = DAY.date().isoformat()
    # what LiteLLM's clients send for one day's spend: that day, to its last microsecond
    assert _spend(client, path, start_date=day, end_date=day) == [("t", 2, "0.3000000000")]
    both = {"start_date": day, "end_date": (DAY + timedelta(days=1)).date().isoformat()}
    assert _spend(client, path, **both) == [("t", 3, "0.7000000000")]
    # a datetime is an exact end, left out
    midnight = (DAY + timedelta(days=1)).isoformat()
    assert _spend(client, path, start_date=day, end_date=midnight) == [("t", 2, "0.3000000000")]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("paging", ["offset", "page", "page_size"])
def test_paging_litellm_does_not_take_is_a_400_saying_what_to_use(client, path, paging):
    answer = client.get(path, params={paging: "2"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["type"]) == (paging, "invalid_request_error"), error
    assert "no paging" in error["message"] and "limit" in error["message"], error


@pytest.mark.parametrize("path", PATHS)
def test_the_last_day_storable_is_a_400_not_a_500(client, path):
    answer = client.get(path, params={"end_date": "9999-12-31"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "end_date"


@pytest.mark.parametrize("path", PATHS)
def test_a_start_later_on_the_whole_end_day_is_inside_the_window(client, path):
    # the day's spend from 09:00 on: the end day's midnight was compared before it was moved
    # to the next one, and the request was a 400 "start_date after end_date"
    day = DAY.date().isoformat()
    later = (DAY + timedelta(hours=9)).isoformat()
    assert _spend(client, path, start_date=later, end_date=day) == [("t", 2, "0.3000000000")]
    # the basic ISO form of that date is a date too, not its first instant
    assert _spend(client, path, start_date=day, end_date=day.replace("-", "")) == [
        ("t", 2, "0.3000000000")
    ]
    # a start on the day after is still after the end
    after = client.get(path, params={"start_date": "2026-06-02", "end_date": day})
    assert after.status_code == 400, after.text
    assert after.json()["error"]["param"] == "start_date"
