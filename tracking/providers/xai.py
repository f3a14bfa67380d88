"""xAI (Grok Imagine): ``POST {api_base}/images/edits`` and ``POST {api_base}/images/generations``,
each with a JSON body.

``model="xai/grok-imagine-image"`` edits and generates with xAI's Grok Imagine. The key is a
bearer token from ``api_key`` or ``XAI_API_KEY``; ``api_base`` defaults to
``https://api.x.ai/v1`` (``XAI_API_BASE`` overrides it).

xAI takes JSON, not OpenAI's multipart form: each input image of an edit goes as a base64 data
URI, one as ``image: {"url"}``, two or more as ``images: [{"url"}, ...]`` (the prompt may name
them ``<IMAGE_0>``, ``<IMAGE_1>``...). A generation sends the same JSON without images to
``images/generations``: ``model``, ``prompt``, ``n`` (1 to 10), ``response_format``,
``aspect_ratio``, ``resolution``, ``user``. xAI refuses OpenAI's ``size``, so a
``WIDTHxHEIGHT`` becomes the nearest of its :data:`ASPECT_RATIOS` and the smallest of its
:data:`RESOLUTIONS` that covers the long side; wider than 20:9 or larger than 2k is a
:class:`~tracking.errors.ValidationError` before anything is sent. xAI's guides document no
mask, so a mask is an :class:`~tracking.errors.UnsupportedParamsError` (``drop_params=True``
drops it). The answer is asked for as ``b64_json`` unless the caller asked for ``url`` (xAI's
URLs are temporary). xAI documents no streamed image answer: ``stream=True`` is refused before
sending.

``model="xai/grok-imagine-image-2.0"`` takes the same endpoints and JSON, up to five images for
an edit (``tracking/families.py``), and ``quality`` (``low``, ``medium`` or ``auto``), sent as
asked (:data:`QUALITY_MODELS`); its table prices go by quality and resolution tier.

The answer, an edit's or a generation's, has OpenAI's shape plus ``usage.cost_in_usd_ticks``,
what xAI charged for the call (an edit's input and output images together, a generation's
output images; 10^10 ticks = 1 USD, xAI's cost-tracking page): that is the call's cost. A
``block_reason`` with no image, or an error that names xAI's content moderation, is a
:class:`~tracking.errors.ContentPolicyError`; a withheld image whose answer still reports
``cost_in_usd_ticks`` costs what it reports (xAI says it charged it). Errors come as
``{"code", "error"}``; xAI answers an incorrect key with HTTP 400, which is read as the
authentication failure it is.

Sources for generations, read 2026-12-07: xAI's image generation guide
(https://docs.x.ai/developers/model-capabilities/images/generation: URLs by default and
temporary, base64 on request, up to 10 images a request, aspect ratio and resolution), its image
overview (https://docs.x.ai/developers/model-capabilities/images: flat per-image pricing for a
generation, edits billed for input and output images) and its Imagine overview
(https://docs.x.ai/docs/guides/video-generation: image generation $0.02 an image, 1K and 2K),
and xAI's API reference for ``POST /v1/images/generations`` as mirrored at
https://www.withone.ai/knowledge/x-ai/conn_mod_def%3A%3AGJ8XVhsvjYc%3A%3AT3TwNw-URASa97MrOR63IQ
(the body's fields, ``size`` and ``style`` "not supported", the answer with ``block_reason``,
``data[].url | b64_json``, ``mime_type``, ``revised_prompt`` and ``usage.cost_in_usd_ticks``).
"""

from __future__ import annotations

import base64
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..decimals import strict_decimal
from ..errors import (
    APIError,
    APIResponseError,
    ContentPolicyError,
    UnsupportedParamsError,
    ValidationError,
)
from ..families import pixel_size
from ..response import ImageResponse, check_b64_images, plausible_charge, upstream_json
from .base import (
    EDITS_AND_GENERATIONS,
    GPT_IMAGE_OPTIONS,
    PreparedRequest,
    UpstreamError,
    add_extra_members,
    api_base_for,
    api_key_for,
    bearer_json,
    error_object,
    refuse_unsupported,
    text_field,
)

if TYPE_CHECKING:
    from ..images import ImageFile
    from ..request import CallOptions, ImageEditRequest

__all__ = [
    "ASPECT_RATIOS",
    "QUALITY_MODELS",
    "RESOLUTIONS",
    "TICKS_PER_USD",
    "XAIProvider",
    "output_shape",
]

