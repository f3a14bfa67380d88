"""End users known from their calls, as LiteLLM knows them, and deletions that are remembered.

LiteLLM records an end user in its customer table at their first call (docs.litellm.ai/docs/
proxy/customer_usage, read 2026-12-07). Here only ``/customer/new`` and ``/customer/block`` made
an end user: one who only called was a 404 on ``/customer/info`` and absent from
``/customer/list``. Now:

- an end user who called (the ledger's rows, this host's outbox rows included) is known to
  ``/customer/info`` (their spend; no budget, not blocked) and listed by ``/customer/list``;
- ``/customer/delete`` of such an end user is remembered (``proxy_end_user_deletions``, migration
  0010): a 404 and not listed though their rows stay, until a call after the deletion, when
  they are known again with that call's spend alone (LiteLLM's row, made again, starts there);
- ``/customer/update`` finds them as LiteLLM's does (the row their first call made);
- an end user given a record again after a deletion (``/customer/new``, ``/customer/block``,
  ``/customer/update``) counts the calls since it alone, in ``/customer/info`` (total and
  period), ``/customer/list`` and their budget (LiteLLM's row made again by ``/customer/new``
  starts at $0: its ``LiteLLM_EndUserTable.spend`` defaults to 0.0 and ``/customer/delete``
  deletes the row, BerriAI/litellm ``schema.prisma`` and
  ``proxy/management_endpoints/customer_endpoints.py``, read 2026-12-07); the ledger's reports
  keep every call;
- ``/customer/list`` is paged by the database (``page``, ``size``), never the whole ledger.

A real proxy (``tracking serve``) over loopback in front of the session's fake upstream, on a
real SQLite file and a real PostgreSQL database.
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

from tests.accounts_support import (
    accounts_config,
    bearer,
    edit,
    ledger_env,
    proxy_on_ledger,
    spend_rows,
    wait_for,
)
from tests.ledger_support import (  # noqa: F401
    ledger_url,
    outbox_with_rejected_rows,
    row_line,
)
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.integrations.sql import (
    SchemaVersionError,
    create_ledger_engine,
    current_revision,
    downgrade,
    outbox_folder,
    upgrade,
)
from tracking.proxy.account_tables import end_user_deletions


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def proxy(request, fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    with proxy_on_ledger(request, fake.url, tmp_path_factory.mktemp("end-users")) as process:
        yield process


@pytest.fixture
def admin() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, headers=bearer(MASTER_KEY)) as http:
        yield http


def _info(admin: httpx.Client, proxy: ProxyProcess, user: str) -> httpx.Response:
    return admin.get(f"{proxy.url}/customer/info", params={"end_user_id": user})


def _listed(admin: httpx.Client, proxy: ProxyProcess) -> dict[str, dict[str, Any]]:
    answer = admin.get(f"{proxy.url}/customer/list")
    assert answer.status_code == 200, answer.text
    return {row["user_id"]: row for row in answer.json()}


def _call(client: httpx.Client, proxy: ProxyProcess, user: str) -> Decimal:
    """One edit for ``user``; what it cost, as its answer says (what its ledger row records)."""
    answer = edit(client, proxy.url, MASTER_KEY, user=user)
    assert answer.status_code == 200, answer.text
    cost = Decimal(answer.headers["x-tracking-response-cost"])
    assert cost > 0
    return cost


def _rows(client: httpx.Client, proxy: ProxyProcess, user: str, count: int) -> None:
    """Wait until the database holds ``count`` rows of ``user``'s calls."""
    wait_for(lambda: spend_rows(client, proxy.url, user=user)["total"] == count)


def _post(admin: httpx.Client, proxy: ProxyProcess, path: str, document: Any) -> httpx.Response:
    return admin.post(f"{proxy.url}{path}", json=document)


def test_an_end_user_who_only_called_is_known_and_listed(proxy, client, admin):
    spent = _call(client, proxy, "caller-only") + _call(client, proxy, "caller-only")
    # known at once: the rows not written to the database yet (PostgreSQL: in this host's
    # outbox) count as /customer/info counts them
    info = _info(admin, proxy, "caller-only")
    assert info.status_code == 200, info.text
    body = info.json()
    assert Decimal(body["total_spend"]) == spent
    assert body["total_spend"] == f"{spent.quantize(Decimal('1e-10')):f}"
    assert (body["end_user_id"], body["budget"], body["budget_period"]) == (
        "caller-only",
        None,
        None,
    )
    assert body["blocked"] is False
    assert (body["created_at"], body["updated_at"]) == (None, None)  # no record was made
    assert "period_spend" not in body and "remaining" not in body
    _rows(client, proxy, "caller-only", 2)
    row = _listed(admin, proxy)["caller-only"]
    assert Decimal(row["spend"]) == spent and row["spend"] == body["total_spend"]
    assert row["blocked"] is False and "max_budget" not in row and row["budget"] is None
    # its ledger rows are where its spend came from
    logged = spend_rows(client, proxy.url, user="caller-only")["data"]
    assert sum((Decimal(r["cost_usd"]) for r in logged), Decimal(0)) == spent


