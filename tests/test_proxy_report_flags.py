"""LiteLLM's spend routes flag calls recorded at an estimate and quarantined calls in every figure.

- ``GET /customer/info`` flagged its all-time figure (``total_spend``) only: its
  ``period_spend`` (what the end user's budget counts) said nothing of the estimates and the
  quarantined calls within it. Its ``period_flags`` now holds the period's pairs
  (``estimated_requests`` / ``estimated_usd``, ``quarantined_requests`` /
  ``quarantined_usd``), each only when there are such calls.
- ``GET /customer/info`` said nothing of the calls it left out of ``total_spend`` and
  ``period_spend`` for want of a price, which ``/key/info`` counts in ``unpriced_requests``.
  It now has ``unpriced_requests`` beside ``total_spend`` and in ``period_flags``, each only
  when there are such calls.
- ``/global/spend/report`` flagged each team's, end user's and key's entry, not its
  per-(model, key) ``metadata`` entries (``model_details`` per model by key): an entry of
  estimates looked like a bill. Each now has the pairs of its own calls beside LiteLLM's fields.
- ``GET /key/info``'s ``info.spend`` held calls at an estimate and quarantined calls without
  saying so, and nothing said how many calls it left out for want of a price. Beside LiteLLM's
  fields it now has the pairs and ``unpriced_requests``, each only when the key has such calls,
  over every hash the key had (a regenerated key's too).
- ``GET /customer/list``'s row of an end user left out the calls this host keeps in its local
  outboxes, which its ``/customer/info`` counts, amount and flags: the row now gives the same.

A real proxy (``tracking serve``) over loopback, on a real SQLite file and a real PostgreSQL
database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.accounts_support import bearer, ledger_env
from tests.ledger_support import (  # noqa: F401
    ledger_url,
    make_event,
    outbox_with_rejected_rows,
    quarantine_event,
    record_events,
    row_line,
)
from tests.proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config
from tracking.integrations.sql import create_ledger_engine, outbox_folder
from tracking.proxy.keys import hash_key

DAY = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # before any budget period of the test's run
KEY_A, KEY_B = (hash_key(f"sk-reportflags-{n}") for n in "ab")
#: The flags every spend report gives beside an amount.
FLAG_NAMES = ("unpriced_requests", "estimated_requests", "estimated_usd", "quarantined_requests",
              "quarantined_usd")  # fmt: skip


class Proxy:
    """A proxy over the ledger at a URL, called with the master key."""

    def __init__(self, process: ProxyProcess, client: httpx.Client) -> None:
        self.process = process
        self.client = client

    def get(self, path: str, **params: str) -> Any:
        answer = self.client.get(f"{self.process.url}{path}", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def post(self, path: str, document: dict[str, Any]) -> Any:
        answer = self.client.post(f"{self.process.url}{path}", json=document)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def proxy(ledger_url: str, tmp_path: Path) -> Iterator[Proxy]:  # noqa: F811
    general = {"master_key": MASTER_KEY, "database_url": ledger_url, "auto_migrate": True}
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config("http://127.0.0.1:9", general_settings=general),  # never called
    )
    with (
        ProxyProcess(config, env=ledger_env(ledger_url)) as process,
        httpx.Client(timeout=30, headers=bearer(MASTER_KEY)) as client,
    ):
        yield Proxy(process, client)


def _record(url: str, events: list[Any], quarantined: list[dict[str, Any]]) -> None:
    """Write ``events`` through the ledger and put rows of ``quarantined`` (``make_event``'s
    fields) in its quarantine."""
    record_events(url, *events)
    engine = sa.create_engine(url)
    try:
        for fields in quarantined:
            quarantine_event(engine, **fields)
    finally:
        engine.dispose()


def _refused_calls_of(user: str) -> list[str]:
    """Rows of two calls of ``user``'s, one at an estimate ($0.2), one of no known price."""
    return [
        row_line(f"{user}-estimate", user=user, cost=Decimal("0.2"), cost_source="estimate"),
        row_line(f"{user}-unpriced", user=user, cost=None),
    ]


