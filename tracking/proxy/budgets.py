"""Budgets of keys and end users: reserve a call's maximum expected cost, settle to the real one.

Before a call is forwarded, :meth:`Budgets.reserve` works out the most it can be expected to cost
(:func:`max_expected_cost`, from the pricing table for its model, ``n``, ``size``, ``quality``,
prompt and input images) and reserves that amount on each budget that applies: the key's
``max_budget`` (its total), the end user's budget for the current period (a UTC day, a UTC
calendar month, or all time) and the whole proxy's (LiteLLM's ``litellm_settings.max_budget``
and ``budget_duration``: every call counts, the master key's too, against all the ledger's
spend in the period). A budget that cannot take the reservation refuses the call with
429 before any upstream call. The worst case is worked out at the prices of the day the call
started, as its event is priced (:func:`~tracking.pricing.price_day`). After the call,
:meth:`Reservation.settle` replaces the reservation with the real cost, that of the call's event
whatever the call ended with (0 for a failure that was not billed); a call that started and
broke before its event keeps its reservation counted (:meth:`Reservation.keep`). Before each
attempt after the first (a retry, a fallback) :meth:`Budgets.cover` grows the hold, if it must,
to what the call may then be billed: the most each of its attempts whose answer was lost (or,
streamed, was answered 2xx and broke off before its first event) may have cost, plus the most the
next attempt may cost. A budget that cannot take that withholds the
attempt: the call ends with the failure of the attempt before it, and costs what that one may
have cost.

Counters are shared by every instance through Redis (:mod:`tracking.proxy.shared_counters`) and
start from the ledger's figure, so the check-and-reserve is atomic across instances. An end user's
figure counts from their last deletion (``/customer/delete``) when that is later than the period's
start (:meth:`~.account_store.AccountStore.counted_since`, read with the ledger as the counter
starts, not per call): an end user deleted and given a budget again is not refused for what they
spent before, as LiteLLM's customer row made again starts from $0 (until 2026-12-07 they were). The
deletion and the new budget both drop the end user's counters (:meth:`Budgets.reset_end_user`), in
Redis for every instance, so the next call starts them from the ledger again; with Redis away,
once it is back (:meth:`~.shared_counters.RedisCounters.drop`). A key's or an end user's
counters in Redis are also started again when they were seeded before the record last changed
(its ``updated_at``, read with the cached record, never per call; a key made before 2026-12-07
and not changed since has none, and its counter is trusted until idle): the change holds on
every instance even if the one that took it died before reaching Redis. A call in flight when
its end user is deleted keeps its hold, which the counter started again counts (its cost, once
settled), though the end user's spend from the deletion leaves it out: until that counter next
starts from the ledger, the budget errs toward refusing by at most what such calls cost.
Overshoot bound:
while the reservation covers the real cost (it does whenever the upstream bills at most the table's
price for the requested size and quality and at most :data:`INPUT_IMAGE_TOKENS` tokens per input
image, retries and fallbacks included) a budget is never exceeded, whatever the concurrency;
otherwise it can be exceeded by at most what the calls in flight at that moment cost beyond their
reservations. A model without a known price is refused (400, before any upstream call) for a key or
end user with a budget, since its spend could not be counted;
``general_settings.allow_unpriced_with_budgets: true`` lets it through, reserving nothing. With
Redis down budgets are computed from the ledger (plus this instance's calls in flight) and the
holds taken and ended meanwhile are replayed on recovery (:mod:`tracking.proxy.shared_counters`).

With the budget store (the database) away, a call naming an end user is served as any other when
that user has no budget and no block: the proxy keeps the list of the end users that have one
(read again every ``cache_seconds`` while the database answers). For a user on that list, or
while the list was never read, ``general_settings.budget_store_unavailable`` decides: ``deny``
(the default) refuses the call with 503 ``budget_store_unavailable``; ``allow`` serves it without
the end user's budget (a block last seen is still honoured).
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from ..pricing import price_day
from ..pricing.estimate import (
    INPUT_IMAGE_TOKENS,
    entry_max_cost,
    estimate_incomplete_stream,
    max_expected_cost,
)
from ..request import end_user_of
from .account_store import read_store
from .errors import ProxyError
from .prices import priced_models
from .shared_counters import UNITS_PER_USD, Counters, to_units

if TYPE_CHECKING:
    from ..config import ProxyConfig
    from ..request import ImageEditRequest
    from ..router import Deployment
    from .account_store import AccountStore, EndUserRecord
    from .auth import Principal

__all__ = [
    "INPUT_IMAGE_TOKENS",
    "PERIODS",
    "Budgets",
    "Reservation",
    "max_expected_cost",
    "period_window",
]

log = logging.getLogger("tracking.proxy")

PERIODS = ("daily", "monthly", "total")
#: Readings of the ledger a counter is seeded from, should its calls in flight change meanwhile.
_SEED_ATTEMPTS = 3
#: End users with a budget or a block the proxy keeps a list of (beyond it: the setting decides).
_MAX_USERS_WITH_RULES = 100_000
#: Input image tokens reserved per input image for token-priced models (the upstream reports the
#: real count only after the call).
T = TypeVar("T")


def period_window(period: str, now: datetime) -> tuple[datetime | None, str]:
    """The start of the current period (None for all time) and its counter name."""
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start.strftime("d%Y-%m-%d")
    if period == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start, start.strftime("m%Y-%m")
    return None, "total"


async def _from_store(read: Callable[..., T], *args: Any) -> T:
    return await read_store(
        "budget",
        "budgets cannot be checked right now (database unavailable); try again shortly",
        read,
        *args,
    )


def _key_counter(budget_key: str) -> str:
    return f"key:{budget_key}:total"


def _user_counter(end_user_id: str, window: str) -> str:
    return f"user:{end_user_id}:{window}"


def _usd(units: int) -> str:
    """``units`` (1e-8 USD) as dollars, exactly, with at least 4 decimal places: rounded to 4, a
    call's cost and the little left short of it read the same ("$0.0140 does not fit in the
    $0.0140 left")."""
    whole, _, places = f"{Decimal(units) / UNITS_PER_USD:.8f}".rstrip("0").partition(".")
    return f"${whole}.{places.ljust(4, '0')}"


