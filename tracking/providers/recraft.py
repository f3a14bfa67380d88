"""Recraft: ``POST {api_base}/images/imageToImage``, or ``/images/inpaint`` with a mask; a
generation: ``POST {api_base}/images/generations``.

``model="recraft/recraftv3"`` (or another Recraft model: ``recraftv3_vector``, ``recraftv4``...)
edits and generates with Recraft. The key is a bearer token from ``api_key`` or
``RECRAFT_API_TOKEN`` (also ``RECRAFT_API_KEY``); ``api_base`` defaults to ``https://external.api.recraft.ai/v1``
(``RECRAFT_API_BASE`` overrides it).

The request is multipart: ``image``, ``prompt``, ``model``, ``n`` (1 to 6) and
``response_format=b64_json``; image-to-image also takes ``strength`` (0 to 1, a number or its
decimal text, from ``extra_body``, 0.5 when not given), inpainting the mask, converted from
OpenAI's convention (transparent = edit) to Recraft's (white = edit). Other Recraft fields
(``style``, ``negative_prompt``...) go in ``extra_body``. The answer already has OpenAI's shape
(``data[].b64_json``); its ``credits`` are the API units charged (1,000 units = 1 USD, Recraft's
pricing page), so the call's cost is what Recraft says it charged, not an estimate from a table.

A generation (``tracking.image_generation``) goes to ``POST {api_base}/images/generations`` as
JSON (Recraft's endpoint reference, https://www.recraft.ai/docs/api-reference/endpoints.md, and
its page for agents, https://www.recraft.ai/docs/api-reference/agents.md, both read
2026-12-07): ``prompt``, ``model``, ``n`` (1 to 6), ``response_format=b64_json``, ``size`` as
asked (Recraft takes a ``WxH`` or ``w:h`` from each model's own list and judges it), and
``extra_body`` members (``style``, ``negative_prompt``, ``controls``...), which may not replace
the call's own. Its answer and ``credits`` are read as an edit's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import APIResponseError, ValidationError
from ..images import encodes_image_or_svg
from ..request import form_items
from ..response import ImageResponse, check_b64_images, reported_charge, upstream_json
from .base import (
    EDITS_AND_GENERATIONS,
    GPT_IMAGE_OPTIONS,
    OpenAIAnswers,
    PreparedRequest,
    UpstreamError,
    add_extra_members,
    api_base_for,
    api_key_for,
    bearer_json,
    extra_number,
    openai_error,
    refuse_unsupported,
    text_field,
)
from .masks import bearer_multipart, mask_part

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = ["API_UNITS_PER_USD", "RecraftProvider"]

DEFAULT_RECRAFT_API_BASE = "https://external.api.recraft.ai/v1"
API_UNITS_PER_USD = Decimal(1000)


class RecraftProvider(OpenAIAnswers):
    name = "recraft"
    #: answers whole: ``stream=True`` is refused before sending (:func:`.prepare_call`)
    streams = False
    #: a mask is decoded and converted (white means edit) while the request is prepared
    converts_masks = True
    key_variables = ("RECRAFT_API_TOKEN", "RECRAFT_API_KEY")
    operations = EDITS_AND_GENERATIONS

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        _check_fields(request, options)
        api_key = api_key_for(options, "Recraft", *self.key_variables)
        api_base = api_base_for(options, "RECRAFT_API_BASE", DEFAULT_RECRAFT_API_BASE)
        if request.operation == "image_generation":
            return _generation(request, options, api_key, api_base)
        fields = [
            ("prompt", request.prompt),
            ("model", request.upstream_model),
            ("response_format", "b64_json"),
        ]
        if request.n is not None:
            fields.append(("n", str(request.n)))
        extra = dict(request.extra_body)
        files = [("image", request.images[0])]
        if request.mask is not None:
            endpoint = "inpaint"
            files.append(mask_part(request.mask))
        else:
            endpoint = "imageToImage"
            extra.setdefault("strength", 0.5)
        fields.extend(pair for name, value in extra.items() for pair in form_items(name, value))
        return bearer_multipart(
            f"{api_base}/images/{endpoint}", api_key, fields, files, options, price_size="any"
        )

    def read_error(self, status: int, body: bytes) -> UpstreamError:
        """OpenAI's ``{"error": {...}}``, or Recraft's flat ``{"code", "message"}``."""
        said = openai_error(status, body)
        if said.message or said.code:
            return said
        try:
            answer = upstream_json(body)
        except ValueError:
            return said
        if not isinstance(answer, dict):
            return said
        return UpstreamError(message=text_field(answer, "message"), code=text_field(answer, "code"))

    def parse(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse:
        try:
            response = ImageResponse.from_json_bytes(body, check_b64=False)
        except APIResponseError as error:  # no image, but the credits it reports were charged
            error.billed_usd = _charged(_credits_of(body))
            raise
        charged = _charged(response.raw.get("credits"))
        try:  # raster models answer PNG or WebP, vector models SVG
            check_b64_images(
                response.raw["data"], encodes_image_or_svg, "PNG, JPEG, WebP, GIF or SVG"
            )
        except APIResponseError as error:
            error.billed_usd = charged  # what it said it charged for the unusable answer
            raise
        response.billed_usd = charged
        return response


#: OpenAI parameters Recraft's generations have no field for (its answers are asked for as
#: base64); its image-to-image and inpaint have no ``size`` either
_GENERATION_NOT_TAKEN = (*GPT_IMAGE_OPTIONS, "response_format")
_NOT_TAKEN = ("size", *_GENERATION_NOT_TAKEN)
MAX_N = 6


def _generation(
    request: ImageEditRequest, options: CallOptions, api_key: str, api_base: str
) -> PreparedRequest:
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "model": request.upstream_model,
        "response_format": "b64_json",
    }
    if request.n is not None:
        body["n"] = request.n
    if request.size and request.size != "auto":
        body["size"] = request.size
    add_extra_members(body, request.extra_body, "Recraft")
    return bearer_json(f"{api_base}/images/generations", api_key, body, options, price_size="any")


def _check_fields(request: ImageEditRequest, options: CallOptions) -> None:
    """What Recraft documents, checked before sending: one image, ``n`` from 1 to 6,
    ``strength`` from 0 to 1, and no parameter it has no field for."""
    if len(request.images) > 1:
        raise ValidationError(
            f"image: Recraft edits 1 image, got {len(request.images)}",
            param="image",
            rule="max_images",
        )
    if request.n is not None and not 1 <= request.n <= MAX_N:
        raise ValidationError(
            f"n: Recraft makes 1 to {MAX_N} images per call, got {request.n}",
            param="n",
            rule="range",
            code="integer_above_max_value",
        )
    strength = request.extra_body.get("strength")
    if strength is not None and not _is_strength(strength):
        raise ValidationError(
            f"strength: a number from 0 to 1, got {str(strength)[:40]!r}",
            param="strength",
            rule="range",
        )
    generating = request.operation == "image_generation"
    names = _GENERATION_NOT_TAKEN if generating else _NOT_TAKEN
    refuse_unsupported(request, options, "Recraft", names)


def _is_strength(value: object) -> bool:
    """A number from 0 to 1: an int or float, or its decimal text (a form field through the
    proxy is text, ``"0.3"``, as the official clients send ``extra_body``); not a bool, NaN or
    infinity."""
    number = extra_number(value)
    return number is not None and 0 <= number <= 1


def _credits_of(body: bytes) -> object:
    try:
        answer = upstream_json(body)
    except ValueError:
        return None
    return answer.get("credits") if isinstance(answer, dict) else None


def _charged(credits: object) -> Decimal | None:
    """USD from the answer's ``credits``; None when absent, not a plain amount, or below
    :data:`~tracking.response.MIN_REPORTED_USD` (the price table then applies, so a malformed or
    implausible figure never zeroes a billed call)."""
    return reported_charge(credits, API_UNITS_PER_USD, "recraft")