def _keep_refused(url: str, lines: list[str]) -> None:
    """Keep ``lines`` as this host keeps rows the database and its quarantine both refused:
    in the ``rejected`` table of a file set aside in the ledger's outbox folder."""
    engine = create_ledger_engine(url)
    try:
        folder = outbox_folder(engine)
    finally:
        engine.dispose()
    outbox_with_rejected_rows(folder, lines, name="rejected-999999999.db")


def _estimate(**fields: Any) -> Any:
    """A failed call recorded at an estimate (its answer was lost)."""
    return make_event(status="failure", cost_source="estimate", **fields)


def test_customer_info_flags_the_period_spend(proxy: Proxy, ledger_url: str):  # noqa: F811
    now = datetime.now(UTC)
    _record(
        ledger_url,
        [
            _estimate(user="ann", cost=Decimal("0.02"), start=DAY),  # before the period
            _estimate(user="ann", cost=Decimal("0.03"), start=now),
            _estimate(user="bob", cost=Decimal("0.04"), start=DAY),
            make_event(user="bob", cost=Decimal("0.1"), start=now),
            _estimate(user="carol", cost=Decimal("0.06"), start=now),
            _estimate(user="dan", cost=Decimal("0.07"), start=now),
        ],
        [
            {"user": "ann", "cost": Decimal("0.25"), "start": DAY, "cost_source": "estimate"},
            {"user": "ann", "cost": Decimal("0.5"), "start": now},
        ],
    )
    budgets = {"ann": "monthly", "bob": "daily", "carol": None}  # carol's counts all time
    for user, period in budgets.items():
        proxy.post("/customer/new", {"user_id": user, "max_budget": "100",
                                     "budget_period": period})  # fmt: skip
    proxy.post("/customer/new", {"user_id": "dan"})  # no budget, so no period

    ann = proxy.get("/customer/info", end_user_id="ann")
    assert (ann["total_spend"], ann["period_spend"]) == ("0.8000000000", "0.5300000000")
    assert {n: ann[n] for n in ("estimated_requests", "estimated_usd")} == {
        "estimated_requests": 3,
        "estimated_usd": "0.3000000000",
    }
    assert ann["period_flags"] == {
        "estimated_requests": 1,
        "estimated_usd": "0.0300000000",
        "quarantined_requests": 1,
        "quarantined_usd": "0.5000000000",
    }
    bob = proxy.get("/customer/info", end_user_id="bob")  # only his past call was estimated
    assert (bob["estimated_requests"], bob["period_spend"]) == (1, "0.1000000000")
    assert bob["period_flags"] == {}
    carol = proxy.get("/customer/info", end_user_id="carol")
    assert carol["period_start"] is None
    assert carol["period_flags"] == {"estimated_requests": 1, "estimated_usd": "0.0600000000"}
    assert carol["estimated_usd"] == "0.0600000000"
    dan = proxy.get("/customer/info", end_user_id="dan")
    assert dan["estimated_requests"] == 1
    assert "period_spend" not in dan and "period_flags" not in dan


