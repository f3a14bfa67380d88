"""``/key/*`` and ``/customer/*``: managing virtual keys and end users' budgets over HTTP.

Generating and deleting keys and creating or changing end users take the master key (any other
caller gets 403). ``GET /key/info`` answers the master key about any key and a virtual key about
itself. Keys are never echoed back except once, by ``POST /key/generate``; every other answer
names a key by its SHA-256 hash (``key_hash``) and alias. ``GET /customer/info`` and
``POST /customer/update`` also know an end user who only called (:mod:`.known_end_users`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .account_store import EndUserRecord, KeyRecord
from .auth import request_headers
from .budgets import PERIODS, period_window
from .errors import ProxyError
from .json_io import (
    DATE_RANGE,
    Receive,
    Scope,
    Send,
    known_fields,
    one_value,
    optional_int,
    optional_money,
    optional_str,
    query_of,
    read_json,
    send_json,
    utc_datetime,
)
from .keys import generate_key, hash_key, parse_duration
from .known_end_users import known_end_user, record_if_called
from .limits import MAX_KEY_LIFETIME, MAX_RPM_LIMIT, end_user_id, key_hash, secret_in_query

if TYPE_CHECKING:
    from .accounts import Accounts
    from .auth import Authenticator, Principal

__all__ = [
    "END_USER_FIELDS",
    "KEY_DELETE_FIELDS",
    "KEY_FIELDS",
    "management_routes",
    "requested_expiry",
    "requested_models",
    "require_master",
]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


def require_master(principal: Principal) -> None:
    if principal.kind != "master":
        raise ProxyError(
            403,
            "this endpoint needs the master key",
            code="master_key_required",
            reason="auth",
        )


def requested_models(document: dict[str, Any], known: frozenset[str]) -> tuple[str, ...] | None:
    """A key request's ``models`` (each one this proxy serves, in order, once), or None (every
    model): absent, null or an empty list, which is LiteLLM's "every model" too."""
    value = document.get("models")
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise ProxyError(
            400, "models: expected a list of model names", param="models", code="invalid_type"
        )
    unknown = sorted(set(value) - known)
    if unknown:
        raise ProxyError(
            400,
            f"models: this proxy serves no model {', '.join(map(repr, unknown))}",
            param="models",
            code="model_not_found",
        )
    return tuple(dict.fromkeys(value))


def requested_expiry(document: dict[str, Any], now: datetime) -> datetime | None:
    """When a requested key expires: ``duration`` from ``now`` or ``expires`` (not both)."""
    duration = optional_str(document, "duration")
    expires = optional_str(document, "expires")
    if duration and expires:
        raise ProxyError(
            400, "give duration or expires, not both", param="expires", code="invalid_value"
        )
    if duration:
        return now + parse_duration(duration)
    if expires:
        try:
            parsed = utc_datetime(expires)
        except ValueError:
            raise ProxyError(
                400, "expires: expected an ISO-8601 datetime", param="expires", code="invalid_value"
            ) from None
        except OverflowError:
            raise ProxyError(
                400, f"expires: {DATE_RANGE}", param="expires", code="invalid_value"
            ) from None
        if parsed <= now:  # a key born expired is a mistake; /key/delete ends a key
            raise ProxyError(
                400,
                f"expires: must be in the future (got {parsed.isoformat()})",
                param="expires",
                code="invalid_value",
            )
        if parsed - now > MAX_KEY_LIFETIME:
            raise ProxyError(
                400,
                f"expires: at most {MAX_KEY_LIFETIME.days} days ahead",
                param="expires",
                code="invalid_value",
            )
        return parsed
    return None


def _period(document: dict[str, Any], default: str | None) -> str | None:
    """The document's ``budget_period``; absent or null: ``default`` (a budget with no period
    counts over all time, never not at all)."""
    value = document.get("budget_period")
    if value is None:
        return default
    if value not in PERIODS:
        raise ProxyError(
            400,
            f"budget_period: must be one of {', '.join(PERIODS)}",
            param="budget_period",
            code="invalid_value",
        )
    return str(value)


def _blocked(document: dict[str, Any]) -> bool | None:
    value = document.get("blocked")
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ProxyError(
            400, "blocked: expected true or false", param="blocked", code="invalid_type"
        )
    return value


def _user_id(value: Any, param: str) -> str:
    """An end user's id, by the one rule calls use too (exact text, bounded)."""
    user_id = end_user_id(value, param)
    if user_id is None:
        raise ProxyError(400, f"{param}: required", param=param, code="missing_required_parameter")
    return user_id


