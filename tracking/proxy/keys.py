"""Virtual keys: how they are made, stored (as a SHA-256 digest) and recognised on each request.

A key is ``sk-`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 hex digest
is stored and logged: the digest of a random 256-bit secret cannot be turned back into the key,
and it is the ``api_key_hash`` of the ledger's rows. :class:`VirtualKeys` is the authenticator's
:class:`~tracking.proxy.auth.KeyCheck` for them: it hashes the presented key, finds the record
(in a short cache, else the database), compares the digests with ``hmac.compare_digest``, and
refuses an expired key.

Revocation bound: each instance caches a key's record (and "no such key") for
``cache_seconds`` (default 5 s, ``TRACKING_KEY_CACHE_SECONDS``). ``POST /key/delete`` drops the
key from the cache of the instance that served it at once; every other instance stops accepting
it at most ``cache_seconds`` later. Expiry is checked on every request, never cached. A key
unknown to an instance costs no database query for ``min(cache_seconds, 1 s)``
(:class:`VirtualKeys`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from ..environment_numbers import seconds_from_environment
from .account_store import read_store
from .auth import Principal
from .errors import ProxyError
from .limits import KEY_HASH, MAX_KEY_LIFETIME, key_hash, secret_in_query

if TYPE_CHECKING:
    from .account_store import AccountStore, KeyRecord

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_SECONDS",
    "DEFAULT_UNKNOWN_SECONDS",
    "KNOWN_KEYS_LIMIT",
    "KeyChanges",
    "VirtualKeys",
    "generate_key",
    "hash_key",
    "parse_duration",
]

log = logging.getLogger("tracking.proxy")

CACHE_ENV = "TRACKING_KEY_CACHE_SECONDS"
DEFAULT_CACHE_SECONDS = 5.0
#: How long a key absent from this instance's set of stored keys is taken as unknown, at most.
DEFAULT_UNKNOWN_SECONDS = 1.0
#: Above this many stored keys, unknown keys are looked up one by one (cached per hash).
KNOWN_KEYS_LIMIT = 50_000
_CACHE_LIMIT = 10_000
_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
#: What generate_key makes; any other token cannot be one of ours and costs no database read.
_KEY_SHAPE = re.compile(r"^sk-[A-Za-z0-9_-]{43}$")


def generate_key() -> str:
    return "sk-" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256 digest in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def asked_key_hash(query: Mapping[str, str]) -> str | None:
    """The key a spend query filters by, as its SHA-256 hex digest: ``api_key_hash``, or
    LiteLLM's ``api_key`` naming it by that digest (as LiteLLM's own filter also takes it); both
    must name the same key. None when neither is given. A key's secret there is a 400, as on
    ``/key/info``: a secret in a URL lands in access logs and proxies' histories. The value is
    never echoed: a refusal names the parameter alone."""
    secret = query.get("api_key")
    if secret and not KEY_HASH.fullmatch(secret):
        raise secret_in_query(
            "api_key",
            " (it would land in access logs and proxies' histories); name it by its SHA-256 "
            "hex digest, api_key=<digest> or api_key_hash=<digest>, as /key/generate and "
            "/key/list give it",
        )
    named = key_hash(query.get("api_key_hash"), "api_key_hash")
    digest = key_hash(secret, "api_key")
    if named is not None and digest is not None and named != digest:
        raise ProxyError(
            400,
            "api_key_hash: names another key than api_key; give one of them",
            param="api_key_hash",
            code="invalid_value",
        )
    return digest or named


def parse_duration(text: str, param: str = "duration") -> timedelta:
    """``30s``, ``15m``, ``12h``, ``30d``: positive, and at most :data:`MAX_KEY_LIFETIME`."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ProxyError(
            400,
            f"{param}: expected a positive duration such as 30s, 15m, 12h or 30d",
            param=param,
            code="invalid_value",
        )
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        duration = MAX_KEY_LIFETIME * 2
    if duration > MAX_KEY_LIFETIME:
        raise ProxyError(
            400,
            f"{param}: at most {MAX_KEY_LIFETIME.days} days",
            param=param,
            code="invalid_value",
        )
    return duration


def cache_seconds_from_environment() -> float:
    return seconds_from_environment(CACHE_ENV, DEFAULT_CACHE_SECONDS)