def test_a_deleted_caller_is_unknown_until_they_call_again(proxy, client, admin):
    first = _call(client, proxy, "deleted-caller")
    _rows(client, proxy, "deleted-caller", 1)
    deleted = _post(admin, proxy, "/customer/delete", {"user_ids": ["deleted-caller"]})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted_customers": 1, "deleted_user_ids": ["deleted-caller"]}

    gone = _info(admin, proxy, "deleted-caller")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "end_user_not_found"
    assert "deleted-caller" not in _listed(admin, proxy)
    assert spend_rows(client, proxy.url, user="deleted-caller")["total"] == 1  # the rows stay
    again = _post(admin, proxy, "/customer/delete", {"user_ids": ["deleted-caller"]})
    assert again.status_code == 404  # nothing left to delete

    second = _call(client, proxy, "deleted-caller")
    back = _info(admin, proxy, "deleted-caller")
    assert back.status_code == 200, back.text
    # LiteLLM's row, made again by this call, starts from its cost: the calls since the deletion
    assert Decimal(back.json()["total_spend"]) == second
    _rows(client, proxy, "deleted-caller", 2)
    assert Decimal(_listed(admin, proxy)["deleted-caller"]["spend"]) == second
    assert first > 0  # still in the ledger, counted by /spend/logs and the global reports
    users = admin.get(f"{proxy.url}/global/spend/end_users").json()
    (global_row,) = [u for u in users if u["end_user"] == "deleted-caller"]
    assert Decimal(global_row["total_spend"]) == first + second


def test_a_deleted_end_user_with_a_record_who_called_stays_deleted(proxy, client, admin):
    made = _post(admin, proxy, "/customer/new", {"user_id": "recorded-caller", "max_budget": 9})
    assert made.status_code == 200, made.text
    _call(client, proxy, "recorded-caller")
    assert _post(admin, proxy, "/customer/delete", {"user_ids": ["recorded-caller"]}).json() == {
        "deleted_customers": 1,
        "deleted_user_ids": ["recorded-caller"],
    }
    assert _info(admin, proxy, "recorded-caller").status_code == 404
    assert "recorded-caller" not in _listed(admin, proxy)


def test_records_made_by_new_and_block_are_as_before(proxy, client, admin):
    made = _post(admin, proxy, "/customer/new", {"user_id": "rec-new", "max_budget": 5})
    assert made.status_code == 200, made.text
    info = _info(admin, proxy, "rec-new").json()
    assert (info["budget"], info["budget_period"], info["total_spend"]) == (
        "5",
        "total",
        "0.0000000000",
    )
    assert info["period_spend"] == "0.0000000000" and info["remaining"] == "5.0000000000"
    assert info["created_at"] is not None
    blocked = _post(admin, proxy, "/customer/block", {"user_ids": ["rec-blocked"]})
    assert blocked.json()["blocked_users"][0]["blocked"] is True
    refused = edit(client, proxy.url, MASTER_KEY, user="rec-blocked")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "end_user_blocked"
    assert _info(admin, proxy, "rec-blocked").json()["blocked"] is True

    # a caller blocked: a record now, every call of theirs counted
    spent = _call(client, proxy, "rec-caller-blocked")
    _post(admin, proxy, "/customer/block", {"user_ids": ["rec-caller-blocked"]})
    caller = _info(admin, proxy, "rec-caller-blocked").json()
    assert caller["blocked"] is True and Decimal(caller["total_spend"]) == spent
    _rows(client, proxy, "rec-caller-blocked", 1)
    listed = _listed(admin, proxy)
    assert listed["rec-new"]["max_budget"] == "5" and listed["rec-new"]["spend"] == "0.0000000000"
    assert listed["rec-blocked"]["blocked"] is True
    assert listed["rec-caller-blocked"]["blocked"] is True
    assert Decimal(listed["rec-caller-blocked"]["spend"]) == spent


