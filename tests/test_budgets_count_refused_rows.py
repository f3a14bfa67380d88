"""A caller cannot spend past a budget by making calls whose ledger rows the database refuses.

PostgreSQL stores no NUL character in ``text`` or ``jsonb``: a NUL in a call's metadata or
end-user id sent its row to ``ledger_quarantine``, where no budget counted it once the budget's
counter started again from the ledger (a restart, Redis idle). Such text is now written with
U+FFFD in place of the NUL, and what budgets start from counts the quarantined rows too (a row
refused for any other reason still cost what it says).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.accounts_support import accounts_config, bearer, edit, generate, ledger_env, wait_for
from tests.ledger_support import (  # noqa: F401
    ids_in,
    ledger_url,
    make_event,
    open_ledger,
    quarantine_event,
)
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.integrations.sql import spend_logs
from tracking.integrations.sql._quarantine import list_quarantine
from tracking.proxy.account_store import AccountStore
from tracking.proxy.keys import hash_key

MODEL = "gpt-image-2"


def _quarantine(engine: sa.engine.Engine, **fields: object) -> str:
    return quarantine_event(engine, model=MODEL, **fields)


def test_a_nul_in_text_is_stored_on_postgres_with_a_replacement_character(postgres_url):
    ledger = open_ledger(postgres_url, mode="durable")
    try:
        metadata = {"note": "a\x00b", "k\x00": ["\x00"], "literal": "\\u0000", "both": "\\\x00"}
        cost = Decimal("0.2190150000")
        ledger.on_end(
            make_event(
                request_id="nul-1", user="bob\x00", model=MODEL, cost=cost, metadata=metadata
            )
        )
        ledger.on_end(make_event(request_id="plain-1", model=MODEL))
        assert ledger.flush(10)
        assert {"nul-1", "plain-1"} <= ids_in(ledger.engine)
        assert list_quarantine(ledger.engine) == []
        with ledger.engine.connect() as conn:
            row = conn.execute(
                sa.select(spend_logs).where(spend_logs.c.request_id == "nul-1")
            ).one()
        assert row.end_user == "bob\ufffd"
        assert row.cost_usd == cost
        stored = row.metadata if isinstance(row.metadata, dict) else json.loads(row.metadata)
        assert stored["note"] == "a\ufffdb" and stored["k\ufffd"] == ["\ufffd"]
        # A caller's literal backslash-u0000 text is text, not a NUL: kept as it was.
        assert stored["literal"] == "\\u0000" and stored["both"] == "\\\ufffd"
    finally:
        ledger.shutdown(10)


def test_a_lone_surrogate_is_stored_not_quarantined(ledger_url, upstream, monkeypatch):  # noqa: F811
    """A file name decoded with ``surrogateescape`` holds a lone surrogate, which PostgreSQL's
    JSON refuses, and SQLite takes in no text column (the team): the billed call's row went to
    the quarantine, out of every spend report."""
    import os

    import tracking

    from .conftest import make_png

    ledger = open_ledger(ledger_url, mode="durable")
    monkeypatch.setattr(tracking, "success_callback", [ledger])
    monkeypatch.setattr(tracking, "failure_callback", [ledger])
    try:
        name = os.fsdecode(b"photo-\xff.png")  # 'photo-\udcff.png'
        metadata = {"file": name, name: "\U0001f600", "team": name}
        response = tracking.image_edit(
            model="gpt-image-1",
            image=make_png(16, 16),
            prompt="a hat",
            user="carol",
            metadata=metadata,
            **upstream,
        )
        assert ledger.flush(10)
        assert list_quarantine(ledger.engine) == []
        with ledger.engine.connect() as conn:
            row = conn.execute(
                sa.select(spend_logs).where(spend_logs.c.request_id == response.request_id)
            ).one()
        assert row.cost_usd == response.cost_usd and row.cost_usd > 0
        stored = row.metadata if isinstance(row.metadata, dict) else json.loads(row.metadata)
        assert row.team == "photo-\ufffd.png"
        if ledger.engine.dialect.name == "postgresql":  # SQLite's JSON text keeps the escape
            assert stored["file"] == "photo-\ufffd.png"
            assert stored["photo-\ufffd.png"] == "\U0001f600"  # a pair is one character: kept
        else:
            assert stored == metadata
    finally:
        ledger.shutdown(10)


def test_account_store_counts_quarantined_rows_toward_what_was_spent(postgres_url):
    store = AccountStore(postgres_url, auto_migrate=True)
    try:
        engine = store.engine
        now = datetime.now(UTC)
        key_hash = hash_key("sk-refused-" + uuid.uuid4().hex)
        other_hash = hash_key("sk-other-" + uuid.uuid4().hex)
        user = "carol_%"  # LIKE's wildcards in an id must match only themselves
        _quarantine(engine, api_key_hash=key_hash, user=user, cost=Decimal("0.1"), start=now)
        _quarantine(engine, api_key_hash=key_hash, user="dan", cost=Decimal("0.02"), start=now)
        _quarantine(engine, api_key_hash=other_hash, user="carol_x", cost=Decimal("0.4"), start=now)
        _quarantine(  # before the period asked about
            engine,
            api_key_hash=key_hash,
            user=user,
            cost=Decimal("1"),
            start=now - timedelta(days=2),
        )
        _quarantine(engine, api_key_hash=key_hash, user=user, cost=None, start=now)  # unpriced
        ledger = open_ledger(postgres_url, mode="durable")
        try:  # and a row that went in, so both parts are summed
            ledger.on_end(
                make_event(
                    model=MODEL,
                    api_key_hash=key_hash,
                    user=user,
                    cost=Decimal("0.003"),
                    start=now,
                )
            )
            assert ledger.flush(10)
        finally:
            ledger.shutdown(10)
        day = now - timedelta(days=1)
        assert store.spent(key_hashes=[key_hash], since=day) == Decimal("0.123")
        assert store.spent(key_hashes=[key_hash], since=None) == Decimal("1.123")
        assert store.spent(key_hashes=[key_hash, other_hash], since=day) == Decimal("0.523")
        assert store.spent(end_user=user, since=day) == Decimal("0.103")
        assert store.spent(end_user="carol_x", since=day) == Decimal("0.4")
        assert store.spent(key_hashes=[], since=None) == Decimal(0)
    finally:
        store.close()


def _proxy_config(tmp_path: Path, fake_url: str, database_url: str) -> Path:
    return accounts_config(tmp_path, fake_url, database_url, models=(MODEL,))


def test_a_key_whose_rows_were_quarantined_is_held_to_its_budget(
    tmp_path: Path, monkeypatch, fake, client: httpx.Client, postgres_url
):
    monkeypatch.chdir(tmp_path)
    config = _proxy_config(tmp_path, fake.url, postgres_url)
    with ProxyProcess(config, env=ledger_env(postgres_url)) as proxy:
        key = generate(client, proxy.url, max_budget="0.10")["key"]
        user = "erin-" + uuid.uuid4().hex[:8]
        made = client.post(
            f"{proxy.url}/customer/new",
            headers=bearer(MASTER_KEY),
            json={"user_id": user, "max_budget": 0.10, "budget_period": "daily"},
        )
        assert made.status_code == 200, made.text
        engine = sa.create_engine(postgres_url)
        try:  # an earlier process's calls, refused by the database, spent each budget
            now = datetime.now(UTC)
            _quarantine(engine, api_key_hash=hash_key(key), cost=Decimal("0.10"), start=now)
            _quarantine(engine, user=user, cost=Decimal("0.10"), start=now)
        finally:
            engine.dispose()
        before = fake.hits
        for refused in (
            edit(client, proxy.url, key, model=MODEL),
            edit(client, proxy.url, MASTER_KEY, model=MODEL, user=user),
        ):
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "budget_exceeded"
        assert fake.hits == before
        assert edit(client, proxy.url, MASTER_KEY, model=MODEL, user="frank").status_code == 200


def test_calls_with_nul_metadata_count_toward_the_budget_after_a_restart(
    tmp_path: Path, monkeypatch, fake, client: httpx.Client, postgres_url
):
    """The QA report's scenario: a key spends its budget with NUL in its calls' metadata, the
    proxy restarts (its counters start from the ledger), and the key tries again."""
    monkeypatch.chdir(tmp_path)
    config = _proxy_config(tmp_path, fake.url, postgres_url)
    metadata = json.dumps({"note": "x\x00y", "tags": ["t\x00"]})
    with ProxyProcess(config, env=ledger_env(postgres_url)) as proxy:
        key = generate(client, proxy.url, max_budget="0.10")["key"]
        answered: list[str] = []
        for _ in range(20):
            answer = edit(client, proxy.url, key, model=MODEL, metadata=metadata)
            if answer.status_code != 200:
                assert answer.status_code == 429, answer.text
                break
            answered.append(answer.headers["x-tracking-request-id"])
        assert answered and len(answered) < 20
    engine = sa.create_engine(postgres_url)
    try:
        wait_for(lambda: set(answered) <= ids_in(engine))
        assert list_quarantine(engine) == []
        with engine.connect() as conn:
            spent = conn.execute(
                sa.select(sa.func.sum(spend_logs.c.cost_usd)).where(
                    spend_logs.c.api_key_hash == hash_key(key)
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert Decimal(0) < spent <= Decimal("0.10")
    with ProxyProcess(config, env=ledger_env(postgres_url)) as proxy:
        again = edit(client, proxy.url, key, model=MODEL, metadata=metadata)
        assert again.status_code == 429, again.text