def principal_of(record: KeyRecord) -> Principal:
    return Principal(
        "virtual",
        key_hash=record.key_hash,
        key_alias=record.key_alias,
        team=record.team,
        models=frozenset(record.models) if record.models is not None else None,
        rpm_limit=record.rpm_limit,
        max_budget_usd=record.max_budget_usd,
        prior_key_hashes=record.prior_key_hashes,
        updated_at=record.updated_at,
    )


class KeyChanges(Protocol):
    """A count of key changes that several instances share (Redis): a new value means another
    instance stored a key, so the set of known keys is reloaded at once."""

    async def keys_version(self) -> int | None:
        """The current count; None when it cannot be read (fall back to the set's age)."""
        ...

    async def keys_changed(self) -> None: ...


class VirtualKeys:
    """The key check for virtual keys, with a short per-instance cache.

    Unknown keys cost no query: the instance keeps the set of every stored key's hash (loaded
    with one query, at most :data:`KNOWN_KEYS_LIMIT` of them) and answers "no such key" from it
    while it is younger than ``unknown_seconds``; a miss on an older set reloads it once (one
    query however many requests wait for it). A flood of made-up keys therefore costs at most
    one query per ``unknown_seconds``. Keys generated or deleted here update the set at once;
    a key generated on another instance is found at once when the instances share Redis
    (:class:`KeyChanges`: one Redis read per unknown key, no database query), as one generated
    on another worker of ``tracking serve --workers N`` is through the machine's counters file
    (:class:`~tracking.proxy.machine_counters.MachineCounters`), else by the first reload after
    it (at most ``unknown_seconds`` later). With more stored keys than the limit,
    each hash is looked up and "no such key" is cached per hash instead.
    """

    def __init__(
        self,
        store: AccountStore,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        unknown_seconds: float | None = None,
        changes: KeyChanges | None = None,
    ) -> None:
        self.store = store
        self.changes = changes
        self._version: int | None = None  # the shared change count the set was loaded at
        self.cache_seconds = cache_seconds
        self.unknown_seconds = (
            min(cache_seconds, DEFAULT_UNKNOWN_SECONDS)
            if unknown_seconds is None
            else unknown_seconds
        )
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}
        #: Every stored key's hash as of ``_known_at`` (None: too many, or not loaded).
        self._known: set[str] | None = None
        self._known_at = -math.inf
        self._reload = asyncio.Lock()

    async def record(self, key_hash: str) -> KeyRecord | None:
        """The key's record, from the cache while it is fresh."""
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and now - cached[1] < self.cache_seconds:
            return cached[0]
        if not await self._may_exist(key_hash):
            return None
        record = await read_store(
            "key", "the key store is unavailable; try again shortly", self.store.get_key, key_hash
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # a flood of made-up keys must not grow memory without bound
        self._cache[key_hash] = (record, now)
        return record

    async def _may_exist(self, key_hash: str) -> bool:
        """False when the set of stored hashes, fresh enough, does not hold ``key_hash``."""
        if self.unknown_seconds <= 0:
            return True
        if self._known is not None and key_hash in self._known:
            return True
        stale = time.monotonic() - self._known_at >= self.unknown_seconds
        version = await self.changes.keys_version() if self.changes is not None else None
        if stale or (version is not None and version != self._version):
            async with self._reload:  # one reload however many requests miss at once
                stale = time.monotonic() - self._known_at >= self.unknown_seconds
                if stale or (version is not None and version != self._version):
                    known = await read_store(
                        "key",
                        "the key store is unavailable; try again shortly",
                        self.store.key_hashes,
                        KNOWN_KEYS_LIMIT,
                    )
                    self._known = set(known) if known is not None else None
                    self._known_at = time.monotonic()
                    self._version = version
        return self._known is None or key_hash in self._known

    async def learn(self, key_hash: str) -> None:
        """A key was just stored (here): known at once here, and on every instance sharing
        :attr:`changes` at its next miss."""
        if self._known is not None:
            self._known.add(key_hash)
        self._cache.pop(key_hash, None)
        if self.changes is not None:
            await self.changes.keys_changed()

    def forget(self, key_hash: str) -> None:
        self._cache.pop(key_hash, None)
        if self._known is not None:
            self._known.discard(key_hash)

    async def check(self, token: str) -> Principal | None:
        if not _KEY_SHAPE.match(token):
            return None
        digest = hash_key(token)
        record = await self.record(digest)
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            return None
        if record.expired(datetime.now(UTC)):
            raise ProxyError(401, "this API key has expired", code="expired_api_key", reason="auth")
        return principal_of(record)
