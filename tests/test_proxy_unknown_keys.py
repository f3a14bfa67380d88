"""Unknown keys cost no query: a flood of random well-formed ``sk-`` keys is answered from the
instance's set of stored key hashes (one query per ``unknown_seconds`` at most), a key generated
on this instance is known at once, and one stored by another instance is found on the first
reload after it, or at once when the instances share Redis. Statements are counted on the real
SQLite store's engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tests.accounts_support import wait_for
from tests.services import REDIS_TIMEOUT
from tracking.proxy.account_store import AccountStore, KeyRecord
from tracking.proxy.keys import VirtualKeys, generate_key, hash_key
from tracking.proxy.shared_counters import RedisCounters


@pytest.fixture
def store(tmp_path) -> Iterator[AccountStore]:
    store = AccountStore(f"sqlite:///{tmp_path / 'ledger.db'}", auto_migrate=True)
    assert store.engine is not None  # migrated before counting
    yield store
    store.close()


def _count_statements(store: AccountStore) -> list[str]:
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", before)
    return seen


def _store_key(store: AccountStore) -> str:
    key = generate_key()
    store.insert_key(
        KeyRecord(hash_key(key), None, None, None, None, None, None, datetime.now(UTC))
    )
    return key


def test_a_flood_of_random_keys_costs_at_most_one_query(store):
    real = _store_key(store)
    keys = VirtualKeys(store, cache_seconds=60, unknown_seconds=60)
    statements = _count_statements(store)

    async def flood() -> list[bool]:
        checks = [keys.check(generate_key()) for _ in range(2_000)]
        return [principal is None for principal in await asyncio.gather(*checks)]

    assert all(asyncio.run(flood()))
    assert len(statements) == 1, statements  # the one load of the stored hashes
    assert asyncio.run(keys.check(real)) is not None
    assert len(statements) == 2  # the real key's record, then cached
    assert asyncio.run(keys.check(real)) is not None and len(statements) == 2


def test_keys_stored_here_are_known_at_once_and_elsewhere_after_a_reload(store):
    keys = VirtualKeys(store, cache_seconds=60, unknown_seconds=0.3)
    assert asyncio.run(keys.check(generate_key())) is None  # the set is loaded (empty)
    here = _store_key(store)
    asyncio.run(keys.learn(hash_key(here)))  # what POST /key/generate does here
    assert asyncio.run(keys.check(here)) is not None
    elsewhere = _store_key(store)  # as another instance would
    wait_for(lambda: asyncio.run(keys.check(elsewhere)) is not None)
    keys.forget(hash_key(here))  # POST /key/delete here
    store.delete_keys([hash_key(here)])
    assert asyncio.run(keys.check(here)) is None


def test_with_too_many_keys_unknown_ones_are_cached_one_by_one(store, monkeypatch):
    monkeypatch.setattr("tracking.proxy.keys.KNOWN_KEYS_LIMIT", 1)
    _store_key(store)
    _store_key(store)
    keys = VirtualKeys(store, cache_seconds=60, unknown_seconds=60)
    statements = _count_statements(store)
    stranger = generate_key()
    for _ in range(5):
        assert asyncio.run(keys.check(stranger)) is None
    assert len(statements) == 2  # the (too large) set, then this hash once


async def test_instances_sharing_redis_know_each_others_new_keys_at_once(
    store, tmp_path, redis_url, redis_prefix
):
    other_store = AccountStore(f"sqlite:///{tmp_path / 'ledger.db'}")  # another instance's
    here_redis = RedisCounters(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
    there_redis = RedisCounters(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
    here = VirtualKeys(store, cache_seconds=60, unknown_seconds=60, changes=here_redis)
    there = VirtualKeys(other_store, cache_seconds=60, unknown_seconds=60, changes=there_redis)
    try:
        assert await there.check(generate_key()) is None  # its set is loaded, and fresh
        statements = _count_statements(other_store)
        for _ in range(200):  # a flood costs Redis reads, no query
            assert await there.check(generate_key()) is None
        assert statements == []
        key = _store_key(store)
        await here.learn(hash_key(key))  # POST /key/generate on this instance
        assert await there.check(key) is not None  # at once, though its set is fresh
    finally:
        await here_redis.aclose()
        await there_redis.aclose()
        other_store.close()
