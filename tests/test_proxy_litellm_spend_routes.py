"""LiteLLM's spend routes: what they ask the database, their date ranges and their shapes.

- ``GET /customer/list`` sums the spend of the end users it lists only, ``LOOKUP_CHUNK`` ids a
  statement; it summed the spend of up to 10^6 end users (every one in the ledger) and picked.
- ``/global/spend/report`` gives, as LiteLLM's query does, one ``metadata`` entry per (model,
  key) pair with ``group_by=team|customer``, and LiteLLM's per-key rows (``total_cost``,
  ``model_details``) with ``group_by=api_key``; it gave per-model entries, per day, for all three.
  By team, the calls of no team are LiteLLM's ``"Unassigned Team"`` (they were ``null``), and
  each team's ``team_id`` is given beside its ``team_name``.
- A date-only ``end_date`` is that day's UTC midnight, excluded: LiteLLM's ``/spend/logs`` and
  ``/global/spend/report`` leave the day out too (``startTime <= end_date`` at midnight).

The proxy's app is called in-process over ASGI (httpx), on a real SQLite file and a real
PostgreSQL database; its store's engine is the one the statements are read from.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.accounts_support import asgi_request, in_process_proxy
from tests.ledger_support import (  # noqa: F401
    ledger_url,
    make_event,
    quarantine_event,
    record_events,
)
from tracking.integrations.sql._quarantined_calls import LOOKUP_CHUNK
from tracking.proxy import litellm_store
from tracking.proxy.account_tables import end_users
from tracking.proxy.app import ProxyApp
from tracking.proxy.keys import hash_key

DAY = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
KEY_A, KEY_B = (hash_key(f"sk-spendroutes-{n}") for n in "ab")
USERS = [f"user-{n:03d}" for n in range(60)]


@pytest.fixture
def app(ledger_url: str) -> Iterator[ProxyApp]:  # noqa: F811
    with in_process_proxy(ledger=ledger_url) as proxy:
        yield proxy


def _call(app: ProxyApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return asgi_request(app, method, path, **kwargs)


def _spend_calls_statements(engine: sa.Engine) -> list[tuple[str, set[Any]]]:
    """A list the engine's statements reading ``spend_calls`` go to from now on, each with its
    parameters' values."""
    seen: list[tuple[str, set[Any]]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "spend_calls" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            seen.append((statement, set(values or ())))

    return seen


# -- /customer/list ----------------------------------------------------------------------------


def test_customer_list_reads_the_end_users_in_one_statement(app, ledger_url):  # noqa: F811
    """The end users' records are read in one statement, not one per end user (30 users made
    31 statements): the statement that pages the end users (records and callers) reads them."""
    record_events(ledger_url)  # the ledger's tables (a PostgreSQL database starts empty)
    store = app.accounts.store
    for user in USERS[:30]:
        created = _call(app, "POST", "/customer/new", json={"user_id": user, "max_budget": 2})
        assert created.status_code == 200, created.text
    reads: list[str] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM proxy_end_users" in statement:
            reads.append(statement)

    answer = _call(app, "GET", "/customer/list")
    assert answer.status_code == 200, answer.text
    assert [c["user_id"] for c in answer.json()] == USERS[:30]
    assert {c["max_budget"] for c in answer.json()} == {"2"}
    assert len(reads) == 1, reads


def test_customer_list_sums_the_spend_of_the_listed_end_users_only(app, ledger_url):  # noqa: F811
    """A page of ``/customer/list`` sums the spend of its own end users alone (it summed every
    end user's and picked); every end user who called is listed, by id, a record or not."""
    costs = {user: Decimal(n + 1).scaleb(-3) for n, user in enumerate(USERS)}
    record_events(ledger_url, *(make_event(user=u, cost=c, start=DAY) for u, c in costs.items()))
    store = app.accounts.store
    quarantine_event(store.engine, user="user-001", cost=Decimal("0.5"), start=DAY)
    costs["user-001"] += Decimal("0.5")  # a call whose row the database refused counts too
    for user in ["user-002", "no-calls-yet"]:
        created = _call(app, "POST", "/customer/new", json={"user_id": user, "max_budget": 5})
        assert created.status_code == 200, created.text
    listed = ["no-calls-yet", "user-000", "user-001", "user-002"]  # the first page of 4, by id
    before = dict(
        (value, spend)
        for value, spend, _, _ in litellm_store.spend_by(
            store, "customer", start=None, end=None, limit=1000
        )
    )  # what the route summed before: every end user's spend

    seen = _spend_calls_statements(store.engine)
    answer = _call(app, "GET", "/customer/list", params={"size": 4})
    assert answer.status_code == 200, answer.text
    spend = {c["user_id"]: c["spend"] for c in answer.json()}
    assert list(spend) == listed
    assert spend == {u: before.get(u, "0.0000000000") for u in listed}  # the same answer as before
    assert {u: Decimal(s) for u, s in spend.items()} == {
        u: costs.get(u, Decimal(0)) for u in listed
    }
    assert [c.get("max_budget") for c in answer.json()] == ["5", None, None, "5"]
    # the database was asked for these end users' spend, not for everyone's
    assert seen, "no statement read spend_calls"
    asked = set().union(*(values for _, values in seen))
    assert set(listed) <= asked
    assert not asked & (set(USERS) - set(listed))
    second = _call(app, "GET", "/customer/list", params={"size": 4, "page": 2}).json()
    assert [c["user_id"] for c in second] == USERS[3:7]
    everyone = _call(app, "GET", "/customer/list").json()
    assert [c["user_id"] for c in everyone] == ["no-calls-yet", *USERS]


def test_customer_list_asks_in_chunks_every_dialect_takes(app, ledger_url):  # noqa: F811
    record_events(ledger_url, make_event(user="user-000", cost=Decimal("0.25"), start=DAY))
    record_events(ledger_url, make_event(user="zz-last", cost=Decimal("0.75"), start=DAY))
    store = app.accounts.store
    now = datetime.now(UTC)
    listed = [f"user-{n:03d}" for n in range(LOOKUP_CHUNK + 1)] + ["zz-last"]
    rows = [
        {"end_user_id": u, "blocked": False, "created_at": now, "updated_at": now} for u in listed
    ]
    with store.engine.begin() as conn:
        conn.execute(end_users.insert(), rows)

    seen = _spend_calls_statements(store.engine)
    answer = _call(app, "GET", "/customer/list")
    assert answer.status_code == 200, answer.text
    spend = {c["user_id"]: c["spend"] for c in answer.json()}
    assert len(spend) == len(listed)
    assert (spend["user-000"], spend["zz-last"], spend["user-001"]) == (
        "0.2500000000",
        "0.7500000000",
        "0.0000000000",
    )
    asked = [values & set(listed) for _, values in seen[1:]]  # after the page's statement
    assert [len(ids) for ids in asked] == [LOOKUP_CHUNK, 2]  # an IN list of at most 500 ids
    assert set().union(*asked) == set(listed)


# -- date ranges -------------------------------------------------------------------------------


def test_a_date_only_end_date_leaves_that_day_out_as_litellms_does(app, ledger_url):  # noqa: F811
    midnight = datetime(NEXT.year, NEXT.month, NEXT.day, tzinfo=UTC)
    record_events(
        ledger_url,
        make_event(user="early", cost=Decimal("0.1"), start=DAY, team="t"),
        make_event(user="midnight", cost=Decimal("0.2"), start=midnight, team="t"),
        make_event(user="later", cost=Decimal("0.4"), start=NEXT, team="t"),
    )
    window = {"start_date": DAY.date().isoformat(), "end_date": NEXT.date().isoformat()}
    total = _call(app, "GET", "/global/spend", params=window).json()
    assert total["spend"] == "0.1000000000"
    report = _call(app, "GET", "/global/spend/report", params=window).json()
    assert [d["group_by_day"] for d in report] == [DAY.date().isoformat()]
    logs = _call(app, "GET", "/spend/logs", params=window).json()
    assert [row["end_user"] for row in logs["data"]] == ["early"]
    # the next range starts where this one ended: the call at midnight is in it, once
    after = {"start_date": NEXT.date().isoformat(), "end_date": (NEXT + timedelta(1)).date()}
    assert _call(app, "GET", "/global/spend", params=after).json()["spend"] == "0.6000000000"


@pytest.mark.parametrize(
    "path", ["/global/spend", "/global/spend/report", "/global/spend/keys", "/spend/logs"]
)
def test_a_window_ending_before_it_starts_is_a_400_not_an_empty_answer(app, ledger_url, path):  # noqa: F811
    """An empty answer would read as "nothing was spent"; a start equal to the end is an empty
    window, not a mistake."""
    record_events(ledger_url, make_event(user="u", cost=Decimal("0.1"), start=DAY, team="t"))
    swapped = {"start_date": NEXT.date().isoformat(), "end_date": DAY.date().isoformat()}
    refused = _call(app, "GET", path, params=swapped)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "start_date" and error["code"] == "invalid_value"
    assert "after end_date" in error["message"]
    same = {"start_date": DAY.date().isoformat(), "end_date": DAY.date().isoformat()}
    assert _call(app, "GET", path, params=same).status_code == 200


# -- /global/spend/report ----------------------------------------------------------------------


def _team_calls(url: str) -> None:
    record_events(
        url,
        make_event(cost=Decimal("0.1"), start=DAY, team="t", api_key_hash=KEY_A),
        make_event(cost=Decimal("0.2"), start=DAY, team="t", api_key_hash=KEY_A),
        make_event(cost=Decimal("0.3"), start=DAY, team="t", api_key_hash=KEY_B),
        make_event(cost=Decimal("0.4"), start=DAY, team="t", api_key_hash=KEY_A, model="m2"),
        make_event(cost=Decimal("0.5"), start=NEXT, user="bob", api_key_hash=KEY_B),
    )


def test_the_report_by_team_has_an_entry_per_model_and_key(app, ledger_url):  # noqa: F811
    _team_calls(ledger_url)
    report = _call(app, "GET", "/global/spend/report", params={"group_by": "team"}).json()
    first, second = report
    assert first["group_by_day"] == DAY.date().isoformat()
    (team,) = first["teams"]
    # a team has no alias here: its name is its id, which is also given as it is
    assert (team["team_name"], team["team_id"], team["total_spend"]) == ("t", "t", "1.0000000000")
    tokens = 1389  # make_event's usage
    expected = [
        {
            "model": "gpt-image-1",
            "api_key": KEY_A,
            "spend": "0.3000000000",
            "total_tokens": 2 * tokens,
        },
        {"model": "gpt-image-1", "api_key": KEY_B, "spend": "0.3000000000", "total_tokens": tokens},
        {"model": "m2", "api_key": KEY_A, "spend": "0.4000000000", "total_tokens": tokens},
    ]
    assert team["metadata"] == sorted(expected, key=lambda e: (e["model"], e["api_key"]))
    assert second["teams"] == [
        {  # calls of no team, named as LiteLLM names them
            "team_name": "Unassigned Team",
            "team_id": None,
            "total_spend": "0.5000000000",
            "metadata": [
                {
                    "model": "gpt-image-1",
                    "api_key": KEY_B,
                    "spend": "0.5000000000",
                    "total_tokens": tokens,
                }
            ],
        }
    ]
    customers = _call(app, "GET", "/global/spend/report", params={"group_by": "customer"})
    bob = [c for d in customers.json() for c in d["customers"] if c["customer"] == "bob"]
    assert bob[0]["metadata"][0]["api_key"] == KEY_B


def test_the_report_by_api_key_is_litellms_rows_per_key(app, ledger_url):  # noqa: F811
    _team_calls(ledger_url)
    quarantine_event(app.accounts.store.engine, cost=Decimal("0.05"), start=DAY, team="t")
    params = {"group_by": "api_key"}
    report = _call(app, "GET", "/global/spend/report", params=params).json()
    # make_event's usage: 10 + 323 input tokens, 1056 output, 1389 in all
    assert report == [
        {
            "api_key": KEY_B,
            "total_cost": "0.8000000000",
            "total_input_tokens": 2 * 333,
            "total_output_tokens": 2 * 1056,
            "model_details": [
                {
                    "model": "gpt-image-1",
                    "total_cost": "0.8000000000",
                    "total_input_tokens": 2 * 333,
                    "total_output_tokens": 2 * 1056,
                }
            ],
        },
        {
            "api_key": KEY_A,
            "total_cost": "0.7000000000",
            "total_input_tokens": 3 * 333,
            "total_output_tokens": 3 * 1056,
            "model_details": [
                {
                    "model": "gpt-image-1",
                    "total_cost": "0.3000000000",
                    "total_input_tokens": 2 * 333,
                    "total_output_tokens": 2 * 1056,
                },
                {
                    "model": "m2",
                    "total_cost": "0.4000000000",
                    "total_input_tokens": 333,
                    "total_output_tokens": 1056,
                },
            ],
        },
        {
            "api_key": None,  # the quarantined call, made without a key
            "total_cost": "0.0500000000",
            "total_input_tokens": 333,
            "total_output_tokens": 1056,
            "quarantined_requests": 1,
            "quarantined_usd": "0.0500000000",
            "model_details": [
                {
                    "model": "gpt-image-1",
                    "total_cost": "0.0500000000",
                    "total_input_tokens": 333,
                    "total_output_tokens": 1056,
                    "quarantined_requests": 1,
                    "quarantined_usd": "0.0500000000",
                }
            ],
        },
    ]
    window = {**params, "start_date": NEXT.date().isoformat()}
    later = _call(app, "GET", "/global/spend/report", params=window).json()
    assert [(r["api_key"], r["total_cost"]) for r in later] == [(KEY_B, "0.5000000000")]


# -- one name and one form per figure ------------------------------------------------------------


def test_every_spend_route_writes_an_amount_alike_and_the_quarantine_by_one_name(app, ledger_url):  # noqa: F811
    """LiteLLM's routes wrote ``"0.1"`` where ``/spend/keys`` and ``tracking spend`` write
    ``"0.1000000000"`` for the same figure; ``/spend/logs`` named the quarantine's figures
    ``quarantined.requests`` and ``quarantined.cost_usd`` and ``/global/spend``
    ``quarantined_spend``, where every other report says ``quarantined_requests`` and
    ``quarantined_usd``; ``/spend/keys`` said neither what a key's quarantined calls cost nor
    how many of its calls have no price (left out of its ``spend``)."""
    record_events(
        ledger_url,
        make_event(user="ann", cost=Decimal("0.1"), start=DAY, team="t", api_key_hash=KEY_A),
        make_event(user="ann", cost=None, model="house-model", start=DAY, team="t",
                   api_key_hash=KEY_A),
    )  # fmt: skip
    quarantine_event(app.accounts.store.engine, user="ann", cost=Decimal("0.25"), start=DAY,
                     team="t", api_key_hash=KEY_A)  # fmt: skip
    made = _call(app, "POST", "/customer/new", json={"user_id": "ann"})
    assert made.status_code == 200, made.text

    def get(path: str, **params: str) -> Any:
        answer = _call(app, "GET", path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    both = "0.3500000000"
    (key,) = get("/spend/keys")["data"]
    amounts = {
        "/spend/keys": key["spend"],
        "/global/spend": get("/global/spend")["spend"],
        "/global/spend/keys": get("/global/spend/keys")[0]["total_spend"],
        "/global/spend/models": get("/global/spend/models")[0]["total_spend"],
        "/global/spend/end_users": get("/global/spend/end_users")[0]["total_spend"],
        "/global/spend/teams": get("/global/spend/teams")[0]["total_spend"],
        "/customer/list": get("/customer/list")[0]["spend"],
        "/customer/info": get("/customer/info", end_user_id="ann")["total_spend"],
        "report by team": get("/global/spend/report")[0]["teams"][0]["total_spend"],
        "report by key": get("/global/spend/report", group_by="api_key")[0]["total_cost"],
    }
    assert amounts == dict.fromkeys(amounts, both)
    logs = get("/spend/logs")
    assert {row["cost_usd"] for row in logs["data"]} == {"0.1000000000", None}
    assert "quarantined" not in logs
    assert (logs["quarantined_requests"], logs["quarantined_usd"]) == (1, "0.2500000000")
    total = get("/global/spend")
    assert total == {
        "spend": both,
        "unpriced_requests": 1,  # ann's house-model call, left out of the amount
        "quarantined_requests": 1,
        "quarantined_usd": "0.2500000000",
    }
    assert (key["requests"], key["unpriced_requests"]) == (3, 1)
    assert (key["quarantined_requests"], key["quarantined_usd"]) == (1, "0.2500000000")


def _flagged_calls(app: ProxyApp, url: str) -> None:
    """Ann's (key A, team t) priced call, her failed call recorded at an estimate and her call
    at an estimate whose row the database refused; Bob's (key B, team u) priced call."""
    record_events(
        url,
        make_event(user="ann", cost=Decimal("0.1"), start=DAY, team="t", api_key_hash=KEY_A),
        make_event(user="ann", cost=Decimal("0.02"), start=DAY, team="t", api_key_hash=KEY_A,
                   status="failure", cost_source="estimate"),
        make_event(user="bob", cost=Decimal("0.5"), start=DAY, team="u", api_key_hash=KEY_B),
    )  # fmt: skip
    quarantine_event(app.accounts.store.engine, user="ann", cost=Decimal("0.25"), start=DAY,
                     team="t", api_key_hash=KEY_A, cost_source="estimate")  # fmt: skip


#: Ann's flagged figures: two calls at an estimate (one of them refused by the database).
ANNS_FLAGS = {
    "estimated_requests": 2,
    "estimated_usd": "0.2700000000",
    "quarantined_requests": 1,
    "quarantined_usd": "0.2500000000",
}


def _get(app: ProxyApp, path: str, **params: str) -> Any:
    answer = _call(app, "GET", path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_global_spend_routes_flag_estimates_and_the_quarantine_by_the_report_names(
    app,
    ledger_url,  # noqa: F811
):
    """``/global/spend`` gave ``quarantined_usd`` alone and its per-key, model, end-user and
    team rows ``quarantined_requests`` alone; none of them said how many calls, and how much,
    were recorded at an estimate (``tracking spend``'s ``estimated_requests`` /
    ``estimated_usd``). LiteLLM's own fields keep their names; a row without such calls has no
    pair."""
    _flagged_calls(app, ledger_url)
    assert _get(app, "/global/spend") == {"spend": "0.8700000000", **ANNS_FLAGS}
    bobs = {"total_spend": "0.5000000000", "requests": 1}
    anns = {"total_spend": "0.3700000000", "requests": 3, **ANNS_FLAGS}
    per = {"api_key": (KEY_B, KEY_A), "end_user": ("bob", "ann"), "team": ("u", "t")}
    for name, (bob, ann) in per.items():
        path = "/global/spend/" + {"api_key": "keys", "end_user": "end_users"}.get(name, "teams")
        assert _get(app, path) == [{name: bob, **bobs}, {name: ann, **anns}], path
    (model,) = _get(app, "/global/spend/models")
    assert model == {"model": "gpt-image-1", "total_spend": "0.8700000000", "requests": 4,
                     **ANNS_FLAGS}  # fmt: skip
    later = _get(app, "/global/spend", start_date=NEXT.date().isoformat())
    assert later == {"spend": "0.0000000000"}  # no calls in the window: no pairs


def test_spend_logs_and_keys_flag_calls_recorded_at_an_estimate(app, ledger_url):  # noqa: F811
    """``/spend/logs`` and ``/spend/keys`` said how many calls are in the quarantine and what
    they cost, but not the calls recorded at an estimate (``cost_source`` ``estimate``)."""
    _flagged_calls(app, ledger_url)
    logs = _get(app, "/spend/logs")
    assert {name: logs.get(name) for name in ANNS_FLAGS} == ANNS_FLAGS
    bobs_logs = _get(app, "/spend/logs", user="bob")
    assert not set(ANNS_FLAGS) & set(bobs_logs)
    bob, ann = _get(app, "/spend/keys")["data"]
    assert (bob["key_hash"], ann["key_hash"]) == (KEY_B, KEY_A)
    assert {name: ann.get(name) for name in ANNS_FLAGS} == ANNS_FLAGS
    assert not set(ANNS_FLAGS) & set(bob)


def test_customer_routes_and_the_spend_report_flag_estimates_and_the_quarantine(app, ledger_url):  # noqa: F811
    """``/customer/list``, ``/customer/info`` and ``/global/spend/report`` (by team, customer
    and key) said what was spent but not how many calls, and how much, were recorded at an
    estimate or are in the quarantine, as every other report does. LiteLLM's own fields keep
    their names; an end user, team or key without such calls has no pair."""
    _flagged_calls(app, ledger_url)
    for user in ("ann", "bob"):
        made = _call(app, "POST", "/customer/new", json={"user_id": user})
        assert made.status_code == 200, made.text
    ann, bob = _get(app, "/customer/list")
    assert (ann["user_id"], ann["spend"], bob["user_id"]) == ("ann", "0.3700000000", "bob")
    assert {name: ann.get(name) for name in ANNS_FLAGS} == ANNS_FLAGS
    assert bob["spend"] == "0.5000000000"
    assert not set(ANNS_FLAGS) & set(bob)
    info = _get(app, "/customer/info", end_user_id="ann")
    assert info["total_spend"] == "0.3700000000"
    assert {name: info.get(name) for name in ANNS_FLAGS} == ANNS_FLAGS
    assert not set(ANNS_FLAGS) & set(_get(app, "/customer/info", end_user_id="bob"))
    litellms = {"model", "api_key", "spend", "total_tokens"}  # a metadata entry's fields
    groups = {"team": ("team_name", "teams", "t", "u"), "customer": ("customer", "customers",
                                                                      "ann", "bob")}  # fmt: skip
    for group, (field, plural, anns_name, bobs_name) in groups.items():
        (day,) = _get(app, "/global/spend/report", group_by=group)
        entries = {entry[field]: entry for entry in day[plural]}
        anns, bobs = entries[anns_name], entries[bobs_name]
        assert anns["total_spend"] == "0.3700000000", group
        assert {name: anns.get(name) for name in ANNS_FLAGS} == ANNS_FLAGS, group
        assert not set(ANNS_FLAGS) & set(bobs), group
        (anns_pair,) = anns["metadata"]  # one (model, key) pair: its flags are the entry's
        assert anns_pair == {**{name: anns_pair[name] for name in litellms}, **ANNS_FLAGS}
        assert all(set(m) == litellms for m in bobs["metadata"]), group
    bob_key, ann_key = _get(app, "/global/spend/report", group_by="api_key")
    assert (ann_key["api_key"], ann_key["total_cost"]) == (KEY_A, "0.3700000000")
    assert {name: ann_key.get(name) for name in ANNS_FLAGS} == ANNS_FLAGS
    assert bob_key["api_key"] == KEY_B
    assert not set(ANNS_FLAGS) & set(bob_key)


#: Every flag ``/customer/info`` may give beside ``total_spend``.
CUSTOMER_FLAGS = {"unpriced_requests", *ANNS_FLAGS}


def test_customer_list_rows_carry_the_flags_customer_info_gives(app, ledger_url):  # noqa: F811
    """``/customer/list`` rows had the estimated and quarantined pairs but no
    ``unpriced_requests`` (calls of no known price, left out of ``spend``), which
    ``/customer/info`` gives beside ``total_spend``. Each row now has exactly the flags of the
    end user's ``/customer/info``, summed in one statement for the whole list."""
    _flagged_calls(app, ledger_url)
    unpriced = {"model": "acme-image-edit-1", "cost": None, "start": DAY}  # no known price
    record_events(
        ledger_url,
        make_event(user="ann", **unpriced),
        make_event(user="cy", **unpriced),
        make_event(user="cy", **unpriced),
    )
    users = ("ann", "bob", "cy", "dee")  # dee made no call
    for user in users:
        made = _call(app, "POST", "/customer/new", json={"user_id": user})
        assert made.status_code == 200, made.text

    seen = _spend_calls_statements(app.accounts.store.engine)
    listed = {row["user_id"]: row for row in _get(app, "/customer/list")}
    # one statement for every listed end user's spend, after the one that pages them
    assert len(seen) == 2, seen
    assert "LIMIT" in seen[0][0] and {"ann", "bob", "cy"} <= seen[1][1]
    flags = {u: {n: listed[u][n] for n in CUSTOMER_FLAGS if n in listed[u]} for u in users}
    assert flags == {
        "ann": {"unpriced_requests": 1, **ANNS_FLAGS},
        "bob": {},
        "cy": {"unpriced_requests": 2},
        "dee": {},
    }
    for user in users:
        info = _get(app, "/customer/info", end_user_id=user)
        assert {n: info[n] for n in CUSTOMER_FLAGS if n in info} == flags[user], user
        assert listed[user]["spend"] == info["total_spend"], user