DEFAULT_XAI_API_BASE = "https://api.x.ai/v1"
TICKS_PER_USD = Decimal(10) ** 10
#: The ``aspect_ratio`` values xAI's image endpoints take (width:height).
ASPECT_RATIOS = (
    "1:1",
    "3:4",
    "4:3",
    "9:16",
    "16:9",
    "2:3",
    "3:2",
    "9:19.5",
    "19.5:9",
    "9:20",
    "20:9",
    "1:2",
    "2:1",
)
#: xAI's ``resolution`` values and the side each stands for; a tier serves sizes up to one and a
#: half times its side (1536x1024 stays at 1k).
RESOLUTIONS = (("1k", 1024), ("2k", 2048))
_WIDEST = 20 / 9
_MODERATION_WORDS = ("moderation", "content policy", "safety")
#: OpenAI parameters xAI's image edits have no field for (its guide and reference, read
#: 2026-12-03), nor its generations for grok-imagine-image (read 2026-12-07; the reference
#: lists a generation ``quality`` its guides never tie to that model, see docs/xai.md): refused
#: for every model, also one the family table does not list, except ``quality`` for
#: :data:`QUALITY_MODELS`.
_NOT_TAKEN = GPT_IMAGE_OPTIONS
#: The models that take ``quality`` (``low``, ``medium``, ``auto``), which sets their price: xAI's
#: release notes and migration guide for grok-imagine-image-quality (read 2026-12-07).
QUALITY_MODELS = frozenset({"grok-imagine-image-2.0"})
_BAD_KEY_WORDS = ("incorrect api key", "invalid api key")


def _ratio(value: str) -> float:
    width, _, height = value.partition(":")
    return float(width) / float(height)


def _size_error(size: str, rule: str, why: str) -> ValidationError:
    return ValidationError(
        f"size: xAI takes 'auto' or WIDTHxHEIGHT {why}; got {size!r}", param="size", rule=rule
    )


def output_shape(size: str | None) -> dict[str, str]:
    """``aspect_ratio`` and ``resolution`` for an OpenAI ``size``; none for ``auto`` or none."""
    if not size or size == "auto":
        return {}
    parsed = pixel_size(size)
    if parsed is None:
        raise _size_error(size, "format", "with both sides whole numbers of pixels")
    width, height = parsed
    if not width or not height:
        raise _size_error(size, "format", "with both sides above zero")
    if max(width, height) / min(width, height) > _WIDEST + 1e-9:
        raise _size_error(size, "aspect", "no wider than 20:9 or 9:20")
    long_side = max(width, height)
    tier = next((name for name, side in RESOLUTIONS if long_side <= side * 1.5), None)
    if tier is None or width * height > RESOLUTIONS[-1][1] ** 2:
        raise _size_error(size, "max_pixels", "of at most 2k (2048x2048 pixels, 3072 a side)")
    target = math.log(width / height)
    ratio = min(ASPECT_RATIOS, key=lambda r: abs(math.log(_ratio(r)) - target))
    return {"aspect_ratio": ratio, "resolution": tier}


#: The ``resolution`` values a priced-by-tier model may be sent (xAI's reference lists 1k and
#: 2k, read 2026-12-07; 1.5k is served at 2k's tier), and the price table's tier of each.
PRICE_TIERS = {"1k": "1K", "1.5k": "2K", "2k": "2K"}


def _price_tier(body: dict[str, Any]) -> str:
    """The price table's tier for 2.0's ``resolution`` (xAI's default 1k when none is sent); a
    1.5k from ``extra_body`` is priced at 2K's, an upper bound. Any other value (``4k``, a
    number) has no price, so it is a :class:`~tracking.errors.ValidationError` on
    ``extra_body`` before sending: it was priced at 2K's as if the table had it."""
    resolution = body.get("resolution", "1k")
    tier = PRICE_TIERS.get(resolution) if isinstance(resolution, str) else None
    if tier is None:
        raise ValidationError(
            f"extra_body: xAI's resolution is one of {', '.join(PRICE_TIERS)}; got {resolution!r}",
            param="extra_body",
            rule="enum",
        )
    return tier


def _data_uri(image: ImageFile) -> dict[str, str]:
    encoded = base64.b64encode(image.content).decode("ascii")
    return {"url": f"data:{image.content_type};base64,{encoded}"}


