"""``/spend/logs`` and ``/spend/keys``: what was spent, read from the ledger (``spend_logs``).

The master key sees every row; a virtual key sees only the rows of its own calls (filtered by its
hashes; asking for another key's rows finds none). ``/spend/logs`` pages newest first (``page``
from 1, ``page_size`` up to 1000) and filters by key (LiteLLM's ``api_key``, the secret hashed
as keys are stored, or ``api_key_hash``), by call (LiteLLM's ``request_id``), by end user
(``user``) and UTC time (``start_date`` inclusive, ``end_date`` exclusive; dates or ISO-8601
datetimes); LiteLLM's ``user_id`` (an internal user, which this proxy has not) is a 400 saying
what to use instead. When calls matching the
same filters were recorded at an estimate or are in the ledger's quarantine says how many and
what they cost (``estimated_requests`` / ``estimated_usd``, ``quarantined_requests`` /
``quarantined_usd``, the names every spend report gives them). ``/spend/keys`` sums spend per
key, dearest first, paged the same way (100 keys a page unless ``page_size`` says otherwise),
with the same pairs per key. Both read the database alone (``spend_logs`` and its quarantine),
their amounts and their flags alike: calls this host keeps in its local outboxes (waiting for the
database, or refused by it and its quarantine) count there once shipped, as every other host's
do (``/key/info`` and ``/customer/info``, a budget's figures, count this host's too).
On a proxy without a master key (open) they answer 403 (``code: spend_reads_closed``): anyone
could otherwise read every end user's spend; ``general_settings.allow_open_spend_reads: true``
opens them deliberately.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .auth import request_headers
from .errors import ProxyError
from .json_io import Receive, Scope, Send, date_window, query_of, send_json
from .keys import asked_key_hash
from .limits import MAX_PAGE, MAX_PAGE_SIZE, bounded_text, end_user_id, query_int

if TYPE_CHECKING:
    from .account_store import AccountStore
    from .auth import Authenticator, Principal

__all__ = ["spend_routes"]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The query parameters each route takes (any other is a 400, see :func:`query_of`).
_PAGE_QUERY = frozenset({"page", "page_size"})
#: ``/spend/logs``' parameters, in the order ``/openapi.json`` lists them.
LOGS_PARAMETERS = (
    "page",
    "page_size",
    "api_key",
    "api_key_hash",
    "request_id",
    "user",
    "start_date",
    "end_date",
)
_LOGS_QUERY = frozenset(LOGS_PARAMETERS)
#: LiteLLM's filters with no counterpart here, and what to use instead (a 400 saying so).
INTERNAL_USER_HINT = (
    "LiteLLM's internal users (/user/*) are not kept here; filter by the key "
    "(api_key, or api_key_hash) or by the end user"
)
_LOGS_HINTS = {"user_id": f"{INTERNAL_USER_HINT} (user)"}


def _page_of(rows: list[Any], page: int, page_size: int, total: int) -> dict[str, Any]:
    return {
        "data": rows,
        "page": page,
        "page_size": page_size,
        "total": total,
        "has_more": page * page_size < total,
    }


def _own_hashes(principal: Principal) -> tuple[str, ...] | None:
    """The key hashes a caller is confined to (its own, with those it had before it was
    regenerated); None for the master key (and an open proxy)."""
    if principal.kind == "virtual":
        assert principal.key_hash is not None
        return principal.spend_key_hashes
    return None


def spend_routes(
    auth: Authenticator, store: AccountStore, *, open_reads: bool = False
) -> dict[tuple[str, str], Handler]:
    async def caller(scope: Scope) -> Principal:
        principal = await auth.authenticate(request_headers(scope))
        if principal.kind == "open" and not open_reads:
            raise ProxyError(
                403,
                "spend reads need general_settings.master_key: this proxy has none, so anyone "
                "could read every end user's spend. Set a master key, or set "
                "general_settings.allow_open_spend_reads: true to open them deliberately",
                type="permission_error",
                code="spend_reads_closed",
                reason="auth",
            )
        return principal

    async def logs(scope: Scope, receive: Receive, send: Send) -> None:
        principal = await caller(scope)
        query = query_of(scope, _LOGS_QUERY, "GET /spend/logs", _LOGS_HINTS)
        page = query_int(query, "page", 1, MAX_PAGE)
        page_size = query_int(query, "page_size", 100, MAX_PAGE_SIZE)
        asked = asked_key_hash(query)
        wanted = _own_hashes(principal)
        if wanted is None:
            wanted = (asked,) if asked is not None else None
        elif asked is not None and asked not in wanted:
            wanted = ()  # a virtual key asking for another key's rows: it has none of them
        start, end = date_window(query)
        request_id = query.get("request_id")
        filters: dict[str, Any] = {
            "key_hashes": wanted,
            "end_user": end_user_id(query.get("user")),
            "request_id": bounded_text(request_id, "request_id") if request_id else None,
            "start": start,
            "end": end,
        }
        rows, total = await asyncio.to_thread(
            store.spend_logs, **filters, page=page, page_size=page_size
        )
        body = _page_of(rows, page, page_size, total)
        # calls recorded at an estimate, and calls billed whose rows the database refused
        body.update(await asyncio.to_thread(store.flagged_summary, **filters))
        await send_json(send, 200, body)

    async def keys(scope: Scope, receive: Receive, send: Send) -> None:
        principal = await caller(scope)
        query = query_of(scope, _PAGE_QUERY, "GET /spend/keys")
        page = query_int(query, "page", 1, MAX_PAGE)
        page_size = query_int(query, "page_size", 100, MAX_PAGE_SIZE)
        summary, total = await asyncio.to_thread(
            store.key_summary, _own_hashes(principal), page=page, page_size=page_size
        )
        await send_json(send, 200, _page_of(summary, page, page_size, total))

    return {("GET", "/spend/logs"): logs, ("GET", "/spend/keys"): keys}
