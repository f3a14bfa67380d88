"""A key's record carries the time it last changed (``proxy_keys.updated_at``, revision 0011),
as an end user's does: its budget counter in Redis seeded before it starts again from the ledger.

Each dialect's database is migrated for real: a key made before revision 0011 has no time
(null: unknown, its counter trusted as before) until it next changes; a key generated, updated
or regenerated is stamped, and a reservation stamps the key's counter in Redis with that time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tests.services import REDIS_TIMEOUT
from tracking.config import parse_config
from tracking.integrations.sql import create_ledger_engine, downgrade, upgrade
from tracking.proxy.account_store import AccountStore, KeyRecord
from tracking.proxy.budgets import Budgets, _changed
from tracking.proxy.keys import principal_of
from tracking.proxy.litellm_store import update_key
from tracking.proxy.shared_counters import RedisCounters


@pytest.fixture
def store(ledger_url):
    engine = create_ledger_engine(ledger_url)
    try:
        upgrade(engine, "0010")
        with engine.begin() as conn:  # a key made before revision 0011
            conn.execute(
                sa.text(
                    "INSERT INTO proxy_keys (key_hash, max_budget_usd, created_at) "
                    "VALUES ('old', 5, :at)"
                ),
                {"at": datetime(2026, 12, 1, tzinfo=UTC)},
            )
        upgrade(engine)
    finally:
        engine.dispose()
    store = AccountStore(ledger_url)
    yield store
    store.close()


def test_a_key_older_than_the_column_has_no_time_until_it_changes(store):
    old = store.get_key("old")
    assert old is not None and old.updated_at is None
    assert principal_of(old).updated_at is None  # its counter is trusted as before

    before = datetime.now(UTC)
    changed = update_key(store, "old", {"max_budget_usd": Decimal(7)})
    assert changed.updated_at is not None and changed.updated_at >= before
    assert principal_of(changed).updated_at == changed.updated_at
    assert update_key(store, "old", {}).updated_at == changed.updated_at  # nothing changed
    # /key/info, /key/list and /key/generate show it as LiteLLM's key objects do
    assert old.to_dict()["updated_at"] is None
    assert changed.to_dict()["updated_at"] == changed.updated_at.isoformat()


def test_a_key_is_stamped_when_generated_updated_and_regenerated(store):
    made = datetime(2026, 12, 6, 12, 30, 15, 123456, tzinfo=UTC)
    store.insert_key(KeyRecord("h1", None, None, None, Decimal(5), None, None, made))
    generated = store.get_key("h1")
    assert generated is not None and generated.updated_at == made  # to the microsecond

    updated = update_key(store, "h1", {"max_budget_usd": Decimal(9)})
    assert updated.updated_at is not None and updated.updated_at > made
    regenerated = update_key(store, "h1", {"key_hash": "h2", "prior_key_hashes": ["h1"]})
    assert regenerated.updated_at is not None and regenerated.updated_at >= updated.updated_at
    assert regenerated.max_budget_usd == Decimal(9)


@pytest.mark.redis
async def test_a_keys_counter_in_redis_is_stamped_with_its_change_time(
    store, redis_url, redis_prefix
):
    """The counter a reservation seeds carries the key's ``updated_at`` (what a reservation on
    another instance compares with its own reading of the record)."""
    import redis.asyncio as aioredis

    update_key(store, "old", {"max_budget_usd": Decimal(7)})
    record = store.get_key("old")
    assert record is not None and record.updated_at is not None
    counters = RedisCounters(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
    try:
        budgets = Budgets(parse_config({"model_list": []}), store, counters, cache_seconds=5)
        params = {"prompt": "p", "quality": "low", "size": "1024x1024", "model": "gpt-image-1"}
        reservation = await budgets.reserve(principal_of(record), params, "gpt-image-1")
        await reservation.release()
    finally:
        await counters.aclose()
    client = aioredis.from_url(redis_url)
    try:
        stamp = await client.get(f"{redis_prefix}budget-changed:key:old:total")
    finally:
        await client.aclose()
    assert stamp is not None and int(stamp) == _changed(record.updated_at)


def test_the_column_goes_with_a_downgrade(store, ledger_url):
    engine = create_ledger_engine(ledger_url)
    try:
        downgrade(engine, "0010")
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("proxy_keys")}
        assert "updated_at" not in columns and "prior_key_hashes" in columns
        upgrade(engine)
    finally:
        engine.dispose()