def test_customer_info_counts_unpriced_calls(proxy: Proxy, ledger_url: str):  # noqa: F811
    now = datetime.now(UTC)
    unpriced = {"model": "acme-image-edit-1", "cost": None}  # a model with no known price
    _record(
        ledger_url,
        [
            make_event(user="erin", start=DAY, **unpriced),  # before the period
            make_event(user="erin", start=now, **unpriced),
            make_event(user="erin", start=now, **unpriced),
            make_event(user="erin", cost=Decimal("0.1"), start=now),
            _estimate(user="erin", cost=Decimal("0.02"), start=now),
            make_event(user="fay", start=DAY, **unpriced),  # before her daily period
            make_event(user="gus", start=DAY, **unpriced),
            make_event(user="hal", cost=Decimal("0.3"), start=now),
        ],
        [],
    )
    budgets = {"erin": "monthly", "fay": "daily", "gus": None, "hal": "daily"}  # gus: all time
    for user, period in budgets.items():
        proxy.post("/customer/new", {"user_id": user, "max_budget": "100",
                                     "budget_period": period})  # fmt: skip
    proxy.post("/customer/new", {"user_id": "ivy"})  # no budget, so no period
    record_events(ledger_url, make_event(user="ivy", start=now, **unpriced))

    erin = proxy.get("/customer/info", end_user_id="erin")
    assert (erin["total_spend"], erin["period_spend"]) == ("0.1200000000", "0.1200000000")
    assert erin["unpriced_requests"] == 3  # left out of total_spend
    assert erin["period_flags"] == {
        "unpriced_requests": 2,
        "estimated_requests": 1,
        "estimated_usd": "0.0200000000",
    }
    fay = proxy.get("/customer/info", end_user_id="fay")  # only her past call was unpriced
    assert (fay["unpriced_requests"], fay["period_flags"]) == (1, {})
    gus = proxy.get("/customer/info", end_user_id="gus")
    assert gus["period_start"] is None
    assert (gus["unpriced_requests"], gus["period_flags"]) == (1, {"unpriced_requests": 1})
    hal = proxy.get("/customer/info", end_user_id="hal")  # every call priced: nothing to say
    assert "unpriced_requests" not in hal and hal["period_flags"] == {}
    ivy = proxy.get("/customer/info", end_user_id="ivy")
    assert ivy["unpriced_requests"] == 1 and "period_flags" not in ivy


#: Ann's calls to gpt-image-1 with key A: one priced, two at an estimate, one of them refused by
#: the database; her call to dall-e-2 with key A and Bob's with key B are priced.
ANNS_FLAGS = {
    "estimated_requests": 2,
    "estimated_usd": "0.2700000000",
    "quarantined_requests": 1,
    "quarantined_usd": "0.2500000000",
}


def test_spend_report_entries_per_model_and_key_are_flagged(proxy: Proxy, ledger_url: str):  # noqa: F811
    ann = {"user": "ann", "team": "t", "api_key_hash": KEY_A, "start": DAY}
    _record(
        ledger_url,
        [
            make_event(cost=Decimal("0.1"), **ann),
            _estimate(cost=Decimal("0.02"), **ann),
            make_event(cost=Decimal("0.04"), model="dall-e-2", **ann),
            make_event(user="bob", team="u", api_key_hash=KEY_B, start=DAY, cost=Decimal("0.5")),
        ],
        [{"cost": Decimal("0.25"), "cost_source": "estimate", **ann}],
    )
    litellms = {"model", "api_key", "spend", "total_tokens"}
    groups = {"customer": ("customers", "customer", "ann"), "team": ("teams", "team_name", "t")}
    for group, (plural, field, anns) in groups.items():
        (day,) = proxy.get("/global/spend/report", group_by=group)
        entries = {entry[field]: entry for entry in day[plural]}
        dall_e, gpt = entries[anns]["metadata"]
        assert (dall_e["model"], dall_e["api_key"], dall_e["spend"]) == (
            "dall-e-2",
            KEY_A,
            "0.0400000000",
        )
        assert set(dall_e) == litellms, group  # no such calls: LiteLLM's fields alone
        assert (gpt["model"], gpt["api_key"], gpt["spend"]) == (
            "gpt-image-1",
            KEY_A,
            "0.3700000000",
        )
        assert gpt == {**{n: gpt[n] for n in litellms}, **ANNS_FLAGS}, group
        assert {n: entries[anns][n] for n in ANNS_FLAGS} == ANNS_FLAGS, group
        (bobs,) = (e for name, e in entries.items() if name != anns)
        assert all(set(m) == litellms for m in bobs["metadata"]), group
    bob_key, ann_key = proxy.get("/global/spend/report", group_by="api_key")
    assert (ann_key["api_key"], bob_key["api_key"]) == (KEY_A, KEY_B)
    dall_e, gpt = ann_key["model_details"]
    details = {"model", "total_cost", "total_input_tokens", "total_output_tokens"}
    assert (dall_e["model"], set(dall_e)) == ("dall-e-2", details)
    assert (gpt["model"], gpt["total_cost"]) == ("gpt-image-1", "0.3700000000")
    assert gpt == {**{n: gpt[n] for n in details}, **ANNS_FLAGS}
    assert all(set(m) == details for m in bob_key["model_details"])


