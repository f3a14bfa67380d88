"""The fake upstream's billing: OpenAI's Usage and Costs admin endpoints over what it served.

``GET /v1/organization/usage/images`` and ``GET /v1/organization/costs`` answer as OpenAI's
administration API documents them: pages of daily buckets (``bucket_width=1d``) from
``start_time`` (inclusive) to ``end_time`` (exclusive, default now), ``limit`` buckets a page
(default 7) and a ``page`` cursor in ``next_page``, results grouped by ``group_by`` (usage:
``model``, ``size``, ``source``, ``project_id``; costs: ``line_item``, ``project_id``). They need
an admin key (``Authorization: Bearer sk-admin-...``; any other key gets 401).

Every edit and generation the fake answered is billed from its own price table
(:data:`BILLED_PRICES`, OpenAI's published token prices, written here independently of the
SDK's table), under the Usage API's ``source`` ``image.edit`` or ``image.generation``;
:attr:`Billing.factor` bills a model at a different price, so a test can plant drift. Costs
come as JSON numbers, as OpenAI sends them; line items are ``"<model>, image edits"``;
everything is in the project ``proj_fake``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

__all__ = ["BILLED_PRICES", "Billing", "ServedEdit", "add_admin_routes"]

#: USD per 1M tokens: (text input, image input, image output), from OpenAI's model pages.
BILLED_PRICES: dict[str, tuple[Decimal, Decimal, Decimal]] = {
    "gpt-image-1": (Decimal(5), Decimal(10), Decimal(40)),
    "gpt-image-1-mini": (Decimal(2), Decimal("2.5"), Decimal(8)),
    "gpt-image-1.5": (Decimal(5), Decimal(8), Decimal(32)),
    "gpt-image-2": (Decimal(5), Decimal(8), Decimal(30)),
}
_DAY = 86_400
_PROJECT = "proj_fake"


@dataclass(frozen=True, slots=True)
class ServedEdit:
    """One edit the fake answered, as its bill sees it."""

    at: float
    model: str
    images: int
    size: str | None
    text_tokens: int
    image_tokens: int
    output_tokens: int
    #: the Usage API's ``source``: ``image.edit`` or ``image.generation``
    source: str = "image.edit"


@dataclass
class Billing:
    served: list[ServedEdit] = field(default_factory=list)
    #: model -> multiplier applied to its bill (1 when absent): plants drift for tests
    factor: dict[str, Decimal] = field(default_factory=dict)

    def record(self, model: str, answer: dict[str, Any], source: str = "image.edit") -> None:
        usage = answer.get("usage") or {}
        details = usage.get("input_tokens_details") or {}
        self.served.append(
            ServedEdit(
                at=time.time(),
                model=model,
                images=len(answer.get("data") or ()),
                size=answer.get("size"),
                text_tokens=int(details.get("text_tokens", 0)),
                image_tokens=int(details.get("image_tokens", 0)),
                output_tokens=int(usage.get("output_tokens", 0)),
                source=source,
            )
        )

    def cost(self, edit: ServedEdit) -> Decimal:
        text, image, output = BILLED_PRICES.get(edit.model, (Decimal(5), Decimal(8), Decimal(30)))
        total = edit.text_tokens * text + edit.image_tokens * image + edit.output_tokens * output
        return total / 1_000_000 * self.factor.get(edit.model, Decimal(1))


BILLING = web.AppKey("billing", Billing)


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    return web.json_response(body, status=status)


def _admin_window(request: web.Request) -> tuple[int, int, int, int] | web.Response:
    """The query's window and page, or the error answer (a non-admin key, a bad window)."""
    if not request.headers.get("Authorization", "").startswith("Bearer sk-admin-"):
        return _error(401, "Invalid admin key: an organization admin key is required.")
    try:
        start = int(request.query["start_time"])
        end = int(request.query.get("end_time", time.time()))
        limit = int(request.query.get("limit", "7"))
        page = int(request.query.get("page", "0"))
    except (KeyError, ValueError):
        return _error(400, "start_time is required; start_time, end_time, limit are integers")
    if request.query.get("bucket_width", "1d") != "1d" or not 1 <= limit <= 31 or page < 0:
        return _error(400, "bucket_width must be 1d and limit between 1 and 31")
    return start, end, limit, page


def _page(
    request: web.Request, buckets: list[dict[str, Any]], limit: int, page: int
) -> web.Response:
    chosen = buckets[page : page + limit]
    more = page + limit < len(buckets)
    return web.json_response(
        {
            "object": "page",
            "data": chosen,
            "has_more": more,
            "next_page": str(page + limit) if more else None,
        }
    )


def _days(start: int, end: int) -> list[tuple[int, int]]:
    first = start - start % _DAY
    return [(day, day + _DAY) for day in range(first, end, _DAY) if day + _DAY > start]


def add_admin_routes(app: web.Application, billing: Billing) -> None:
    app[BILLING] = billing

    async def usage(request: web.Request) -> web.Response:
        window = _admin_window(request)
        if isinstance(window, web.Response):
            return window
        start, end, limit, page = window
        group_by = request.query.getall("group_by", [])
        sources = request.query.getall("sources", [])
        buckets = []
        for day_start, day_end in _days(start, end):
            groups: dict[tuple[Any, ...], dict[str, Any]] = {}
            for edit in billing.served:
                if not (max(day_start, start) <= edit.at < min(day_end, end)):
                    continue
                if sources and edit.source not in sources:
                    continue
                values = {
                    "model": edit.model,
                    "size": edit.size,
                    "source": edit.source,
                    "project_id": _PROJECT,
                }
                key = tuple(values[g] for g in group_by if g in values)
                result = groups.setdefault(
                    key,
                    {
                        "object": "organization.usage.images.result",
                        "images": 0,
                        "num_model_requests": 0,
                        **{g: values[g] for g in group_by if g in values},
                    },
                )
                result["images"] += edit.images
                result["num_model_requests"] += 1
            buckets.append(_bucket(day_start, day_end, list(groups.values())))
        return _page(request, buckets, limit, page)

    async def costs(request: web.Request) -> web.Response:
        window = _admin_window(request)
        if isinstance(window, web.Response):
            return window
        start, end, limit, page = window
        group_by = request.query.getall("group_by", [])
        buckets = []
        for day_start, day_end in _days(start, end):
            sums: dict[tuple[Any, ...], Decimal] = {}
            for edit in billing.served:
                if max(day_start, start) <= edit.at < min(day_end, end):
                    values = {"line_item": f"{edit.model}, image edits", "project_id": _PROJECT}
                    key = tuple(values[g] for g in group_by if g in values)
                    sums[key] = sums.get(key, Decimal(0)) + billing.cost(edit)
            results = []
            for key, amount in sums.items():
                result: dict[str, Any] = {
                    "object": "organization.costs.result",
                    "amount": {"value": float(amount), "currency": "usd"},
                    "line_item": None,
                    "project_id": None,
                }
                names = [g for g in group_by if g in ("line_item", "project_id")]
                result.update(dict(zip(names, key, strict=True)))
                results.append(result)
            buckets.append(_bucket(day_start, day_end, results))
        return _page(request, buckets, limit, page)

    app.router.add_get("/v1/organization/usage/images", usage)
    app.router.add_get("/v1/organization/costs", costs)


def _bucket(start: int, end: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "bucket",
        "start_time": start,
        "end_time": end,
        "start_time_iso": datetime.fromtimestamp(start, UTC).isoformat(),
        "end_time_iso": datetime.fromtimestamp(end, UTC).isoformat(),
        "results": results,
    }