def test_update_gives_a_caller_a_record_as_litellms_finds_their_row(proxy, client, admin):
    spent = _call(client, proxy, "caller-updated")
    updated = _post(
        admin, proxy, "/customer/update", {"user_id": "caller-updated", "max_budget": 3}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["budget"] == "3" and updated.json()["budget_period"] == "total"
    info = _info(admin, proxy, "caller-updated").json()
    assert Decimal(info["period_spend"]) == spent and info["created_at"] is not None
    unknown = _post(admin, proxy, "/customer/update", {"user_id": "never-called", "blocked": True})
    assert unknown.status_code == 404


def _ledger_spend(client: httpx.Client, admin: httpx.Client, proxy: ProxyProcess, user: str):
    """The end user's spend as the ledger's reports give it: ``/spend/logs?user=`` (its rows
    summed), ``/global/spend/end_users`` and ``/global/spend/report?customer_id=``."""
    logged = spend_rows(client, proxy.url, user=user)["data"]
    users = admin.get(f"{proxy.url}/global/spend/end_users").json()
    (row,) = [u for u in users if u["end_user"] == user]
    report = admin.get(f"{proxy.url}/global/spend/report", params={"customer_id": user}).json()
    per_day = [c for day in report for c in day["customers"] if c["customer"] == user]
    return (
        sum((Decimal(r["cost_usd"]) for r in logged), Decimal(0)),
        Decimal(row["total_spend"]),
        sum((Decimal(c["total_spend"]) for c in per_day), Decimal(0)),
    )


@pytest.mark.parametrize("period", ["total", "daily", "monthly"])
def test_an_end_user_made_again_counts_only_the_calls_since_their_deletion(
    proxy, client, admin, period
):
    """Deleted and made again by ``/customer/new`` with a budget smaller than what they spent
    before: their calls are admitted, and ``/customer/info`` (total and period) and
    ``/customer/list`` show what they spent since the deletion alone, as LiteLLM's row made
    again starts at $0; the ledger's reports still show every call."""
    user = f"remade-{period}"
    made = _post(admin, proxy, "/customer/new", {"user_id": user, "max_budget": 5})
    assert made.status_code == 200, made.text
    if period != "total":
        _post(admin, proxy, "/customer/update", {"user_id": user, "budget_period": period})
    costs = [_call(client, proxy, user) for _ in range(5)]
    before = sum(costs, Decimal(0))
    _rows(client, proxy, user, 5)
    assert _post(admin, proxy, "/customer/delete", {"user_ids": [user]}).status_code == 200
    budget = before - costs[0] / 2  # less than they spent before: room for two calls since
    again = {"user_id": user, "max_budget": str(budget), "budget_period": period}
    assert _post(admin, proxy, "/customer/new", again).status_code == 200

    fresh = _info(admin, proxy, user).json()
    assert Decimal(fresh["total_spend"]) == Decimal(fresh["period_spend"]) == 0
    assert Decimal(fresh["remaining"]) == budget
    since = _call(client, proxy, user) + _call(client, proxy, user)  # admitted
    info = _info(admin, proxy, user).json()
    assert Decimal(info["total_spend"]) == since and Decimal(info["period_spend"]) == since
    assert Decimal(info["remaining"]) == budget - since
    _rows(client, proxy, user, 7)
    assert Decimal(_listed(admin, proxy)[user]["spend"]) == since
    # the ledger keeps every call, and its reports show them
    assert _ledger_spend(client, admin, proxy, user) == (before + since,) * 3


def test_block_or_update_after_a_deletion_count_from_it(proxy, client, admin):
    """``/customer/block`` and ``/customer/update`` give a deleted end user a record again:
    their spend counts from the deletion too, and so does a budget ``/customer/update`` gives."""
    spent = _call(client, proxy, "remade-block")
    _rows(client, proxy, "remade-block", 1)
    _post(admin, proxy, "/customer/delete", {"user_ids": ["remade-block"]})
    blocked = _post(admin, proxy, "/customer/block", {"user_ids": ["remade-block"]})
    assert blocked.status_code == 200, blocked.text
    info = _info(admin, proxy, "remade-block").json()
    assert info["blocked"] is True and Decimal(info["total_spend"]) == 0
    assert Decimal(_listed(admin, proxy)["remade-block"]["spend"]) == 0
    assert _ledger_spend(client, admin, proxy, "remade-block") == (spent,) * 3

    costs = [_call(client, proxy, "remade-update") for _ in range(4)]
    _rows(client, proxy, "remade-update", 4)
    _post(admin, proxy, "/customer/delete", {"user_ids": ["remade-update"]})
    since = _call(client, proxy, "remade-update")  # known again from this call
    budget = sum(costs, Decimal(0)) - costs[0] / 2
    update = {"user_id": "remade-update", "max_budget": str(budget)}
    assert _post(admin, proxy, "/customer/update", update).status_code == 200
    since += _call(client, proxy, "remade-update")  # admitted: the budget counts from the deletion
    info = _info(admin, proxy, "remade-update").json()
    assert Decimal(info["total_spend"]) == since and Decimal(info["period_spend"]) == since
    _rows(client, proxy, "remade-update", 6)
    assert Decimal(_listed(admin, proxy)["remade-update"]["spend"]) == since


def test_the_list_is_paged(proxy, client, admin):
    for user in ("page-a", "page-b", "page-c"):
        _call(client, proxy, user)
        _rows(client, proxy, user, 1)
    everyone = list(_listed(admin, proxy))
    assert everyone == sorted(everyone) and {"page-a", "page-b", "page-c"} <= set(everyone)
    at = everyone.index("page-a")
    page = admin.get(f"{proxy.url}/customer/list", params={"size": 1, "page": at + 2}).json()
    assert [row["user_id"] for row in page] == ["page-b"]
    for query, param in (({"size": 0}, "size"), ({"size": 1001}, "size"), ({"top": 1}, "top")):
        refused = admin.get(f"{proxy.url}/customer/list", params=query)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param


# -- this host's outboxes ----------------------------------------------------------------------


@pytest.fixture
def quiet_proxy(ledger_url: str, fake, tmp_path: Path) -> Iterator[ProxyProcess]:  # noqa: F811
    """A proxy of its own over a fresh ledger of each dialect (its outboxes in the test's
    folder: ``ledger_url`` names it in the environment)."""
    config = accounts_config(tmp_path, fake.url, ledger_url)
    with ProxyProcess(config, env=ledger_env(ledger_url)) as process:
        yield process


def test_calls_kept_in_this_hosts_outboxes_make_an_end_user_known(
    quiet_proxy,
    admin,
    ledger_url: str,  # noqa: F811
):
    """Calls the database refused for good, kept in a local outbox, are billed all the same and
    counted by ``/customer/info``: their end user is known from them, listed with that spend, and
    deleted and known again by the same rule."""
    proxy = quiet_proxy
    engine = create_ledger_engine(ledger_url)
    try:
        folder = outbox_folder(engine)
    finally:
        engine.dispose()
    lines = [
        row_line("kept-1", user="kept-only", cost=Decimal("0.25"), start=datetime.now(UTC)),
        row_line("kept-2", user="kept-only", cost=Decimal("0.5"), start=datetime.now(UTC)),
    ]
    outbox_with_rejected_rows(folder, lines, name="rejected-999999998.db")
    info = _info(admin, proxy, "kept-only")
    assert info.status_code == 200, info.text
    assert info.json()["total_spend"] == "0.7500000000"
    row = _listed(admin, proxy)["kept-only"]
    assert row["spend"] == "0.7500000000" and row["quarantined_requests"] == 2
    deleted = _post(admin, proxy, "/customer/delete", {"user_ids": ["kept-only", "nobody"]})
    assert deleted.json() == {"deleted_customers": 1, "deleted_user_ids": ["kept-only"]}
    assert _info(admin, proxy, "kept-only").status_code == 404
    assert "kept-only" not in _listed(admin, proxy)
    later = row_line("kept-3", user="kept-only", cost=Decimal("0.125"), start=datetime.now(UTC))
    outbox_with_rejected_rows(folder, [later], name="rejected-999999997.db")
    assert _info(admin, proxy, "kept-only").json()["total_spend"] == "0.1250000000"
    assert _listed(admin, proxy)["kept-only"]["spend"] == "0.1250000000"


# -- migration 0010 ----------------------------------------------------------------------------


def test_migration_0010_goes_up_and_down_and_keeps_deletions(ledger_url):  # noqa: F811
    """0010 makes ``proxy_end_user_deletions``; its way down refuses to drop remembered
    deletions (the deleted callers would be known again), and goes through once emptied."""
    engine = create_ledger_engine(ledger_url)
    try:
        upgrade(engine, "0010")  # (later revisions sit on it: this test is 0010's own)
        assert current_revision(engine) == "0010"
        gone = {"end_user_id": "gone", "deleted_at": datetime.now(UTC)}
        with engine.begin() as conn:
            conn.execute(end_user_deletions.insert().values(**gone))
        with pytest.raises(SchemaVersionError, match=r"proxy_end_user_deletions holds 1 row"):
            downgrade(engine, "0009")
        assert current_revision(engine) == "0010"
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM proxy_end_user_deletions"))
        downgrade(engine, "0009")
        assert current_revision(engine) == "0009"
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("proxy_end_user_deletions")
        upgrade(engine)
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("proxy_end_user_deletions")}
        assert columns == {"end_user_id", "deleted_at"}
    finally:
        engine.dispose()