KEY_INFO_FIELDS = {"key_hash", "key_alias", "team", "models", "max_budget", "rpm_limit",
                   "expires", "created_at", "updated_at", "spend"}  # fmt: skip
KEY_FLAGS = {"estimated_requests", "estimated_usd", "quarantined_requests", "quarantined_usd",
             "unpriced_requests"}  # fmt: skip


def test_key_info_flags_estimated_quarantined_and_unpriced_calls(proxy: Proxy, ledger_url: str):  # noqa: F811
    flagged = proxy.post("/key/generate", {"key_alias": "flagged"})
    plain = proxy.post("/key/generate", {"key_alias": "plain"})
    old_hash = flagged["key_hash"]
    # the flagged key is regenerated: its calls under its first hash are still its own
    renewed = proxy.post("/key/regenerate", {"key_hash": old_hash})
    new_hash = renewed["key_hash"]
    assert new_hash != old_hash
    _record(
        ledger_url,
        [
            make_event(api_key_hash=old_hash, cost=Decimal("0.1")),
            _estimate(api_key_hash=old_hash, cost=Decimal("0.02")),
            _estimate(api_key_hash=new_hash, cost=Decimal("0.03")),
            make_event(api_key_hash=new_hash, model="acme-image-edit-1", cost=None),  # unpriced
            make_event(api_key_hash=plain["key_hash"], cost=Decimal("0.5")),
        ],
        [{"api_key_hash": new_hash, "cost": Decimal("0.25")}],
    )

    info = proxy.get("/key/info", key_hash=new_hash)
    assert info["key_hash"] == new_hash
    body = info["info"]
    assert set(body) == KEY_INFO_FIELDS | KEY_FLAGS  # LiteLLM's fields, and ours beside them
    assert body["key_alias"] == "flagged"
    assert body["spend"] == "0.4000000000"  # 0.1 + 0.02 + 0.03 + 0.25; the unpriced call: none
    assert {name: body[name] for name in KEY_FLAGS} == {
        "estimated_requests": 2,
        "estimated_usd": "0.0500000000",
        "quarantined_requests": 1,
        "quarantined_usd": "0.2500000000",
        "unpriced_requests": 1,
    }
    # a key asking about itself is answered the same
    own = proxy.client.get(f"{proxy.process.url}/key/info", headers=bearer(renewed["key"]))
    assert own.status_code == 200, own.text
    assert own.json()["info"] == body
    # a key with none of these calls has LiteLLM's fields alone
    calm = proxy.get("/key/info", key_hash=plain["key_hash"])["info"]
    assert (set(calm), calm["spend"]) == (KEY_INFO_FIELDS, "0.5000000000")


def test_global_spend_and_its_rows_count_unpriced_calls(proxy: Proxy, ledger_url: str):  # noqa: F811
    """``/global/spend`` and its per-key, model, end-user and team rows gave the estimated and
    quarantined pairs but not the calls of no known price, which their amounts leave out."""
    unpriced = {"model": "acme-image-edit-1", "cost": None}  # a model with no known price
    record_events(
        ledger_url,
        make_event(user="jo", api_key_hash=KEY_A, team="t1", start=DAY, **unpriced),
        make_event(user="jo", api_key_hash=KEY_A, team="t1", start=DAY, **unpriced),
        make_event(user="kim", api_key_hash=KEY_B, team="t2", start=DAY, cost=Decimal("0.25")),
    )
    total = proxy.get("/global/spend")
    assert total["spend"] == "0.2500000000" and total["unpriced_requests"] == 2
    rows = {
        path: {next(iter(row.values())): row for row in proxy.get(path)}
        for path in ("/global/spend/end_users", "/global/spend/teams", "/global/spend/models")
    }
    assert rows["/global/spend/end_users"]["jo"]["unpriced_requests"] == 2
    assert "unpriced_requests" not in rows["/global/spend/end_users"]["kim"]
    assert rows["/global/spend/teams"]["t1"]["unpriced_requests"] == 2
    assert rows["/global/spend/models"]["acme-image-edit-1"]["unpriced_requests"] == 2
    assert "unpriced_requests" not in rows["/global/spend/teams"]["t2"]