@dataclass(slots=True)
class Reservation:
    """What one call holds on its budgets until it is settled or released."""

    counters: Counters | None = None
    held: list[tuple[str, int]] = field(default_factory=list)
    done: bool = False
    #: counter -> (its limit, what to call it in a refusal, the ledger's filter for its spend,
    #: when its budget last changed: :func:`_changed`)
    limits: dict[str, tuple[int, tuple[str, str], dict[str, Any], int | None]] = field(
        default_factory=dict
    )
    #: The day whose prices the call's worst cases are worked out at: the day it started, as
    #: its event is priced (:func:`~tracking.pricing.price_day`); None: today.
    day: date | None = None
    #: The call's request id (its ledger row's): while the reservation is in flight, a counter
    #: seeded from the ledger counts the call by its hold, not by its row (see
    #: :meth:`Budgets._reserve_one`).
    request_id: str | None = None

    async def settle(self, cost: Decimal | None) -> None:
        """Replace the reservation with the real cost (None: unpriced, counted as 0). Once:
        a reservation settled, released or kept is done, and a second settling changes
        nothing. A settling runs to its end even when its caller is cancelled (shutdown waits
        for it: :func:`settlings_done`)."""
        await self._end(to_units(cost) if cost is not None else 0)

    async def release(self) -> None:
        """Nothing was billed: the reservation is given back."""
        await self._end(0)

    async def keep(self) -> None:
        """The call's cost cannot be known (it may have been billed, and no event says what
        it cost): the reservation, its most expected cost, stays counted as its cost."""
        await self._end(None)

    async def _end(self, real: int | None) -> None:
        if self.done or self.counters is None:
            return
        self.done = True
        if not self.held:
            return
        # Its own task, shielded: a cancellation of the caller (a client gone, a worker
        # stopping) must not leave the counters after the one being told at the worst case.
        ending = asyncio.ensure_future(self._tell(self.counters, real))
        _ENDING.add(ending)
        ending.add_done_callback(_ENDING.discard)
        await asyncio.shield(ending)

    async def _tell(self, counters: Counters, real: int | None) -> None:
        for name, units in self.held:  # each counter is told the hold is over (even by 0)
            await counters.adjust(name, 0 if real is None else real - units, self)


#: Settlings under way, their callers perhaps cancelled (see :func:`settlings_done`).
_ENDING: set[asyncio.Future[None]] = set()


