"""What a call costs when the upstream does not say: before it is sent (budgets, lowest-cost
routing) and after a billed outcome whose usage we could not read.

One rule serves both, and errs high rather than low. The output is the per-image price for the
size and quality (an unknown or ``auto`` quality takes the dearest tier the table lists; an
``auto`` size, or a size the table does not list, the dearest listed price). A table of
resolution tiers (Gemini's ``512`` / ``1K`` / ``2K`` / ``4K``) prices a ``WIDTHxHEIGHT`` at the
tier it is made at (:func:`tracking.families.resolution_tier`), and no size or ``auto`` at 1K,
Gemini's default (the smallest listed when there is no 1K). A ``WIDTHxHEIGHT`` the table does
not list (gpt-image-2's free sizes), or a model priced only by tokens, is estimated from the
output token price and :func:`reference_tokens` (an upper bound of one 1024x1024 image's output
tokens for its quality), scaled by the image's area and never below that image's. Models
billed by tokens add an allowance for the input: one token per prompt character and
:data:`INPUT_IMAGE_TOKENS` per input image, before a call and after a billed one alike
(:func:`request_estimate`: an attempt whose outcome is unknown and a success answered without a
usage we can read are priced by the same estimate, the answer's size and quality when it gives
them). Everything is Decimal; None only when the table has nothing to go on.

:func:`estimate_call_cost` is the public entry point: a :class:`~tracking.pricing.Cost` with
``source="estimate"`` for a model, size, quality and ``n``, for any code that must record a
billed call whose real cost is unknown (a timeout after sending, a dropped connection, an answer
that could not be read).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from ..families import family_for, family_of, pixel_size, resolution_tier, tier_side
from ..response import SearchGrounding, asks_google_search
from . import (
    UNPRICED,
    Cost,
    _per_image,
    billing_entry,
    request_entry,
    with_search_fee,
)
from .megapixels import megapixel_estimate
from .table import PriceEntry

if TYPE_CHECKING:
    from ..request import ImageEditRequest

__all__ = [
    "ESTIMATE_REF",
    "INPUT_IMAGE_TOKENS",
    "PARTIAL_IMAGE_TOKENS",
    "REFERENCE_OUTPUT_TOKENS",
    "entry_estimate",
    "entry_max_cost",
    "estimate_call_cost",
    "estimate_first_priced",
    "estimate_incomplete_stream",
    "estimate_max_cost",
    "estimate_unknown_outcomes",
    "input_estimate",
    "input_image_count",
    "max_expected_cost",
    "partial_images_cost",
    "reference_tokens",
    "request_estimate",
    "search_allowance",
]

#: Input image tokens allowed per image in an estimate (the largest inputs stay below it).
INPUT_IMAGE_TOKENS = 1_000
#: Output image tokens of one 1024x1024 image by quality, an upper bound: ``low`` / ``medium`` /
#: ``high`` from gpt-image-2's published per-image prices at $30 per 1M output tokens
#: ($0.006 / $0.053 / $0.211; 7,024 tokens for high). ``xhigh`` and ``max`` (2.5 and 2.6) have
#: no figure on OpenAI's pages (read 2026-12-05): they are bounded at 1.5 and 2 times ``high``'s,
#: the bundled fake upstream's convention, above the 3,122 and 7,024 tokens a secondary source
#: gives for 2.5 Flare (docs/models-and-prices.md). Used for models and sizes without a
#: per-image price.
REFERENCE_OUTPUT_TOKENS: Mapping[str, int] = {
    "low": 200,
    "medium": 1767,
    "high": 7024,
    "xhigh": 10_536,
    "max": 14_048,
}
#: A family's own bound where it is above :data:`REFERENCE_OUTPUT_TOKENS`: 2.6's ``low`` uses
#: "3-4 times the tokens of 2.5" (LaoZhang's 2.6 page, read 2026-12-05), 4 x 196.
_FAMILY_OUTPUT_TOKENS: Mapping[str, Mapping[str, int]] = {"gpt-image-2.6": {"low": 784}}
#: The qualities of a model whose family is unknown: gpt-image-2's.
_PUBLISHED_QUALITIES = frozenset({"low", "medium", "high"})
_REFERENCE_PIXELS = 1024 * 1024
#: The largest standard size an ``auto`` size resolves to (1536x1024 or 1024x1536).
_AUTO_PIXELS = 1536 * 1024
_MILLION = Decimal(1_000_000)
#: ``price_ref`` of an attempt whose outcome is unknown (the price entry's own reference follows).
ESTIMATE_REF = "estimate:outcome-unknown"
log = logging.getLogger("tracking.pricing")


def _pixels(size: str | None) -> int | None:
    parsed = pixel_size(size)
    return parsed[0] * parsed[1] if parsed is not None else None


#: Pixels an answer's reported size may have for a model whose family is not known (the largest
#: any family here produces): past it the size is a fault, not what was billed.
_MAX_PIXELS = 8192 * 8192


def plausible_size(reported: str | None, request: ImageEditRequest) -> str | None:
    """The size an estimate prices: the answer's, unless it is larger than any image the model
    can produce (an upstream's fault must not bill 99999x99999), then the request's."""
    pixels = _pixels(reported)
    if pixels is None:
        return reported or request.size
    family = family_for(request.upstream_model, request.operation)
    if pixels > (family.max_pixels if family is not None else _MAX_PIXELS):
        log.warning(
            "tracking: %s reported size %s, larger than the model produces: "
            "the estimate prices the requested size %s",
            request.model,
            reported,
            request.size,
        )
        return request.size
    return reported


def _listed_price(entry: PriceEntry, quality: str | None, size: str | None) -> Decimal | None:
    tables = entry.per_image
    if not tables:
        return None
    if (
        quality not in tables
        and quality in REFERENCE_OUTPUT_TOKENS
        and "output_image" in entry.tokens
        and not tables.keys().isdisjoint(REFERENCE_OUTPUT_TOKENS)
    ):
        # a quality the table leaves out (per-image prices registered for ``low`` alone): its
        # tokens', never the listed qualities' price (``high`` estimated at ``low``'s)
        return None
    chosen = [tables[quality]] if quality is not None and quality in tables else [*tables.values()]
    listed = {name for sizes in chosen for name in sizes}
    tiers = sorted((n for n in listed if tier_side(n)), key=lambda n: tier_side(n) or 0)
    if tiers and (dimensions := pixel_size(size)) is not None:
        size = resolution_tier(*dimensions, tiers)  # billed at its tier (Gemini's 1K, 2K, 4K)
    elif tiers and size in (None, "auto"):
        # no size asked: made at Gemini's default, 1K (not a smaller tier such as 512)
        size = "1K" if "1K" in tiers else tiers[0]
    if size in listed:
        return max(sizes[size] for sizes in chosen if size in sizes)
    sized = any(_pixels(name) is not None for name in listed)
    if sized and _pixels(size) is not None and "output_image" in entry.tokens:
        return None  # a free WIDTHxHEIGHT among listed ones: scale tokens by its area instead
    return max(price for sizes in chosen for price in sizes.values())


def _leaves_out_taken(entry: PriceEntry, quality: str | None) -> bool:
    """Whether a call not naming one of ``entry``'s listed qualities (``auto``, none) may be
    made at a quality its per-image table leaves out, which its token prices then price."""
    tables = entry.per_image
    if quality in tables or "output_image" not in entry.tokens:
        return False
    if tables.keys().isdisjoint(REFERENCE_OUTPUT_TOKENS):
        return False  # not a table by quality (one price for every call)
    family = family_of(entry.key)
    taken = family.choices.get("quality", _PUBLISHED_QUALITIES) if family else _PUBLISHED_QUALITIES
    return any(q in REFERENCE_OUTPUT_TOKENS and q not in tables for q in taken)


def reference_tokens(model: str, quality: str | None) -> int:
    """The output tokens an estimate allows one 1024x1024 image of ``model`` at ``quality``; an
    ``auto``, unknown or missing quality takes the dearest one the model's family takes."""
    family = family_of(model)
    table = {
        **REFERENCE_OUTPUT_TOKENS,
        **_FAMILY_OUTPUT_TOKENS.get(family.name if family else "", {}),
    }
    if quality in table:
        return table[quality]
    taken = family.choices.get("quality", _PUBLISHED_QUALITIES) if family else _PUBLISHED_QUALITIES
    return max((table[q] for q in taken if q in table), default=table["high"])


def _token_price(entry: PriceEntry, quality: str | None, size: str | None) -> Decimal | None:
    price = entry.tokens.get("output_image")
    if price is None:
        return None
    reference = reference_tokens(entry.key, quality)
    # Never below the 1024x1024 image's count: a smaller or narrower image is not billed in
    # proportion to its area (gpt-image-2's 1536x1024 is 5,488 tokens at high, 1024x1024 7,024).
    pixels = max(_pixels(size) or _AUTO_PIXELS, _REFERENCE_PIXELS)
    tokens = (Decimal(reference) * pixels / _REFERENCE_PIXELS).to_integral_value(ROUND_CEILING)
    return tokens * price / _MILLION


def entry_estimate(
    entry: PriceEntry,
    n: int,
    quality: str | None,
    size: str | None,
    prompt_chars: int = 0,
    input_images: int = 0,
    *,
    input_pixels: Sequence[int | None] | None = None,
) -> Decimal | None:
    """The estimated cost of ``n`` images of ``size`` and ``quality`` priced by ``entry``; a
    per-megapixel model's (:mod:`.megapixels`) also counts its inputs, by ``input_pixels`` (each
    input's pixels, None when unknown) or, not given, ``input_images`` of unknown size. A size
    or quality not given is the model's documented default (``entry.defaults``), if any."""
    size = size or entry.defaults.get("size")
    quality = quality or entry.defaults.get("quality")
    if entry.per_megapixel:
        sizes = [None] * input_images if input_pixels is None else list(input_pixels)
        return megapixel_estimate(entry.per_megapixel, n, _pixels(size), sizes)  # auto: None
    each = _listed_price(entry, quality, size)
    if each is None:
        each = _token_price(entry, quality, size)
    elif _leaves_out_taken(entry, quality) and (tokens := _token_price(entry, quality, size)):
        # ``auto`` (or no quality) with per-image prices for some qualities only: the call may
        # be made at one the table leaves out, so the dearer of the listed and the tokens' price
        each = max(each, tokens)
    if each is None:
        return None
    return each * n + input_estimate(entry, prompt_chars, input_images)


def input_pixels(request: ImageEditRequest) -> list[int | None]:
    """The pixels of each input image of ``request`` (None for one whose size is unknown)."""
    return [i.width * i.height if i.width and i.height else None for i in request.images]


def input_estimate(entry: PriceEntry, prompt_chars: int, input_images: int) -> Decimal:
    """The input allowance of a model billed by tokens: one token per prompt character and
    :data:`INPUT_IMAGE_TOKENS` per input image at the input prices (0 for per-image prices)."""
    if not entry.tokens:
        return Decimal(0)
    text = entry.tokens.get("input_text", Decimal(0)) * prompt_chars
    images = entry.tokens.get("input_image", Decimal(0)) * INPUT_IMAGE_TOKENS * input_images
    return (text + images) / _MILLION


def estimate_call_cost(
    model: str,
    size: str | None = None,
    quality: str | None = None,
    n: int = 1,
    *,
    prompt_chars: int = 0,
    input_images: int = 0,
    day: date | None = None,
    searches: bool = False,
    input_pixels: Sequence[int | None] | None = None,
) -> Cost:
    """An estimated :class:`~tracking.pricing.Cost` (``source="estimate"``) of a billed call
    whose real cost is unknown; ``source="unpriced"`` (cost None) when the model has no price.
    ``searches``: the call asked for Grounding with Google Search, whose fee is added for one
    use when the entry gives one (:func:`search_allowance`).

    ``model`` is looked up as billing looks up a call asking it
    (:func:`~tracking.pricing.billing_entry`: with its provider, as written, and as sent;
    ``azure/...`` falls back to the bare name, a slashed name sent whole to an OpenAI-compatible
    server is never priced as the name after its slash).
    """
    entry = billing_entry(model, None, day)
    total = (
        entry_estimate(
            entry, n, quality, size, prompt_chars, input_images, input_pixels=input_pixels
        )
        if entry
        else None
    )
    if entry is None or total is None:
        return UNPRICED
    cost = Cost(total, _per_image(total, n), "estimate", entry.ref)
    if searches and "google_search" in entry.tools:
        return with_search_fee(entry, SearchGrounding(queries=1, reported=False), cost, n)
    return cost


def search_allowance(entry: PriceEntry, extra_body: Any) -> Decimal:
    """What a call's Grounding with Google Search adds to an estimate made before its answer:
    the entry's fee for one use (one search query, or the one grounded prompt) when
    ``extra_body`` asks for it, as an answer that does not say what it searched is priced; 0
    otherwise. A Gemini 3 call may run more queries: a budget's hold settles at what its answer
    reports."""
    fee = entry.tools.get("google_search")
    return fee.usd if fee is not None and asks_google_search(extra_body) else Decimal(0)


def input_image_count(params: Mapping[str, Any]) -> int:
    """The input images a call's ``params`` send: its images, and a ``markup`` as one more (the
    upstream bills it as an input image)."""
    image = params.get("image")
    images = 0 if image is None else len(image) if isinstance(image, list) else 1
    return images + (params.get("markup") is not None)


def estimate_max_cost(
    model: str, params: Mapping[str, Any], day: date | None = None
) -> Decimal | None:
    """The most one call with ``params`` (n, size, quality, prompt, image, markup; a stream's
    ``partial_images``) may cost on ``model``, found as billing finds it
    (:func:`~tracking.pricing.billing_entry`); None when its calls are unpriced."""
    entry = billing_entry(model, None, day)
    return None if entry is None else entry_max_cost(entry, params)


def entry_max_cost(entry: PriceEntry, params: Mapping[str, Any]) -> Decimal | None:
    """The most one call with ``params`` may cost at ``entry`` (:func:`estimate_max_cost`'s
    figure, for an entry already found: a masked FLUX Kontext call's Fill price); None when
    the entry cannot price it."""
    prompt = params.get("prompt")
    quality, size = params.get("quality"), params.get("size")
    total = entry_estimate(
        entry,
        params.get("n") or 1,
        quality if isinstance(quality, str) else None,
        size if isinstance(size, str) else None,
        len(prompt) if isinstance(prompt, str) else 0,
        input_image_count(params),
    )
    partials = params.get("partial_images")
    if total is not None and params.get("stream") is True and type(partials) is int:
        total += partial_images_cost(entry, partials)
    if total is not None:
        total += search_allowance(entry, params.get("extra_body"))
    return total


def partial_images_cost(entry: PriceEntry, partial_images: int) -> Decimal:
    """What a stream's partial images add: :data:`PARTIAL_IMAGE_TOKENS` output tokens each."""
    if partial_images <= 0 or not entry.tokens:
        return Decimal(0)
    output = entry.tokens.get("output_image", Decimal(0))
    return output * PARTIAL_IMAGE_TOKENS * partial_images / _MILLION


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
    request: ImageEditRequest, day: date | None = None, *, partials: int | None = None
) -> Decimal | None:
    """What a streamed call that never reached its completed event may have cost.

    The upstream accepted the call and may bill it in full even though no usage came back: the
    most the call can cost (:func:`estimate_max_cost`'s allowance) plus its partial images'
    output tokens. ``partials``: the partial images the upstream sent before the stream broke
    off, each of which it made; None (an attempt not yet made, as a budget's hold counts
    it): the ones the request asks for. None when no price is known for the model.
    """
    entry, _ = request_entry(request, day or datetime.now(UTC).date())
    total = None if entry is None else request_estimate(entry, request)
    if entry is None or total is None:
        return None
    made = (request.partial_images or 0) if partials is None else partials
    return total + partial_images_cost(entry, made)