def test_customer_info_flags_the_calls_kept_on_this_host_as_it_counts_them(
    proxy: Proxy,
    ledger_url: str,  # noqa: F811
):
    """Calls the database and its quarantine both refused are kept in a local outbox's
    ``rejected`` table, billed all the same: ``/customer/info``'s and ``/key/info``'s figures
    counted them (what budgets count), their flags came from the database alone and said
    nothing of them. They are flagged now as the figures count them: quarantined (refused), at
    an estimate, unpriced."""
    _record(ledger_url, [make_event(user="uma", cost=Decimal("0.1"))], [])
    refused = _refused_calls_of("uma")
    key_hash = proxy.post("/key/generate", {"key_alias": "uma's"})["key_hash"]
    record_events(ledger_url, make_event(api_key_hash=key_hash, cost=Decimal("0.1")))
    refused += [
        row_line("key-estimate", api_key_hash=key_hash, cost=Decimal("0.2"),
                 cost_source="estimate"),
        row_line("key-unpriced", api_key_hash=key_hash, cost=None),
    ]  # fmt: skip
    _keep_refused(ledger_url, refused)
    proxy.post("/customer/new", {"user_id": "uma", "max_budget": "100", "budget_period": None})
    uma = proxy.get("/customer/info", end_user_id="uma")
    assert uma["total_spend"] == uma["period_spend"] == "0.3000000000"
    flags = {
        "unpriced_requests": 1,
        "estimated_requests": 1,
        "estimated_usd": "0.2000000000",
        "quarantined_requests": 2,
        "quarantined_usd": "0.2000000000",
    }
    assert {name: uma.get(name) for name in flags} == flags
    assert uma["period_flags"] == flags
    info = proxy.get("/key/info", key_hash=key_hash)["info"]  # a key's the same way
    assert info["spend"] == "0.3000000000"
    assert {name: info.get(name) for name in flags} == flags


def test_customer_list_rows_count_the_calls_kept_on_this_host_as_customer_info_does(
    proxy: Proxy,
    ledger_url: str,  # noqa: F811
):
    """``/customer/list``'s row of an end user said its ``spend`` and flags were those of its
    ``/customer/info``, but left out the calls this host keeps in its local outboxes, which
    ``/customer/info`` counts (amount and flags): the two disagreed. The row counts them now,
    from the same rows. ``/global/spend/end_users`` reads the database alone, amount and flags
    both (another host's outboxes are out of sight: a global figure would depend on the host
    that answers)."""
    _record(ledger_url, [make_event(user="ivy", cost=Decimal("0.1"))], [])
    _record(ledger_url, [make_event(user="ned", cost=Decimal("0.4"))], [])
    _keep_refused(ledger_url, _refused_calls_of("ivy"))
    for user in ("ivy", "ned"):
        proxy.post("/customer/new", {"user_id": user})
    listed = {row["user_id"]: row for row in proxy.get("/customer/list")}
    for user in ("ivy", "ned"):
        info = proxy.get("/customer/info", end_user_id=user)
        row = listed[user]
        assert row["spend"] == info["total_spend"], user
        assert {n: row.get(n) for n in FLAG_NAMES} == {n: info.get(n) for n in FLAG_NAMES}, user
    assert listed["ivy"]["spend"] == "0.3000000000"
    assert (listed["ivy"]["quarantined_requests"], listed["ivy"]["unpriced_requests"]) == (2, 1)
    assert listed["ned"]["spend"] == "0.4000000000"
    assert not set(FLAG_NAMES) & set(listed["ned"])
    database_only = {row["end_user"]: row for row in proxy.get("/global/spend/end_users")}
    assert database_only["ivy"]["total_spend"] == "0.1000000000"
    assert not set(FLAG_NAMES) & set(database_only["ivy"])