async def settlings_done() -> None:
    """Wait for the settlings under way, before the counters are closed at shutdown."""
    while _ENDING:
        await asyncio.gather(*_ENDING, return_exceptions=True)


class Budgets:
    """Reserves on the key's and the end user's budgets; the end users' records are cached."""

    def __init__(
        self,
        config: ProxyConfig,
        store: AccountStore,
        counters: Counters,
        *,
        cache_seconds: float,
    ) -> None:
        self.config = config
        self.store = store
        self.counters = counters
        self.cache_seconds = cache_seconds
        self._users: dict[str, tuple[EndUserRecord | None, float]] = {}
        #: model group -> what its calls may be priced as (see ``priced_models``)
        self._priced_as: dict[str, list[str]] = {}
        #: model group -> its deployments some of whose calls run on another model
        self._rerouted: dict[str, list[Deployment]] = {}
        self.allow_when_unavailable = config.general_settings.budget_store_unavailable == "allow"
        #: End users with a budget or a block, as last read (None: never read, or too many).
        self._with_rules: frozenset[str] | None = None
        self._with_rules_at = float("-inf")

    async def end_user(self, end_user_id: str) -> EndUserRecord | None:
        now = time.monotonic()
        cached = self._users.get(end_user_id)
        if cached is not None and now - cached[1] < self.cache_seconds:
            return cached[0]
        try:
            if now - self._with_rules_at >= self.cache_seconds:
                await self._read_rules(now)
            record = await _from_store(self.store.get_end_user, end_user_id)
        except ProxyError as unavailable:
            return self._without_store(end_user_id, cached, unavailable)
        if len(self._users) >= 10_000:
            self._users.clear()
        self._users[end_user_id] = (record, now)
        return record

    async def _read_rules(self, now: float) -> None:
        ids = await _from_store(self.store.end_users_with_rules, _MAX_USERS_WITH_RULES)
        self._with_rules = frozenset(ids) if ids is not None else None
        self._with_rules_at = now

    def _without_store(
        self,
        end_user_id: str,
        cached: tuple[EndUserRecord | None, float] | None,
        unavailable: ProxyError,
    ) -> EndUserRecord | None:
        """The end user's record while the store is away (see the module docstring)."""
        if self._with_rules is not None and end_user_id not in self._with_rules:
            return None  # no budget and no block: nothing to check
        if not self.allow_when_unavailable:
            raise ProxyError(
                503,
                f"end user {end_user_id!r} may have a budget, and budgets cannot be checked right "
                "now (database unavailable); try again shortly (general_settings."
                "budget_store_unavailable: allow serves such calls unchecked)",
                type="server_error",
                code=unavailable.code,
                reason="store_unavailable",  # counted among the proxy's refusals
                retry=True,
            ) from None
        log.warning("budget store unavailable: serving end user %r unchecked", end_user_id)
        last = cached[0] if cached is not None else None
        if last is not None and last.blocked:
            return last
        return None

    def forget(self, end_user_id: str) -> None:
        self._users.pop(end_user_id, None)
        self._with_rules_at = float("-inf")  # a budget or block may have come or gone

    async def reset_end_user(self, end_user_id: str) -> None:
        """After the end user's budget was set, changed or deleted (or the end user was): its
        cached record and its budget counters are forgotten (in Redis, or the machine's file,
        for every instance), so its next call counts from the ledger (calls made while its
        budget was off, or under another period, never reached those counters; after a
        deletion, only the calls since it count). With Redis away the reset is done once it is
        back; the other instances also start a counter again once they read the record's new
        ``updated_at`` (see the module docstring)."""
        self.forget(end_user_id)
        now = datetime.now(UTC)
        await self.counters.drop(
            [_user_counter(end_user_id, period_window(period, now)[1]) for period in PERIODS]
        )

    async def reset_key(self, budget_key: str) -> None:
        """After a key's budget was changed: its counter is forgotten (see
        :meth:`reset_end_user`; the other instances also start it again once they read the key's
        new ``updated_at``)."""
        await self.counters.drop([_key_counter(budget_key)])

    def _most_rerouted(
        self, model: str, params: Mapping[str, Any], day: date | None, expected: Decimal | None
    ) -> Decimal | None:
        """``expected``, or more: the most the call may cost on a model another than its
        deployment's that it runs on (a masked FLUX Kontext edit runs on FLUX Fill, billed at
        Fill's price by the deployment's terms), so that its hold covers what it is billed."""
        rerouted = self._rerouted.get(model)
        if rerouted is None:
            from .models import router_deployments

            rerouted = self._rerouted[model] = [
                d
                for d in router_deployments(self.config)
                if d.model_name == model and d.served_routes()
            ]
        costs = [
            cost
            for deployment in rerouted
            for _, entry in deployment.served_routes(day)
            if entry is not None and (cost := entry_max_cost(entry, params)) is not None
        ]
        if expected is not None:
            costs.append(expected)
        return max(costs, default=None)

    async def reserve(
        self,
        principal: Principal,
        params: Mapping[str, Any],
        model: str,
        *,
        accounts: bool = True,
        now: datetime | None = None,
        request_id: str | None = None,
    ) -> Reservation:
        """Hold the call's worst case on every budget that applies (``accounts=False``: a proxy
        without a master key, where only the whole proxy's does), in the periods ``now`` (the
        call's start: its ledger row's ``start_time``) is in; ``request_id`` is the call's (its
        ledger row's)."""
        user, _ = end_user_of(params)
        record = await self.end_user(user) if user is not None and accounts else None
        if record is not None and record.blocked:
            raise ProxyError(
                403,
                f"end user {record.end_user_id!r} is blocked on this proxy",
                param="safety_identifier" if params.get("safety_identifier") == user else "user",
                code="end_user_blocked",
                reason="blocked",
            )
        # (counter, limit, (whose, which budget), the ledger's filter for what was spent, when
        # the budget last changed)
        budgets: list[tuple[str, Decimal, tuple[str, str], dict[str, Any], int | None]] = []
        now = now or datetime.now(UTC)
        if principal.key_hash is not None and principal.max_budget_usd is not None:
            # named by the key's first hash and summed over all it had: a regenerated key
            # keeps its spend
            budgets.append(
                (
                    _key_counter(principal.budget_key or principal.key_hash),
                    principal.max_budget_usd,
                    (f"this key ({principal.key_alias or principal.key_hash[:12]})", "budget"),
                    {"key_hashes": principal.spend_key_hashes, "since": None},
                    _changed(principal.updated_at),
                )
            )
        if record is not None and record.budget_usd is not None:
            period = record.budget_period or "total"  # a budget without a period: all time
            start, window = period_window(period, now)
            budgets.append(
                (
                    _user_counter(record.end_user_id, window),
                    record.budget_usd,
                    (f"end user {record.end_user_id!r}", f"{period} budget"),
                    {"end_user": record.end_user_id, "since": start},
                    _changed(record.updated_at),
                )
            )
        settings = self.config.litellm_settings
        if settings.max_budget is not None:
            # the whole proxy's: every call counts, the master key's too (as LiteLLM's)
            start, window = period_window(settings.budget_period, now)
            budgets.append(
                (
                    f"proxy:{window}",
                    settings.max_budget,
                    ("the proxy", f"{settings.budget_period} budget (litellm_settings.max_budget)"),
                    {"since": start},
                    None,
                )
            )
        # priced as the call's event will be: at the prices of the day it started
        reservation = Reservation(self.counters, day=price_day(now), request_id=request_id)
        if not budgets:
            return reservation
        upstream = self._priced_as.get(model)
        if upstream is None:  # each deployment's model, and its own prices where it has them
            upstream = self._priced_as[model] = priced_models(self.config, model) or [model]
        expected = max_expected_cost(upstream, params, reservation.day)
        if params.get("mask") is not None:  # a masked FLUX Kontext edit runs on Fill
            expected = self._most_rerouted(model, params, reservation.day, expected)
        if expected is None and not self.config.general_settings.allow_unpriced_with_budgets:
            raise _unpriced(model, budgets[0][2][0])
        amount = to_units(expected) if expected is not None else 0
        try:
            for name, limit, label, ledger_filter, changed in budgets:
                limits = (to_units(limit), label, ledger_filter, changed)
                await self._reserve_one(name, amount, limits, reservation)
                reservation.held.append((name, amount))
                reservation.limits[name] = limits
        except BaseException:
            await reservation.release()
            raise
        return reservation

    async def cover(
        self,
        reservation: Reservation,
        lost: Sequence[ImageEditRequest],
        upcoming: ImageEditRequest,
    ) -> None:
        """Grow the call's hold, before an attempt after its first, to the most the call may be
        billed if it goes: each attempt that may have been billed (``lost``: answers lost, streams
        accepted that broke off) and ``upcoming`` at their most (an unpriced one, let through by
        ``allow_unpriced_with_budgets``, as 0).
        Raises the budget's 429 :class:`ProxyError` when it cannot take that: the attempt is
        withheld (:class:`~tracking.call_control.NotCovered`); so does an ``upcoming`` attempt
        at a model without a price (a fallback), which the budgets could not count, unless
        ``allow_unpriced_with_budgets``."""
        if not reservation.held or reservation.done:
            return
        next_most = estimate_incomplete_stream(upcoming, reservation.day)
        if next_most is None and not self.config.general_settings.allow_unpriced_with_budgets:
            who = reservation.limits[reservation.held[0][0]][1][0]
            refused = _unpriced(upcoming.model, who)
            log.warning("no further attempt for this call: %s", refused.message)
            raise refused
        most = (estimate_incomplete_stream(asked, reservation.day) or Decimal(0) for asked in lost)
        needed = to_units(sum(most, next_most or Decimal(0)))
        for index, (name, units) in enumerate(reservation.held):
            if needed <= units:
                continue
            try:
                await self._reserve_one(name, needed - units, reservation.limits[name], reservation)
            except ProxyError as refused:
                log.warning(
                    "no further attempt for this call: %s (%d attempt(s) lost, maybe billed)",
                    refused.message,
                    len(lost),
                )
                raise
            reservation.held[index] = (name, needed)

    async def _reserve_one(
        self,
        name: str,
        amount: int,
        limits: tuple[int, tuple[str, str], dict[str, Any], int | None],
        hold: Reservation,
    ) -> None:
        limit, label, ledger_filter, changed = limits
        result = await self.counters.reserve(name, amount, limit, None, hold, since=changed)
        for attempt in range(_SEED_ATTEMPTS + 1):
            if result is not None:
                break
            # Seeded from the ledger without the calls in flight on the counter, which their
            # holds count: a call's row is written before its hold settles, and a counter seeded
            # between the two counted the call twice (until 2026-12-06). Read again should one
            # of them settle (or another begin) meanwhile; the last attempt asks nothing (a call
            # that settles then may count twice: never less than once).
            last = attempt == _SEED_ATTEMPTS
            calls = None if last else await self.counters.calls_in_flight(name)
            read = functools.partial(self.store.spent, excluding=calls or (), **ledger_filter)
            spent = await _from_store(read)
            result = await self.counters.reserve(
                name, amount, limit, to_units(spent), hold, calls, since=changed
            )
        if result is None or result >= 0:
            return
        counted = -result - 1
        raise ProxyError(
            429,
            _refusal(label, limit, counted, amount),
            type="insufficient_quota",  # OpenAI's type for a spent quota; never retried
            code="budget_exceeded",
            reason="budget",
        )