def request_estimate(
    entry: PriceEntry,
    request: ImageEditRequest,
    *,
    n: int | None = None,
    size: str | None = None,
    quality: str | None = None,
) -> Decimal | None:
    """What ``request`` may cost at ``entry`` (:func:`entry_estimate`): its output (``n``
    images of ``size`` and ``quality``, each the request's when not given: an answer may say
    what it made) and its input allowance (the prompt and the input images). The one estimate
    of a billed call whose cost is not known: an attempt whose outcome is unknown and a success
    answered without a usage we can read are priced alike. None when ``entry`` cannot price it."""
    return entry_estimate(
        entry,
        n or request.n or 1,
        quality or request.quality,
        size or request.size,
        len(request.prompt),
        request.input_images,
        input_pixels=input_pixels(request),
    )


def estimate_unknown_outcomes(
    request: ImageEditRequest | None, attempts: int, day: date | None = None
) -> Cost:
    """The estimated cost of ``attempts`` attempts of ``request`` whose outcome is unknown, at
    the prices in force on ``day`` (the call's start; None: today)."""
    if request is None or attempts <= 0:
        return UNPRICED
    if request.served_as is not None:  # served by another model: by the deployment's terms
        entry, _ = request_entry(request, day or datetime.now(UTC).date())
        total = None if entry is None else request_estimate(entry, request)
        if entry is None or total is None:
            return UNPRICED
        return Cost(total * attempts, None, "estimate", f"{ESTIMATE_REF}:{entry.ref}")
    candidates = [request.base_model, f"{request.provider}/{request.upstream_model}", request.model]
    each = estimate_first_priced(
        [m for m in candidates if m],
        request.size,
        request.quality,
        request.n or 1,
        prompt_chars=len(request.prompt),
        input_images=request.input_images,
        day=day,
        searches=asks_google_search(request.extra_body),
        input_pixels=input_pixels(request),
    )
    if each is None or each.usd is None:
        return UNPRICED
    return Cost(each.usd * attempts, None, "estimate", f"{ESTIMATE_REF}:{each.price_ref}")


def estimate_first_priced(
    models: Iterable[str],
    size: str | None,
    quality: str | None,
    n: int,
    *,
    prompt_chars: int,
    input_images: int,
    day: date | None = None,
    searches: bool = False,
    input_pixels: Sequence[int | None] | None = None,
) -> Cost | None:
    """:func:`estimate_call_cost` of the first of ``models`` with a price (the names a request's
    model goes by, most specific first) on ``day`` (None: today); None when none has one."""
    for model in dict.fromkeys(models):
        estimate = estimate_call_cost(
            model,
            size,
            quality,
            n,
            prompt_chars=prompt_chars,
            input_images=input_images,
            day=day,
            searches=searches,
            input_pixels=input_pixels,
        )
        if estimate.usd is not None:
            return estimate
    return None
