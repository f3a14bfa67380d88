"""Who may spend what: the proxy's virtual keys, end-user budgets, rate limits and spend reads.

:class:`Accounts` puts the pieces together for the app: the key check the authenticator
consults after the master key, the management and spend routes, and :meth:`Accounts.admit`, run
for each edit once its form is read and before anything is forwarded (model allowed for the key,
the key's rpm, the end user's blocked flag, the key's and end user's budgets). It is switched on
by ``general_settings.master_key``: without one the proxy is open, keys cannot exist and the
management endpoints answer 403.

Shared state: keys and end users live in the ledger's database (``database_url``), counters in
Redis (``router_settings.redis_url``, or ``redis_host`` / ``redis_port`` / ``redis_password``,
or a Redis Cluster's ``redis_startup_nodes``; else LiteLLM's cache's Redis:
``litellm_settings.cache_params`` with ``cache: true``, or the ``REDIS_CLUSTER_NODES``
environment variable; else ``TRACKING_REDIS_URL``), under the key prefix
``TRACKING_REDIS_PREFIX`` (default ``tracking:proxy:``); after a Redis error they are kept by
the instance and Redis is tried again ``TRACKING_REDIS_RETRY_SECONDS`` later (default 5); a
worker's budget holds are released ``TRACKING_REDIS_LEASE_SECONDS`` (default 48) after it
stopped renewing its lease, dead (:mod:`.redis_holds`). Without Redis the counters live in the
process (one instance), or in a SQLite file the workers of ``tracking serve --workers N`` share
(:mod:`.machine_counters`).

How the call's event learns the key: :meth:`Accounts.admit` adds ``user_api_key_hash``,
``user_api_key_alias`` and ``team`` to the call's ``metadata``, which the SDK's call path copies
into the event's ``api_key_hash``, ``key_alias`` and ``team`` (and so into the ledger).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..redis_outage import (
    RETRY_ENV,
    retry_interval_from_environment,
    settings_redis_url,
    timeout_from_environment,
)
from ..request import end_user_of
from .budgets import Budgets, Reservation, settlings_done
from .errors import ProxyError
from .keys import VirtualKeys, cache_seconds_from_environment
from .machine_counters import COUNTERS_FILE_ENV, MachineCounters
from .ratelimit import RateLimiter
from .redis_holds import lease_from_environment
from .shared_counters import SOCKET_TIMEOUT, Counters, LocalCounters, RedisCounters

if TYPE_CHECKING:
    from datetime import datetime

    from ..config import ProxyConfig
    from .auth import Authenticator, KeyCheck, Principal
    from .json_io import Receive, Scope, Send

__all__ = [
    "CUSTOMER_PREFIX",
    "END_USER_PREFIX",
    "PREFIX_ENV",
    "REDIS_ENV",
    "RETRY_ENV",
    "Accounts",
    "end_user_aliases",
    "redis_url_of",
]

log = logging.getLogger("tracking.proxy")

REDIS_ENV = "TRACKING_REDIS_URL"
PREFIX_ENV = "TRACKING_REDIS_PREFIX"

Handler = Callable[["Scope", "Receive", "Send"], Awaitable[None]]


def redis_url_of(config: ProxyConfig) -> str | None:
    """The Redis the instances share, as the router's settings name it (LiteLLM's keys: a
    Redis Cluster by its ``redis_startup_nodes``, a ``redis+cluster://`` URL), else as
    LiteLLM's cache's settings do (``litellm_settings.cache_params``, ``REDIS_CLUSTER_NODES``:
    :func:`~tracking.redis_outage.cache_redis_url`), else ``TRACKING_REDIS_URL``."""
    return (
        settings_redis_url(config.router_settings)
        or config.litellm_settings.redis_url
        or os.environ.get(REDIS_ENV)
        or None
    )


class Accounts:
    def __init__(self, config: ProxyConfig) -> None:
        from .account_store import AccountStore

        settings = config.general_settings
        self.enabled = bool(settings.master_key)
        #: the whole proxy's budget holds with or without keys (litellm_settings.max_budget)
        self.proxy_budget = config.litellm_settings.max_budget is not None
        self.enforced_params = settings.enforced_params
        #: ``/spend/*`` on a proxy without a master key: refused unless the config opens them.
        self.open_spend_reads = settings.allow_open_spend_reads
        #: how long a management request's JSON body may take to arrive (a 408 past it)
        self.body_timeout = settings.request_read_timeout
        self.model_names = frozenset(config.model_names())
        #: LiteLLM's default_key_generate_params: what /key/generate gives a key that names none
        self.key_defaults = config.litellm_settings.key_defaults
        self.store = AccountStore(
            settings.database_url, auto_migrate=True if settings.auto_migrate else None
        )
        cache_seconds = cache_seconds_from_environment()
        # counters: the keys' and end users', and the whole proxy's budget (keys or not)
        url = redis_url_of(config) if self.enabled or self.proxy_budget else None
        self.counters: Counters = _counters(url)
        self.virtual_keys = VirtualKeys(
            self.store,
            cache_seconds=cache_seconds,
            # instances sharing Redis, or --workers sharing the machine's counters file, learn
            # at once of a key stored by another
            changes=self.counters
            if isinstance(self.counters, RedisCounters | MachineCounters)
            else None,
        )
        self.rate_limiter = RateLimiter(self.counters)
        self.budgets = Budgets(config, self.store, self.counters, cache_seconds=cache_seconds)

    @property
    def key_checks(self) -> tuple[KeyCheck, ...]:
        return (self.virtual_keys,) if self.enabled else ()

    def routes(self, auth: Authenticator) -> dict[tuple[str, str], Handler]:
        from .litellm_routes import litellm_routes
        from .management_routes import management_routes
        from .spend_routes import spend_routes

        routes: dict[tuple[str, str], Handler] = {}
        routes.update(spend_routes(auth, self.store, open_reads=self.open_spend_reads))
        managed = {**management_routes(self, auth), **litellm_routes(self, auth)}
        managed.update(end_user_aliases(managed))
        if self.enabled:
            routes.update(managed)
        else:
            for route in managed:
                routes[route] = _needs_master_key
        return routes

    async def admit(
        self,
        principal: Principal,
        params: dict[str, Any],
        model: str,
        now: datetime | None = None,
        request_id: str | None = None,
    ) -> Reservation:
        """Refuse the call (400/403/429) or hold its budget in the periods of ``now`` (the
        call's start) for the call ``request_id`` names; fills the call's key metadata."""
        if self.enforced_params:
            refuse_missing_params(self.enforced_params, params)
        if not principal.may_call(model):
            raise ProxyError(
                403,
                f"this key may not call model {model!r}",
                param="model",
                code="model_not_allowed",
                reason="model_not_allowed",
            )
        if principal.kind == "virtual":
            metadata = dict(params.get("metadata") or {})
            if "team" in metadata:  # a request's own metadata (tracking.proxy.client_metadata)
                raise ProxyError(
                    400,
                    "metadata.team: a virtual key's team is its own (set by /key/generate or "
                    "/key/update), never a request's",
                    param="metadata.team",
                    code="invalid_value",
                )
            metadata["user_api_key_hash"] = principal.key_hash
            if principal.key_alias:
                metadata["user_api_key_alias"] = principal.key_alias
            if principal.team:
                metadata["team"] = principal.team
            params["metadata"] = metadata
        if not self.enabled:
            if self.proxy_budget:  # no keys or end users to hold: the whole proxy's alone
                return await self.budgets.reserve(
                    principal, params, model, accounts=False, now=now, request_id=request_id
                )
            return Reservation()
        await self.rate_limiter.admit(principal)
        return await self.budgets.reserve(principal, params, model, now=now, request_id=request_id)

    async def aclose(self) -> None:
        import asyncio

        await settlings_done()  # settlings whose callers were cancelled still run
        await self.counters.aclose()
        await asyncio.to_thread(self.store.close)


def _counters(redis_url: str | None) -> Counters:
    """Redis when configured; else the machine's file shared by ``--workers N``; else this
    process alone."""
    if redis_url:
        return RedisCounters(
            redis_url,
            prefix=os.environ.get(PREFIX_ENV) or "tracking:proxy:",
            retry_interval=retry_interval_from_environment(),
            socket_timeout=timeout_from_environment(SOCKET_TIMEOUT),
            lease=lease_from_environment(),
        )
    shared_file = os.environ.get(COUNTERS_FILE_ENV)
    if shared_file:
        return MachineCounters(shared_file)
    return LocalCounters()


def refuse_missing_params(enforced: tuple[str, ...], params: Mapping[str, Any]) -> None:
    """A 400 naming the first of ``enforced`` (``general_settings.enforced_params``, ``user``
    for ``enforce_user_param``) the call does not carry, before anything is held or sent."""
    metadata = params.get("metadata")
    for name in enforced:
        if name == "user":
            if end_user_of(params)[0] is None:
                raise ProxyError(
                    400,
                    "user: this proxy requires every call to name its end user (user or "
                    "safety_identifier; general_settings.enforce_user_param)",
                    param="user",
                    code="missing_required_parameter",
                    reason="validation",
                )
            continue
        key = name.removeprefix("metadata.")
        if not isinstance(metadata, Mapping) or metadata.get(key) in (None, ""):
            raise ProxyError(
                400,
                f"{name}: this proxy requires every call to carry it "
                "(general_settings.enforced_params)",
                param=name,
                code="missing_required_parameter",
                reason="validation",
            )


#: LiteLLM serves each ``/customer/*`` route under its older name too, ``/end_user/*``
#: (``customer_endpoints.py``, out of its schema); scripts written against either name work here.
END_USER_PREFIX = "/end_user/"
CUSTOMER_PREFIX = "/customer/"


def end_user_aliases(
    routes: Mapping[tuple[str, str], Handler],
) -> dict[tuple[str, str], Handler]:
    """``routes``' ``/customer/*`` routes again under LiteLLM's ``/end_user/*`` names."""
    return {
        (method, END_USER_PREFIX + path.removeprefix(CUSTOMER_PREFIX)): handler
        for (method, path), handler in routes.items()
        if path.startswith(CUSTOMER_PREFIX)
    }


async def _needs_master_key(scope: Scope, receive: Receive, send: Send) -> None:
    raise ProxyError(
        403,
        "keys and end users need general_settings.master_key: this proxy is open",
        code="master_key_required",
    )
