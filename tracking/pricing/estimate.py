"""The most a call can be expected to cost, before it is sent: for budgets and lowest-cost routing.

From the price table for the model: the per-image price for the requested size and quality
(an unknown or ``auto`` size or quality takes the dearest the table lists) times ``n``, plus, for
models billed by tokens, an allowance for the input: at least one token per prompt character and
:data:`INPUT_IMAGE_TOKENS` per input image. None when no price is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _candidates, find_entry
from .table import PriceEntry

if TYPE_CHECKING:
    from ..request import ImageEditRequest

__all__ = [
    "INPUT_IMAGE_TOKENS",
    "PARTIAL_IMAGE_TOKENS",
    "estimate_incomplete_stream",
    "estimate_max_cost",
    "max_expected_cost",
]

#: Input image tokens allowed per image in an estimate (the largest inputs stay below it).
INPUT_IMAGE_TOKENS = 1_000
_MILLION = Decimal(1_000_000)


def _image_count(image: Any) -> int:
    if image is None:
        return 0
    return len(image) if isinstance(image, list) else 1


def _entry_cost(entry: PriceEntry, params: Mapping[str, Any]) -> Decimal | None:
    n = params.get("n") or 1
    quality, size = params.get("quality"), params.get("size")
    tables = entry.per_image
    chosen = (
        [tables[quality]]
        if isinstance(quality, str) and quality in tables
        else list(tables.values())
    )
    listed = {name for sizes in chosen for name in sizes}
    prices = [
        price
        for sizes in chosen
        for name, price in sizes.items()
        if size not in listed or name == size
    ]
    if not prices:
        return None
    total: Decimal = max(prices) * n
    if entry.tokens:
        prompt = params.get("prompt")
        text_tokens = len(prompt) if isinstance(prompt, str) else 0
        image_tokens = INPUT_IMAGE_TOKENS * _image_count(params.get("image"))
        total += entry.tokens.get("input_text", Decimal(0)) * text_tokens / _MILLION
        total += entry.tokens.get("input_image", Decimal(0)) * image_tokens / _MILLION
    return total


def estimate_max_cost(
    model: str, params: Mapping[str, Any], day: date | None = None
) -> Decimal | None:
    """The most one call with ``params`` (n, size, quality, prompt, image) may cost on ``model``
    (a provider prefix is allowed)."""
    keys = [model]
    if "/" in model:
        keys.append(model.split("/", 1)[1])
    entry = find_entry(keys, day or datetime.now(UTC).date())
    return _entry_cost(entry, params) if entry is not None else None


def max_expected_cost(
    models: Sequence[str], params: Mapping[str, Any], day: date | None = None
) -> Decimal | None:
    """The most a call can be expected to cost on any of ``models``; None when none is priced."""
    costs = [c for m in models if (c := estimate_max_cost(m, params, day)) is not None]
    return max(costs) if costs else None


#: Output tokens each partial image of a streamed call adds to its usage (OpenAI's image
#: generation guide: about 100 per partial image; the bundled fake upstream bills the same).
PARTIAL_IMAGE_TOKENS = 100


def estimate_incomplete_stream(
    request: ImageEditRequest, day: date | None = None
) -> Decimal | None:
    """What a streamed call that never reached its completed event may have cost.

    The upstream accepted the call and may bill it in full even though no usage came back: the
    most the call can cost (:func:`estimate_max_cost`'s allowance) plus its partial images'
    output tokens. None when no price is known for the model.
    """
    entry = find_entry(_candidates(request), day or datetime.now(UTC).date())
    if entry is None:
        return None
    params = {
        "n": request.n,
        "size": request.size,
        "quality": request.quality,
        "prompt": request.prompt,
        "image": list(request.images),
    }
    total = _entry_cost(entry, params)
    if total is None:
        return None
    if request.partial_images and entry.tokens:
        output = entry.tokens.get("output_image", Decimal(0))
        total += output * PARTIAL_IMAGE_TOKENS * request.partial_images / _MILLION
    return total
