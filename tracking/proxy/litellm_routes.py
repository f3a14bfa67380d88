"""LiteLLM's management routes beyond the basic ones, with LiteLLM's request and response shapes.

``GET /key/list``, ``POST /key/update``, ``POST /key/regenerate``, ``GET /customer/list``,
``POST /customer/delete|block|unblock``, and ``/global/spend``, ``/global/spend/keys``,
``/global/spend/models``, ``/global/spend/end_users``, ``/global/spend/teams`` and
``/global/spend/report`` (the ledger's ``spend_logs`` summed per key, model, end user, team or
day; the report keeps one key's, end user's or team's calls with LiteLLM's ``api_key`` (by the
key's digest), ``customer_id`` and ``team_id``), and ``/spend/tags`` and ``/global/spend/tags``
(summed per request tag: each call once in each of its tags, :func:`.litellm_store.spend_by_tag`).
All of them take the master key. Keys are
still never echoed, except the new one that ``/key/regenerate`` makes (once, like
``/key/generate``); a listing names keys by hash.

Shapes follow LiteLLM's proxy docs (docs.litellm.ai/docs/proxy/virtual_keys, /customers and
/cost_tracking, read 2026-12-03): ``/key/list`` answers ``keys``, ``total_count``, ``current_page``
and ``total_pages``; ``/customer/*`` name end users by ``user_id`` (lists of ``user_ids``), and know
those who called as well as those with a record (:mod:`.known_end_users`; ``/customer/list`` a page
at a time, ``page`` and ``size``, where LiteLLM's lists all at once); ``/global/spend/keys`` answers
``api_key`` + ``total_spend`` rows. The tag routes' shapes (read 2026-12-07): ``/spend/tags``
answers ``[{"individual_request_tag", "log_count", "total_spend"}]`` (LiteLLM's release notes of
v1.24.6, github.com/BerriAI/litellm/releases/tag/v1.24.6, "View spend per tag"), and
``/global/spend/tags`` ``{"spend_per_tag": [{"name", "spend", "log_count"}]}`` with its ``tags``
filter (comma-separated; ``all-tags`` is every tag), what LiteLLM's
``spend_management_endpoints.py`` (``global_view_spend_tags``, ``ui_get_spend_by_tags``) answers
its admin UI; LiteLLM requires both dates there, here they are optional as on every spend route.
LiteLLM's tag routes take ``start_date``, ``end_date`` and (``/global/spend/tags``) ``tags``, no
paging: ``offset``, ``page``, ``page_size`` and the like are a 400 saying so (``limit``, ours,
keeps the dearest tags). LiteLLM sums tags per day, both dates' days included
(``spend_date <= end_date``), so on these two routes an ``end_date`` given as a date covers that
whole day (``start_date=2026-12-07&end_date=2026-12-07`` is that day's spend; until 2026-12-07
it was nothing); a datetime is an exact end, left out, as on every route.
Where LiteLLM returns a float we return the amount as a decimal
string at the ledger's scale, as every spend figure is (money is never a float here); a figure of
ours beside LiteLLM's has the name it has in every report: ``/global/spend`` and its per-key, model,
end-user and team rows, ``/customer/list``'s end users and ``/global/spend/report``'s entries (and
their ``metadata`` or ``model_details`` entries) add ``estimated_requests`` / ``estimated_usd``
(calls recorded at an estimate) and ``quarantined_requests`` / ``quarantined_usd`` (calls whose rows
the database refused), each pair only when there are such calls; ``/customer/list``'s end users also
``unpriced_requests`` (calls of no known price, left out of ``spend``), as ``/customer/info`` gives
them, and like it they count the calls this host keeps in its local outboxes; the ``/global/spend*``
figures read the database alone, amounts and flags alike (:mod:`.litellm_store`).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import known_end_users, litellm_store
from .auth import request_headers
from .errors import ProxyError
from .json_io import (
    Receive,
    Scope,
    Send,
    date_window,
    known_fields,
    one_value,
    optional_int,
    optional_money,
    optional_str,
    query_of,
    read_json,
    send_json,
)
from .keys import asked_key_hash, generate_key, hash_key
from .limits import (
    MAX_PAGE,
    MAX_PAGE_SIZE,
    MAX_RPM_LIMIT,
    bounded_text,
    end_user_id,
    key_hash,
    query_int,
)
from .management_routes import KEY_FIELDS, requested_expiry, requested_models, require_master
from .spend_routes import INTERNAL_USER_HINT

if TYPE_CHECKING:
    from .account_store import EndUserRecord, KeyRecord
    from .accounts import Accounts
    from .auth import Authenticator

__all__ = ["USER_IDS_FIELDS", "litellm_routes"]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
_MAX_IDS = 1000
#: The fields ``/customer/delete``, ``/customer/block`` and ``/customer/unblock`` take.
USER_IDS_FIELDS = frozenset({"user_ids"})
#: The query parameters the listings take (any other is a 400, see :func:`query_of`).
_KEY_LIST_QUERY = frozenset({"page", "size", "key_alias", "team_id", "return_full_object"})
#: ``/customer/list``'s page (ours: LiteLLM's lists every end user at once).
_CUSTOMER_LIST_QUERY = frozenset({"page", "size"})
_DATES = frozenset({"start_date", "end_date"})
#: ``/global/spend/report``'s: LiteLLM's grouping and filters (its ``internal_user_id`` aside).
REPORT_PARAMETERS = ("group_by", "api_key", "api_key_hash", "customer_id", "team_id")
_REPORT_HINTS = {"internal_user_id": f"{INTERNAL_USER_HINT} (customer_id)"}
#: The tag routes' paging words: LiteLLM's routes take none (their parameters are start_date,
#: end_date and, on /global/spend/tags, tags) and answer every tag at once; one given here is
#: a 400 saying what keeps an answer small, never ignored (a second "page" would repeat the
#: first, read as more spend).
_TAG_PAGING = (
    "the tag routes answer every tag at once, dearest first, as LiteLLM's do (no paging); "
    f"limit keeps the dearest (1 to {MAX_PAGE_SIZE}, default 100), tags (on "
    "/global/spend/tags) the ones named, and start_date / end_date a window"
)
_TAG_HINTS = dict.fromkeys(("offset", "page", "page_size", "size", "skip", "cursor"), _TAG_PAGING)


#: ``/key/update`` and ``/key/regenerate``: the key (by secret or hash) and the fields to change.
_NAMED_KEY_FIELDS = KEY_FIELDS | {"key", "key_hash"}


def _key_hash_of(document: dict[str, Any]) -> str:
    """The key a body names: ``key`` (the secret, or a hash as LiteLLM also accepts) or
    ``key_hash`` (a SHA-256 digest); both must name the same key."""
    key = optional_str(document, "key")
    named = key_hash(optional_str(document, "key_hash"))
    if key is not None:
        is_digest = len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key)
        from_key = key.lower() if is_digest else hash_key(key)  # a digest in either case
        if named is not None and named != from_key:
            raise ProxyError(
                400,
                "key_hash: names another key than key; give one of them, or both of one key",
                param="key_hash",
                code="invalid_value",
            )
        return from_key
    if named is None:
        raise ProxyError(
            400,
            "key: required (the key, or key_hash)",
            param="key",
            code="missing_required_parameter",
        )
    return named


def _key_changes(document: dict[str, Any], accounts: Accounts) -> dict[str, Any]:
    """Column values for the fields a ``/key/update`` body gives (absent fields stay)."""
    changes: dict[str, Any] = {}
    if "key_alias" in document:
        changes["key_alias"] = optional_str(document, "key_alias")
    one_value(document, "team", "team_id")
    if "team_id" in document or "team" in document:
        changes["team"] = optional_str(document, "team_id") or optional_str(document, "team")
    if "models" in document:
        models = requested_models(document, accounts.model_names)
        changes["models"] = list(models) if models is not None else None
    if "max_budget" in document:
        changes["max_budget_usd"] = optional_money(document, "max_budget")
    if "rpm_limit" in document:
        changes["rpm_limit"] = optional_int(document, "rpm_limit", low=1, high=MAX_RPM_LIMIT)
    if "duration" in document or "expires" in document:
        changes["expires_at"] = requested_expiry(document, datetime.now(UTC))
    return changes


async def _budget_changed(accounts: Accounts, record: KeyRecord, changes: dict[str, Any]) -> None:
    """A key's ``max_budget`` given to ``/key/update`` or ``/key/regenerate`` drops its counter
    here, in Redis (or the machine's file) for every instance: the calls made while it was off
    never reached it (until 2026-12-07 ``/key/regenerate`` kept it). The record's new
    ``updated_at`` starts it again on every instance too, should this one die first."""
    if "max_budget_usd" in changes:
        await accounts.budgets.reset_key(record.spend_key_hashes[0])


def _user_ids(document: dict[str, Any], what: str) -> list[str]:
    """The end users a body of ``what`` names, each by the one rule calls use (exact text, never
    stripped: ``" mallory"`` is not ``"mallory"``; bounded; no control characters); any other
    field is a 400, never dropped (:func:`known_fields`)."""
    known_fields(document, USER_IDS_FIELDS, what)
    ids = document.get("user_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ProxyError(
            400,
            "user_ids: expected a non-empty list of end-user ids",
            param="user_ids",
            code="invalid_type",
        )
    if len(ids) > _MAX_IDS:
        raise ProxyError(
            400,
            f"user_ids: at most {_MAX_IDS} at once",
            param="user_ids",
            code="array_above_max_length",
        )
    return list(dict.fromkeys(bounded_text(i, "user_ids") for i in ids))


def _filter(query: dict[str, str], param: str) -> str | None:
    """A text filter of a listing's query (absent or empty: none), bounded as stored text is."""
    value = query.get(param)
    return bounded_text(value, param) if value else None


#: The spellings of a boolean query parameter LiteLLM's proxy (FastAPI, pydantic) takes.
_QUERY_BOOLS = {
    **dict.fromkeys(("true", "t", "1", "yes", "y", "on"), True),
    **dict.fromkeys(("false", "f", "0", "no", "n", "off"), False),
}


def _query_bool(query: dict[str, str], param: str) -> bool:
    """A boolean query parameter (absent or empty: false), spelled as LiteLLM's proxy takes it
    (``true``, ``1``, ``yes``, ``on``...); anything else is a 400, never read as false (until
    2026-12-07 ``return_full_object=1`` answered hashes where LiteLLM answers the keys)."""
    raw = query.get(param, "")
    value = _QUERY_BOOLS.get(raw.strip().lower()) if raw else False
    if value is None:
        raise ProxyError(400, f"{param}: expected true or false", param=param, code="invalid_value")
    return value


def _tags(query: dict[str, str]) -> list[str] | None:
    """``/global/spend/tags``' ``tags``: LiteLLM's comma-separated tags to keep (each exact
    text, bounded; at most ``_MAX_IDS``); None (every tag) when absent, empty, or naming
    LiteLLM's ``all-tags``."""
    raw = query.get("tags")
    if not raw:
        return None
    wanted = [t for t in raw.split(",") if t]
    if len(wanted) > _MAX_IDS:
        raise ProxyError(
            400, f"tags: at most {_MAX_IDS} at once", param="tags", code="array_above_max_length"
        )
    if not wanted or "all-tags" in wanted:
        return None
    return list(dict.fromkeys(bounded_text(t, "tags") for t in wanted))


def _customer(
    record: EndUserRecord, spend: tuple[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An end user as LiteLLM names it (``user_id``, ``blocked``, ``spend``), with ours; with
    ``spend``, what it spent and the flagged pairs of its calls."""
    body = {"user_id": record.end_user_id, **record.to_dict()}
    if record.budget_usd is not None:
        body["max_budget"] = body["budget"]
    if spend is not None:
        amount, flagged = spend
        body.update({"spend": amount, **flagged})
    return body


def _key(record: KeyRecord) -> dict[str, Any]:
    return {"token": record.key_hash, "team_id": record.team, **record.to_dict()}


def litellm_routes(accounts: Accounts, auth: Authenticator) -> dict[tuple[str, str], Handler]:
    store = accounts.store

    async def master(scope: Scope) -> None:
        require_master(await auth.authenticate(request_headers(scope)))

    async def key_list(scope: Scope, receive: Receive, send: Send) -> None:
        await master(scope)
        query = query_of(scope, _KEY_LIST_QUERY, "GET /key/list")
        page = query_int(query, "page", 1, MAX_PAGE)  # past the last page: an empty list
        size = query_int(query, "size", 10, MAX_PAGE_SIZE)
        records, total = await asyncio.to_thread(
            litellm_store.list_keys,
            store,
            page=page,
            size=size,
            key_alias=_filter(query, "key_alias"),
            team=_filter(query, "team_id"),
        )
        full = _query_bool(query, "return_full_object")
        await send_json(
            send,
            200,
            {
                "keys": [_key(r) if full else r.key_hash for r in records],
                "total_count": total,
                "current_page": page,
                "total_pages": math.ceil(total / size) if total else 0,
            },
        )

    async def key_update(scope: Scope, receive: Receive, send: Send) -> None:
        await master(scope)
        document = await read_json(receive, accounts.body_timeout)
        known_fields(document, _NAMED_KEY_FIELDS, "/key/update")
        key_hash = _key_hash_of(document)
        changes = _key_changes(document, accounts)
        record = await asyncio.to_thread(litellm_store.update_key, store, key_hash, changes)
        await _budget_changed(accounts, record, changes)
        accounts.virtual_keys.forget(key_hash)  # its cached settings are stale
        await accounts.virtual_keys.learn(key_hash)  # still a known key, with the new settings
        await send_json(send, 200, _key(record))

    async def key_regenerate(scope: Scope, receive: Receive, send: Send) -> None:
        await master(scope)
        document = await read_json(receive, accounts.body_timeout)
        known_fields(document, _NAMED_KEY_FIELDS, "/key/regenerate")
        old_hash = _key_hash_of(document)
        changes = _key_changes(document, accounts)
        old = await asyncio.to_thread(store.get_key, old_hash)
        if old is None:
            raise litellm_store.missing_key()
        key = generate_key()
        changes["key_hash"] = hash_key(key)
        # the ledger's rows keep the hash each call was made with: the key's spend (and
        # budget) is summed over every hash it had
        changes["prior_key_hashes"] = [*old.prior_key_hashes, old_hash]
        record = await asyncio.to_thread(litellm_store.update_key, store, old_hash, changes)
        await _budget_changed(accounts, record, changes)
        accounts.virtual_keys.forget(old_hash)  # the old secret stops here at once
        await accounts.virtual_keys.learn(record.key_hash)  # the new one works at once
        await send_json(send, 200, {"key": key, **_key(record)})

    async def customer_list(scope: Scope, receive: Receive, send: Send) -> None:
        await master(scope)
        query = query_of(scope, _CUSTOMER_LIST_QUERY, "GET /customer/list")
        page = query_int(query, "page", 1, MAX_PAGE)  # past the last page: an empty list
        size = query_int(query, "size", MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        listing = functools.partial(known_end_users.list_end_users, page=page, size=size)
        listed = await asyncio.to_thread(listing, store)
        ids = [record.end_user_id for record in listed]
        spend = await asyncio.to_thread(litellm_store.end_user_spend, store, ids)
        nothing: tuple[str, dict[str, Any]] = (litellm_store.money(0), {})
        body = [_customer(r, spend.get(r.end_user_id, nothing)) for r in listed]
        await send_json(send, 200, body)

    async def customer_delete(scope: Scope, receive: Receive, send: Send) -> None:
        await master(scope)
        ids = _user_ids(await read_json(receive, accounts.body_timeout), "/customer/delete")
        deleted = await asyncio.to_thread(known_end_users.delete_end_users, store, ids)
        for user_id in ids:
            await accounts.budgets.reset_end_user(user_id)
        if not deleted:
            raise ProxyError(
                404, "none of these end users exist", param="user_ids", code="end_user_not_found"
            )
        await send_json(send, 200, {"deleted_customers": len(deleted), "deleted_user_ids": deleted})

    def blocking(blocked: bool) -> Handler:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await master(scope)
            document = await read_json(receive, accounts.body_timeout)
            ids = _user_ids(document, "/customer/block" if blocked else "/customer/unblock")
            records = await asyncio.to_thread(litellm_store.set_blocked, store, ids, blocked)
            for user_id in ids:
                accounts.budgets.forget(user_id)
            field = "blocked_users" if blocked else "unblocked_users"
            await send_json(send, 200, {field: [_customer(r) for r in records]})

        return handler

    def window(
        scope: Scope,
        what: str,
        *more: str,
        hints: dict[str, str] | None = None,
        whole_end_day: bool = False,
    ) -> tuple[dict[str, str], datetime | None, datetime | None]:
        query = query_of(scope, _DATES.union(more), what, hints)
        return (query, *date_window(query, whole_end_day=whole_end_day))

    async def spend_total(scope: Scope, receive: Receive, send: Send) -> None:
        await master(scope)
        _, start, end = window(scope, "GET /global/spend")
        total, flagged = await asyncio.to_thread(litellm_store.total_spend, store, start, end)
        await send_json(send, 200, {"spend": total, **flagged})

    def spend_per(group: str, name: str, route: str) -> Handler:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await master(scope)
            query, start, end = window(scope, f"GET {route}", "limit")
            limit = query_int(query, "limit", 100, MAX_PAGE_SIZE)
            rows = await asyncio.to_thread(
                litellm_store.spend_by, store, group, start=start, end=end, limit=limit
            )
            await send_json(
                send,
                200,
                [{name: v, "total_spend": s, "requests": n, **f} for v, s, n, f in rows],
            )

        return handler

    def spend_tags(route: str) -> Handler:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await master(scope)
            more = ("limit", "tags") if route == "/global/spend/tags" else ("limit",)
            # LiteLLM sums tags per day, both dates' days included: so is a date here
            query, start, end = window(
                scope, f"GET {route}", *more, hints=_TAG_HINTS, whole_end_day=True
            )
            limit = query_int(query, "limit", 100, MAX_PAGE_SIZE)
            listing = functools.partial(litellm_store.spend_by_tag, store, start=start, end=end)
            rows = await asyncio.to_thread(listing, limit=limit, tags=_tags(query))
            if route == "/spend/tags":
                body: Any = [
                    {"individual_request_tag": t, "log_count": n, "total_spend": s, **f}
                    for t, s, n, f in rows
                ]
            else:
                tagged = [{"name": t, "spend": s, "log_count": n, **f} for t, s, n, f in rows]
                body = {"spend_per_tag": tagged}
            await send_json(send, 200, body)

        return handler

    async def spend_report(scope: Scope, receive: Receive, send: Send) -> None:
        await master(scope)
        query, start, end = window(
            scope, "GET /global/spend/report", *REPORT_PARAMETERS, hints=_REPORT_HINTS
        )
        # LiteLLM's filters: a key (the secret hashed, as keys are stored), an end user, a team
        only = {
            "api_key": asked_key_hash(query),
            "customer": end_user_id(query.get("customer_id"), "customer_id"),
            "team": _filter(query, "team_id"),
        }
        # a key's report is LiteLLM's per-key shape, as its api_key filter answers; an end
        # user's, per customer
        default = "api_key" if only["api_key"] else "customer" if only["customer"] else "team"
        group = query.get("group_by", default)
        if group not in ("team", "customer", "api_key"):
            raise ProxyError(
                400,
                "group_by: one of team, customer, api_key",
                param="group_by",
                code="invalid_value",
            )
        report = await asyncio.to_thread(
            litellm_store.spend_report,
            store,
            group,
            start=start,
            end=end,
            only={k: v for k, v in only.items() if v is not None},
        )
        await send_json(send, 200, report)

    return {
        ("GET", "/key/list"): key_list,
        ("POST", "/key/update"): key_update,
        ("POST", "/key/regenerate"): key_regenerate,
        ("GET", "/customer/list"): customer_list,
        ("POST", "/customer/delete"): customer_delete,
        ("POST", "/customer/block"): blocking(True),
        ("POST", "/customer/unblock"): blocking(False),
        ("GET", "/global/spend"): spend_total,
        ("GET", "/global/spend/keys"): spend_per("api_key", "api_key", "/global/spend/keys"),
        ("GET", "/global/spend/models"): spend_per("model", "model", "/global/spend/models"),
        ("GET", "/global/spend/end_users"): spend_per(
            "customer", "end_user", "/global/spend/end_users"
        ),
        ("GET", "/global/spend/teams"): spend_per("team", "team", "/global/spend/teams"),
        ("GET", "/global/spend/report"): spend_report,
        ("GET", "/global/spend/tags"): spend_tags("/global/spend/tags"),
        ("GET", "/spend/tags"): spend_tags("/spend/tags"),
    }