#: The fields ``/key/generate`` takes (``/key/update`` and ``/key/regenerate`` also the key's name).
KEY_FIELDS = frozenset(
    {"key_alias", "team", "team_id", "models", "max_budget", "rpm_limit", "duration", "expires"}
)
#: The fields ``/customer/new`` and ``/customer/update`` take.
END_USER_FIELDS = frozenset({"user_id", "end_user_id", "max_budget", "budget_period", "blocked"})
#: The fields ``/key/delete`` takes (LiteLLM's ``key_aliases`` is refused, never dropped: the key
#: it names would stay live while the caller believes it deleted).
KEY_DELETE_FIELDS = frozenset({"keys", "key_hashes"})


def _with_key_defaults(document: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/key/generate`` request with LiteLLM's ``default_key_generate_params`` filled in: a
    default for each field the request leaves out (absent or null; ``models`` also an empty
    list, as in LiteLLM, whose clients send ``[]`` when they name no model: until 2026-12-07
    that key had every model, the default's restriction dropped); a request naming a team
    (``team`` or ``team_id``) or an expiry (``duration`` or ``expires``) keeps its own. A
    default budget is its exact decimal text, read as a request's is."""
    given = {
        name
        for name, value in document.items()
        if value is not None and not (name == "models" and value == [])
    }
    crossed = {"team_id": "team", "duration": "expires"}
    filled = dict(document)
    for name, value in defaults.items():
        if name not in given and crossed.get(name) not in given:
            filled[name] = f"{value:f}" if isinstance(value, Decimal) else value
    return filled


def management_routes(accounts: Accounts, auth: Authenticator) -> dict[tuple[str, str], Handler]:
    store = accounts.store

    async def generate(scope: Scope, receive: Receive, send: Send) -> None:
        require_master(await auth.authenticate(request_headers(scope)))
        document = await read_json(receive, accounts.body_timeout)
        # a chosen ``key`` too: every key is generated here (keys.generate_key)
        known_fields(document, KEY_FIELDS, "/key/generate")
        document = _with_key_defaults(document, accounts.key_defaults)
        one_value(document, "team", "team_id")
        now = datetime.now(UTC)
        key = generate_key()
        record = KeyRecord(
            key_hash=hash_key(key),
            key_alias=optional_str(document, "key_alias"),
            team=optional_str(document, "team") or optional_str(document, "team_id"),
            models=requested_models(document, accounts.model_names),
            max_budget_usd=optional_money(document, "max_budget"),
            rpm_limit=optional_int(document, "rpm_limit", low=1, high=MAX_RPM_LIMIT),
            expires_at=requested_expiry(document, now),
            created_at=now,
        )
        await asyncio.to_thread(store.insert_key, record)
        await accounts.virtual_keys.learn(record.key_hash)
        await send_json(send, 200, {"key": key, **record.to_dict()})

    async def info(scope: Scope, receive: Receive, send: Send) -> None:
        principal = await auth.authenticate(request_headers(scope))
        query = query_of(scope, frozenset({"key", "key_hash"}), "GET /key/info")
        if "key" in query:  # a secret in a URL ends up in access logs and proxies' histories
            raise secret_in_query(
                "key",
                "; ask with key_hash=<its SHA-256 hex digest>, or call with the key itself as "
                "the bearer token",
            )
        wanted = key_hash(query.get("key_hash"))
        if principal.kind != "master":
            if principal.key_hash is None or (wanted and wanted != principal.key_hash):
                raise ProxyError(
                    403,
                    "a virtual key may only read its own information",
                    code="forbidden",
                    reason="auth",
                )
            wanted = principal.key_hash
        if not wanted:
            raise ProxyError(
                400,
                "key_hash: required with the master key",
                param="key_hash",
                code="missing_required_parameter",
            )
        record = await asyncio.to_thread(store.get_key, wanted)
        if record is None:
            raise ProxyError(404, "no such key", param="key_hash", code="key_not_found")
        hashes = record.spend_key_hashes
        # its flags from the rows its spend counts (this host's outboxes' included)
        figures = functools.partial(store.spent_and_flagged, key_hashes=hashes, since=None)
        spent, flagged = await asyncio.to_thread(figures)
        info = {**record.to_dict(), "spend": f"{spent:f}", **flagged}
        await send_json(send, 200, {"key_hash": wanted, "info": info})

    async def delete(scope: Scope, receive: Receive, send: Send) -> None:
        require_master(await auth.authenticate(request_headers(scope)))
        document = await read_json(receive, accounts.body_timeout)
        known_fields(document, KEY_DELETE_FIELDS, "/key/delete")
        keys, hashes = document.get("keys", []), document.get("key_hashes", [])
        for param, given in (("keys", keys), ("key_hashes", hashes)):
            # an item that is not text is refused, not skipped: the caller meant it deleted
            if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
                raise ProxyError(
                    400, f"{param}: expected a list of strings", param=param, code="invalid_type"
                )
        wanted = [hash_key(k) for k in keys]
        wanted += [d for h in hashes if (d := key_hash(h, "key_hashes"))]
        if not wanted:
            raise ProxyError(
                400,
                "keys: give the keys (or key_hashes) to delete",
                param="keys",
                code="missing_required_parameter",
            )
        deleted = await asyncio.to_thread(store.delete_keys, wanted)
        for digest in wanted:
            accounts.virtual_keys.forget(digest)
        if not deleted:
            raise ProxyError(404, "none of these keys exist", param="keys", code="key_not_found")
        await send_json(send, 200, {"deleted_keys": deleted})

    async def customer_new(scope: Scope, receive: Receive, send: Send) -> None:
        require_master(await auth.authenticate(request_headers(scope)))
        document = await read_json(receive, accounts.body_timeout)
        known_fields(document, END_USER_FIELDS, "/customer/new")
        one_value(document, "user_id", "end_user_id")
        user_id = _user_id(document.get("user_id") or document.get("end_user_id"), "user_id")
        budget = optional_money(document, "max_budget")
        now = datetime.now(UTC)
        record = EndUserRecord(
            end_user_id=user_id,
            budget_usd=budget,
            budget_period=_period(document, "total" if budget is not None else None),
            blocked=bool(_blocked(document)),
            created_at=now,
            updated_at=now,
        )
        await asyncio.to_thread(store.create_end_user, record)
        await accounts.budgets.reset_end_user(user_id)
        await send_json(send, 200, record.to_dict())

    async def customer_update(scope: Scope, receive: Receive, send: Send) -> None:
        require_master(await auth.authenticate(request_headers(scope)))
        document = await read_json(receive, accounts.body_timeout)
        known_fields(document, END_USER_FIELDS, "/customer/update")
        one_value(document, "user_id", "end_user_id")
        user_id = _user_id(document.get("user_id") or document.get("end_user_id"), "user_id")
        changes: dict[str, Any] = {}
        if "max_budget" in document:
            changes["budget_usd"] = optional_money(document, "max_budget")
        if "budget_period" in document:
            changes["budget_period"] = _period(document, None)
        blocked = _blocked(document)
        if blocked is not None:
            changes["blocked"] = blocked
        try:
            record = await asyncio.to_thread(store.update_end_user, user_id, changes)
        except ProxyError as exc:  # no record: one known from their calls gets one (LiteLLM's)
            if exc.status != 404 or not await asyncio.to_thread(record_if_called, store, user_id):
                raise
            record = await asyncio.to_thread(store.update_end_user, user_id, changes)
        if record.budget_usd is not None and record.budget_period is None:
            # a budget without a period (given as null, or never given) counts over all time
            total = {"budget_period": "total"}
            record = await asyncio.to_thread(store.update_end_user, user_id, total)
        await accounts.budgets.reset_end_user(user_id)
        await send_json(send, 200, record.to_dict())

    async def customer_info(scope: Scope, receive: Receive, send: Send) -> None:
        require_master(await auth.authenticate(request_headers(scope)))
        user_id = _user_id(
            query_of(scope, frozenset({"end_user_id"}), "GET /customer/info").get("end_user_id"),
            "end_user_id",
        )
        # a record, or calls of theirs (since their last deletion): known_end_users
        record = await asyncio.to_thread(known_end_user, store, user_id)
        if record is None:
            raise ProxyError(404, f"no end user {user_id!r}", code="end_user_not_found")
        # beside each spend figure: its calls at an estimate, quarantined, and of no known
        # price, from the same rows (this host's outboxes' included); each counts the calls
        # since their last deletion, as their budget does (AccountStore.counted_since)
        figures = functools.partial(store.spent_and_flagged, end_user=user_id)
        total, flagged = await asyncio.to_thread(figures, since=None)
        body: dict[str, Any] = {**record.to_dict(), "total_spend": f"{total:f}", **flagged}
        if record.budget_period is not None:
            start, _ = period_window(record.budget_period, datetime.now(UTC))
            period_spend, period_flags = total, flagged  # a total budget's period is all time
            if start is not None:
                period_spend, period_flags = await asyncio.to_thread(figures, since=start)
            body["period_start"] = start.isoformat() if start else None
            body["period_spend"] = f"{period_spend:f}"
            body["period_flags"] = period_flags
            if record.budget_usd is not None:
                body["remaining"] = f"{max(record.budget_usd - period_spend, 0):f}"
        await send_json(send, 200, body)

    return {
        ("POST", "/key/generate"): generate,
        ("GET", "/key/info"): info,
        ("POST", "/key/delete"): delete,
        ("POST", "/customer/new"): customer_new,
        ("POST", "/customer/update"): customer_update,
        ("GET", "/customer/info"): customer_info,
    }
