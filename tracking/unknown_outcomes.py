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
a price stays unpriced (``cost_usd`` None), never $0.

An attempt cancelled (``asyncio`` cancellation, a ``KeyboardInterrupt``) while its request was
in flight is counted too: whether the upstream got it whole cannot be known, and a client that
gives up does not stop the upstream's work.

Attempts that cannot have been billed are not counted: a connection refused or timed out before
it was made, a request body that could not be written whole, or any HTTP error answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

from .errors import APIResponseError
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
    return (
        isinstance(error, APIResponseError)
        # an answer that said what it billed (tokens or an amount) is known
        and error.billed_usage is None
        and error.billed_usd is None
        and isinstance(status, int)
        and status < 300
    )


def with_unknown_outcomes(cost: Cost, unknown: Sequence[ImageEditRequest], *, failed: bool) -> Cost:
    """The call's cost with its ``unknown`` outcomes added (see the module docstring).

    ``unknown`` holds the request of each such attempt, in order: after a fallback they ask
    another model than the call's last request, and each is estimated as what it asked.
    """
    if failed and cost.source == "estimate":
        # The pricing already estimated the last attempt (a 2xx it could not read): the
        # estimate covers the others.
        unknown = unknown[:-1]
        if not unknown:
            return cost
    estimate = _estimate_each(unknown)
    if failed and cost.source != "estimate" and not cost.usd:  # the failure itself billed nothing
        return estimate
    if estimate.usd is None or cost.usd is None:
        return cost  # nothing to add to, or nothing known to add: the call's own price stands
    return Cost(
        cost.usd + estimate.usd,
        cost.per_image_usd,
        "estimate",
        f"{cost.price_ref}+{estimate.price_ref}" if cost.price_ref else estimate.price_ref,
    )


def _estimate_each(unknown: Sequence[ImageEditRequest]) -> Cost:
    """The estimates of ``unknown`` summed, each request once with its count; unpriced when
    any of them has no price (a part of the sum would pass for the whole)."""
    counts: dict[int, tuple[ImageEditRequest, int]] = {}
    for asked in unknown:
        _, seen = counts.get(id(asked), (asked, 0))
        counts[id(asked)] = (asked, seen + 1)
    total, refs = None, []
    for asked, attempts in counts.values():
        each = estimate_unknown_outcomes(asked, attempts)
        if each.usd is None:
            return UNPRICED
        total = each.usd if total is None else total + each.usd
        refs.append(each.price_ref or "")
    if total is None:
        return UNPRICED
    return Cost(total, None, "estimate", "+".join(dict.fromkeys(refs)))