class XAIProvider:
    name = "xai"
    operations = EDITS_AND_GENERATIONS
    #: answers whole: ``stream=True`` is refused before sending (:func:`.prepare_call`)
    streams = False
    #: images are sent as base64 in JSON: large ones are prepared off the event loop
    encodes_images = True
    key_variables = ("XAI_API_KEY",)

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        if request.mask is not None and not options.drop_params:
            raise UnsupportedParamsError(
                "mask: xAI's image edits take no mask; describe the area in the prompt, or "
                "pass drop_params=True to drop it",
                param="mask",
                rule="unsupported",
            )
        takes_quality = request.upstream_model in QUALITY_MODELS
        not_taken = [name for name in _NOT_TAKEN if not (takes_quality and name == "quality")]
        refuse_unsupported(request, options, "xAI", not_taken)
        api_key = api_key_for(options, "xAI", *self.key_variables)
        api_base = api_base_for(options, "XAI_API_BASE", DEFAULT_XAI_API_BASE)
        body: dict[str, Any] = {
            "model": request.upstream_model,
            "prompt": request.prompt,
            "response_format": "url" if request.requested_response_format == "url" else "b64_json",
        }
        generating = request.operation == "image_generation"
        if not generating:
            images = [_data_uri(image) for image in request.images]
            if len(images) == 1:
                body["image"] = images[0]
            else:
                body["images"] = images
        if request.n is not None:
            body["n"] = request.n
        if request.user is not None:
            body["user"] = request.user
        if takes_quality and request.quality is not None:
            body["quality"] = request.quality
        body.update(output_shape(request.size))
        add_extra_members(body, request.extra_body, "xAI")
        return bearer_json(
            f"{api_base}/images/{'generations' if generating else 'edits'}",
            api_key,
            body,
            options,
            price_size=_price_tier(body) if takes_quality else "any",
        )

    def parse(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse:
        # the base64 check waits until data URIs are bare base64 (_usable_items)
        answer = ImageResponse.from_json_bytes(body, check_b64=False, require_image=False).raw
        charged = _charged(_ticks(answer))
        try:
            items = _usable_items(answer)
        except APIError as error:  # withheld or unusable, and charged all the same if it says so
            error.billed_usd = charged
            raise
        mime = items[0].get("mime_type")
        if isinstance(mime, str) and mime.startswith("image/"):
            answer.setdefault("output_format", mime.removeprefix("image/"))
        response = ImageResponse(raw=answer)
        response.billed_usd = charged
        return response

    def read_error(self, status: int, body: bytes) -> UpstreamError:
        """xAI's ``{"code", "error"}``, or OpenAI's ``{"error": {...}}`` from a gateway."""
        error = error_object(body)
        if isinstance(error, dict):
            said = UpstreamError(
                message=text_field(error, "message"), code=text_field(error, "code")
            )
        else:
            said = _flat_error(body) or error
        text = (said.message or "").lower()
        if any(word in text for word in _MODERATION_WORDS):
            return UpstreamError(message=said.message, code="content_policy_violation", status=400)
        if status == 400 and any(word in text for word in _BAD_KEY_WORDS):
            return UpstreamError(message=said.message, code="invalid_api_key", status=401)
        return said


def _flat_error(body: bytes) -> UpstreamError | None:
    try:
        answer = upstream_json(body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    message = text_field(answer, "error")
    return UpstreamError(message=message, code=text_field(answer, "code")) if message else None


def _usable_items(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's image items, data URIs made the bare base64 OpenAI sends; a
    ContentPolicyError when moderation withheld them, an APIResponseError when none is an
    image."""
    data = answer.get("data")
    items = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    if not any(item.get("b64_json") or item.get("url") for item in items):
        reason = answer.get("block_reason")
        if reason:
            raise ContentPolicyError(
                f"xAI's content moderation withheld the image ({reason})",
                code="content_policy_violation",
            )
        raise APIResponseError("the upstream's answer has no image")
    for item in items:
        encoded = item.get("b64_json")
        if isinstance(encoded, str) and encoded.startswith("data:"):
            item["b64_json"] = encoded.partition(",")[2]
    check_b64_images(items)  # once data URIs are bare base64
    return items


def _ticks(answer: dict[str, Any]) -> object:
    usage = answer.get("usage")
    return usage.get("cost_in_usd_ticks") if isinstance(usage, dict) else None


def _charged(ticks: object) -> Decimal | None:
    """USD from ``cost_in_usd_ticks``; None when absent, not a whole positive count, or below
    :data:`~tracking.response.MIN_REPORTED_USD` (the price table then applies, so a malformed or
    implausible figure never zeroes a billed call)."""
    if isinstance(ticks, bool) or not isinstance(ticks, int | str):
        return None
    try:
        count = strict_decimal(str(ticks))
    except ArithmeticError:
        return None
    if not count.is_finite() or count <= 0 or count != count.to_integral_value():
        return None
    return plausible_charge(count, TICKS_PER_USD, "xai")
