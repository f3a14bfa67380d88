"""Attempts the upstream may have billed although we never learnt how they ended.

An attempt whose request went out whole but whose answer never came back whole (the read timed
out, the connection dropped while we waited or read, a 2xx answer we cannot read) may well have
been carried out, and billed, upstream. Recording such a call as a failure costing $0 would
under-state spend, so the call path counts these attempts and the call's event carries an
*estimate* for them: what each could be expected to cost
(:func:`tracking.pricing.estimate.estimate_call_cost`), with ``cost_source="estimate"``. A call
that failed costs that estimate; a call that succeeded after such an attempt costs its own
price plus the estimate (:func:`with_unknown_outcomes`). A failed call whose last answer
reported what it billed (``APIError.billed_usage``) costs that plus the estimate. A model without
a price stays unpriced (``cost_usd`` None), never $0; when only some lost attempts asked such a
model, the priced parts are a lower bound, still ``"estimate"``, whose ``price_ref`` names each
unpriced part (``estimate:outcome-unknown:unpriced:<model>``).

An attempt cancelled (``asyncio`` cancellation, a ``KeyboardInterrupt``) while its request was
in flight is counted too: whether the upstream got it whole cannot be known, and a client that
gives up does not stop the upstream's work. So is a 2xx answer whose reading ended with an
exception that is no typed failure (a bug of ours, a cancellation while it was read): the
upstream billed it, and nothing we could read says what for.

Attempts that cannot have been billed are not counted: a connection refused or timed out before
it was made, a request body that could not be written whole, or any HTTP error answer, even one
whose body broke off or stalled after its status line (the transports hand it on as that status
with an empty body: :func:`tracking.http.send_sync`, ``AiohttpSender.post``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

import httpx

from .errors import APIResponseError, TrackingError
from .pricing import UNPRICED, Cost
from .pricing.estimate import ESTIMATE_REF, estimate_unknown_outcomes

if TYPE_CHECKING:
    from .request import ImageEditRequest

__all__ = [
    "ESTIMATE_REF",
    "estimate_unknown_outcomes",
    "outcome_unknown",
    "with_unknown_outcomes",
]

#: Transport failures that happen only once the request was written whole.
_AFTER_SENDING = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def outcome_unknown(outcome: object, error: BaseException) -> bool:
    """True when an attempt that failed with ``error`` may have been billed.

    ``outcome`` is what the transport gave back: the exception it raised (a cancellation or a
    ``KeyboardInterrupt`` too: the drivers hand every one back), or the answer.
    """
    if isinstance(outcome, _AFTER_SENDING):
        return True
    if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
        return True  # the caller was interrupted with the request in flight
    status = getattr(outcome, "status", None)
    if not isinstance(status, int) or status >= 300:
        return False
    if not isinstance(error, TrackingError):
        return True  # a 2xx, billed, whose reading broke (a bug of ours, a cancellation)
    return (
        isinstance(error, APIResponseError)
        # an answer that said what it billed (tokens or an amount) is known
        and error.billed_usage is None
        and error.billed_usd is None
    )


def with_unknown_outcomes(
    cost: Cost,
    unknown: Sequence[ImageEditRequest],
    *,
    failed: bool,
    last: bool,
    day: date | None = None,
) -> Cost:
    """The call's cost with its ``unknown`` outcomes added (see the module docstring).

    ``unknown`` holds the request of each such attempt, in order: after a fallback they ask
    another model than the call's last request, and each is estimated as what it asked.
    ``last``: the call ended on the last of them (``cost`` prices that attempt's failure).
    ``day``: the day whose prices apply (the call's start, as ``cost``'s; None: today).
    """
    if failed and last and cost.source == "estimate":
        # The pricing already estimated the last attempt (a 2xx it could not read): the
        # estimate covers the others. A call that ended on another failure priced by
        # estimate (a refusal estimated from its input) adds every lost attempt.
        unknown = unknown[:-1]
        if not unknown:
            return cost
    estimate, unpriced = _estimate_each(unknown, day)
    # a failure that itself billed nothing adds nothing: the lost attempts are the cost
    own = None if failed and cost.source != "estimate" and not cost.usd else cost
    if own is not None and own.usd is None:
        return own  # the call's own model has no price: it stays unpriced, never a part
    parts = [part for part in (own, estimate) if part is not None]
    if not parts:
        return UNPRICED
    refs = [part.price_ref for part in parts if part.price_ref]
    refs += [f"{ESTIMATE_REF}:unpriced:{model}" for model in unpriced]
    return Cost(
        sum((part.usd for part in parts if part.usd is not None), Decimal(0)),
        own.per_image_usd if own is not None else None,
        "estimate",
        "+".join(refs) or None,
    )


def _estimate_each(
    unknown: Sequence[ImageEditRequest], day: date | None
) -> tuple[Cost | None, list[str]]:
    """The estimates of ``unknown`` summed, each request once with its count (None when none
    has a price), and the models of those without one: the sum is then a lower bound, which
    the price reference says, so that a part does not pass for the whole."""
    counts: dict[int, tuple[ImageEditRequest, int]] = {}
    for asked in unknown:
        _, seen = counts.get(id(asked), (asked, 0))
        counts[id(asked)] = (asked, seen + 1)
    total, refs, unpriced = None, [], []
    for asked, attempts in counts.values():
        each = estimate_unknown_outcomes(asked, attempts, day)
        if each.usd is None:
            unpriced.append(asked.model)
            continue
        total = each.usd if total is None else total + each.usd
        refs.append(each.price_ref or "")
    if total is None:
        return None, list(dict.fromkeys(unpriced))
    return Cost(total, None, "estimate", "+".join(dict.fromkeys(refs))), list(
        dict.fromkeys(unpriced)
    )