def _changed(updated_at: datetime | None) -> int | None:
    """When an account record last changed, as :meth:`Counters.reserve`'s ``since``
    (microseconds since 1970; None: unknown)."""
    if updated_at is None:
        return None
    return calendar.timegm(updated_at.utctimetuple()) * 1_000_000 + updated_at.microsecond


def _refusal(label: tuple[str, str], limit: int, counted: int, amount: int) -> str:
    """Why a budget refused a call: reached (nothing left), or this call's worst case does not
    fit in what is left (a cheaper call, or one after others settle, may still pass)."""
    who, budget = label
    if counted >= limit:
        return (
            f"budget exceeded: {who} has reached its {budget} of {_usd(limit)} "
            f"(spent or reserved: {_usd(counted)})"
        )
    return (
        f"budget exceeded: this call's worst-case cost of {_usd(amount)} does not fit in the "
        f"{_usd(limit - counted)} left (of {_usd(limit)}) on the {budget} of {who} "
        f"(spent or reserved: {_usd(counted)}); a cheaper call (smaller size, lower quality, "
        "fewer images) may still fit"
    )


def _unpriced(model: str, who: str) -> ProxyError:
    return ProxyError(
        400,
        f"model {model!r} has no known price, and {who} has a budget that could not count its "
        "spend. Add a price (the config's prices: section or model_info, "
        "general_settings.prices_file, or `tracking prices import`), or set "
        "general_settings.allow_unpriced_with_budgets: true to let unpriced calls through.",
        param="model",
        code="model_unpriced",
        reason="budget",
    )
