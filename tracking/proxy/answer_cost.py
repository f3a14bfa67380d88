"""What an image call cost its client, as the headers of every answer the proxy gives it.

Success or failure, an answer to ``POST /v1/images/edits`` or ``/v1/images/generations`` says
what the call cost, as its ledger row records it:

* ``x-tracking-response-cost``: USD as a decimal string, or ``unpriced`` (billed at a price
  nobody knows: never a made-up 0);
* ``x-tracking-cost-source``: how that figure was worked out, the ledger's ``cost_source``
  (``usage``, ``table``, ``custom``, ``estimate``, ``unpriced``), or ``not-billed`` for a call
  that cost nothing: refused by the proxy before anything was sent (no ledger row), or failed
  without the upstream billing it (its row: $0, ``price_ref`` ``failed-call:not-billed``, or
  ``failed-call:not-billed:<reason>`` when the provider's terms say why, e.g. ``moderated``);
* ``x-litellm-response-cost``: the same figure, for LiteLLM's clients, when it is a number.

A failure the upstream may have billed (an answer lost after the request went out whole, a 2xx
that could not be read, a refusal that reported its charge, an accepted job whose result could
not be had) carries its estimate or its reported charge, with its source (``estimate`` for an
estimate). An answer to a failure whose cost is not known (a bug of ours after the call had
started) carries no cost header: its ledger row, under the answer's ``x-request-id``, says.
A streamed call's error event (after its ``200``), and its completed event, carry the same
figures in a ``tracking`` object.
"""

from __future__ import annotations

from decimal import Decimal

from ..errors import TrackingError
from ..pricing import NOT_BILLED

__all__ = [
    "NOT_BILLED_HEADERS",
    "NOT_BILLED_SOURCE",
    "cost_fields",
    "cost_headers",
    "failure_cost",
    "failure_cost_fields",
]

#: ``x-tracking-cost-source`` of a call that cost nothing.
NOT_BILLED_SOURCE = "not-billed"


def cost_headers(cost_usd: Decimal | None, source: str | None) -> dict[str, str]:
    """The cost headers of an answer for a call that cost ``cost_usd`` (None: unpriced)."""
    cost = "unpriced" if cost_usd is None else str(cost_usd)
    headers = {"x-tracking-response-cost": cost}
    if source is not None:
        headers["x-tracking-cost-source"] = source
    if cost_usd is not None:  # clients parse it as a number: an unpriced call has none
        headers["x-litellm-response-cost"] = cost
    return headers


#: The cost headers of a call refused before anything was sent, or failed without a charge.
NOT_BILLED_HEADERS = cost_headers(Decimal(0), NOT_BILLED_SOURCE)


def failure_cost(exc: BaseException) -> dict[str, str]:
    """The cost headers for a call that ended with ``exc``, as its event recorded them (none
    when the call's event did not say: ``exc`` is no :class:`~tracking.TrackingError` that
    ended a call)."""
    if not isinstance(exc, TrackingError) or exc.request_id is None:
        return {}
    if exc.price_ref is not None and exc.price_ref.startswith(NOT_BILLED.price_ref or ""):
        return dict(NOT_BILLED_HEADERS)
    return cost_headers(exc.cost_usd, exc.cost_source)


def cost_fields(request_id: str, headers: dict[str, str]) -> dict[str, str]:
    """A call's id and cost as a streamed event's ``tracking`` object (``request_id``,
    ``response_cost``, ``cost_source``: the ``x-tracking-*`` headers' values)."""
    fields = {"request_id": request_id}
    for name, value in headers.items():
        if name.startswith("x-tracking-"):
            fields[name.removeprefix("x-tracking-").replace("-", "_")] = value
    return fields


def failure_cost_fields(exc: BaseException) -> dict[str, str]:
    """:func:`cost_fields` of a call that ended with ``exc`` (none when its cost is not known)."""
    headers = failure_cost(exc)
    if not headers:
        return {}
    assert isinstance(exc, TrackingError) and exc.request_id is not None
    return cost_fields(exc.request_id, headers)
