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

from typing import TYPE_CHECKING

import httpx

from .errors import APIResponseError
from .pricing import UNPRICED, Cost
from .pricing.estimate import estimate_call_cost

if TYPE_CHECKING:
    from .request import ImageEditRequest

__all__ = [
    "ESTIMATE_REF",
    "estimate_unknown_outcomes",
    "outcome_unknown",
    "with_unknown_outcomes",
]

#: ``price_ref`` of an estimated row (the price entry's own reference follows it).
ESTIMATE_REF = "estimate:outcome-unknown"
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


def estimate_unknown_outcomes(request: ImageEditRequest | None, attempts: int) -> Cost:
    """The estimated cost of ``attempts`` attempts of ``request`` whose outcome is unknown."""
    if request is None or attempts <= 0:
        return UNPRICED
    candidates = [request.base_model, f"{request.provider}/{request.upstream_model}", request.model]
    for model in dict.fromkeys(m for m in candidates if m):
        each = estimate_call_cost(
            model,
            request.size,
            request.quality,
            request.n or 1,
            prompt_chars=len(request.prompt),
            input_images=len(request.images),
        )
        if each.usd is not None:
            return Cost(each.usd * attempts, None, "estimate", f"{ESTIMATE_REF}:{each.price_ref}")
    return UNPRICED


def with_unknown_outcomes(
    cost: Cost, request: ImageEditRequest | None, attempts: int, *, failed: bool
) -> Cost:
    """The call's cost with ``attempts`` unknown outcomes added (see the module docstring)."""
    if failed and cost.source == "estimate":
        # The pricing already estimated the last attempt (a 2xx it could not read): the
        # estimate covers the others.
        attempts -= 1
        if attempts <= 0:
            return cost
    estimate = estimate_unknown_outcomes(request, attempts)
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
