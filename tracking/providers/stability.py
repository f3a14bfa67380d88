"""Stability AI's image editing: ``POST {api_base}/v2beta/stable-image/edit/{operation}``.

``model="stability/inpaint"`` (``erase``, ``search-and-replace``, ``outpaint``) names the edit
operation; a call with a ``mask`` to a model that is not ``inpaint`` or ``erase`` runs as
``inpaint`` (the operation a mask means) and is priced as one. The key is a bearer token from
``api_key`` or ``STABILITY_API_KEY``; ``api_base`` defaults to ``https://api.stability.ai``
(``STABILITY_API_BASE`` overrides it).

The request is multipart: ``image``, ``prompt``, ``output_format``, and the mask converted from
OpenAI's convention (transparent = edit) to Stability's (white = edit). Operation-specific
fields go in ``extra_body`` (``search_prompt`` for search-and-replace, ``left``/``right``/``up``/
``down`` for outpaint, ``negative_prompt``, ``seed``, ``grow_mask``). The answer is asked for as
JSON (``{"image": base64, "finish_reason", "seed"}``) and becomes ``data[0].b64_json``; an
``image`` that is not base64 of an image (text, an HTML page) is an
:class:`~tracking.errors.APIResponseError`, priced by estimate as any unreadable answer; a
``CONTENT_FILTERED`` finish reason (a generation made, then blurred: billed, and priced by
estimate as one image), or a 403 ``content_moderation`` error (not billed), is a
:class:`~tracking.errors.ContentPolicyError`. Errors (``{"name", "errors": [...]}``) keep
``name`` as the error's code.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import APIResponseError, ConfigurationError, ContentPolicyError, ValidationError
from ..request import form_items
from ..response import ImageResponse, check_b64_images, upstream_json
from .base import (
    Poll,
    PreparedRequest,
    UpstreamError,
    api_base_for,
    api_key_for,
    error_object,
    refuse_several_images,
    refuse_unsupported,
    text_field,
)
from .masks import bearer_multipart, mask_part

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = ["OPERATIONS", "StabilityProvider"]

DEFAULT_STABILITY_API_BASE = "https://api.stability.ai"
OPERATIONS = frozenset({"inpaint", "erase", "search-and-replace", "outpaint"})
_MASKED = frozenset({"inpaint", "erase"})


#: OpenAI parameters Stability's edit endpoints have no field for (its answer is always base64)
_NOT_TAKEN = (
    "markup",
    "size",
    "quality",
    "background",
    "output_compression",
    "input_fidelity",
    "moderation",
    "response_format",
)
_OUTPUT_FORMATS = ("png", "jpeg", "webp")


def _check_fields(request: ImageEditRequest, operation: str) -> None:
    """What Stability documents as required or allowed, checked before sending (its refusal
    would come back as a 400 after the upload)."""
    if request.output_format is not None and request.output_format not in _OUTPUT_FORMATS:
        raise ValidationError(
            f"output_format: stability/{operation} makes {', '.join(_OUTPUT_FORMATS)}, got "
            f"{request.output_format!r}",
            param="output_format",
            rule="enum",
        )
    if operation == "search-and-replace" and "search_prompt" not in request.extra_body:
        raise ValidationError(
            "search_prompt: stability/search-and-replace needs it, in extra_body "
            "(extra_body={'search_prompt': 'the object to replace'})",
            param="search_prompt",
            rule="required",
        )


def _one_image_from_one(request: ImageEditRequest, operation: str) -> None:
    """Stability's edit endpoints take one image and make one: more of either is refused before
    sending (they were dropped without a word, the caller paying for one image of many asked)."""
    refuse_several_images(request, f"stability/{operation} makes 1 image per call")
    if len(request.images) > 1:
        raise ValidationError(
            f"image: stability/{operation} takes 1 image, got {len(request.images)}",
            param="image",
            rule="max_images",
        )


class StabilityProvider:
    name = "stability"
    #: answers whole: ``stream=True`` is refused before sending (:func:`.prepare_call`)
    streams = False
    #: a mask is decoded and converted (white means edit) while the request is prepared
    converts_masks = True
    key_variables = ("STABILITY_API_KEY",)

    def check_settings(self, model: str, api_base: str | None, api_version: str | None) -> None:
        """A deployment's model must name one of the edit operations (checked when a router
        or the proxy loads it, and again before each call)."""
        if model not in OPERATIONS:
            raise ConfigurationError(
                f"model: stability/{model} is not an edit operation; one of "
                f"{', '.join(sorted(OPERATIONS))}"
            )

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        api_key = api_key_for(options, "Stability AI", *self.key_variables)
        api_base = api_base_for(options, "STABILITY_API_BASE", DEFAULT_STABILITY_API_BASE)
        operation = request.upstream_model
        self.check_settings(operation, options.api_base, options.api_version)
        _one_image_from_one(request, operation)
        refuse_unsupported(request, options, "Stability AI", _NOT_TAKEN)
        if request.mask is not None and operation not in _MASKED:
            operation = "inpaint"
        _check_fields(request, operation)
        fields = [("output_format", request.output_format or "png")]
        if operation != "erase":  # erase takes no prompt
            fields.insert(0, ("prompt", request.prompt))
        for name, value in request.extra_body.items():
            fields.extend(form_items(name, value))
        files = [("image", request.images[0])]
        if request.mask is not None:
            files.append(mask_part(request.mask))
        output_format = request.output_format or "png"
        return bearer_multipart(
            f"{api_base}/v2beta/stable-image/edit/{operation}",
            api_key,
            fields,
            files,
            options,
            price_size="any",
            price_model=f"stability/{operation}",
            read=lambda status, headers, body: self.image(body, output_format),
        )

    def parse(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse | Poll:
        return self.image(body, "png")

    def image(self, body: bytes, output_format: str) -> ImageResponse:
        """The JSON answer (``{"image": base64, "finish_reason"}``) in OpenAI's shape."""
        try:
            answer = upstream_json(body)
        except ValueError:
            raise APIResponseError("the upstream sent a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise APIResponseError("the upstream's JSON is not an object")
        if answer.get("finish_reason") == "CONTENT_FILTERED":
            # "successful generation, however the output violated our content moderation
            # policy and has been blurred as a result" (Stability's OpenAPI description,
            # ImageJSONResponse.finish_reason, as generated into the tryAGI/StabilityAI client,
            # read 2026-12-06): made, and billed per successful generation
            filtered = ContentPolicyError(
                "the provider's content filter blurred the image (CONTENT_FILTERED); the "
                "generation is billed",
                code="content_policy_violation",
            )
            filtered.billed_images = 1
            raise filtered
        image = answer.get("image")
        if not isinstance(image, str) or not image:
            raise APIResponseError("the upstream's answer has no image")
        data = [{"b64_json": image}]
        check_b64_images(data)  # text, an HTML page: no image to pass on
        raw = {"created": int(time.time()), "data": data, "output_format": output_format}
        return ImageResponse(raw=raw)

    def read_error(self, status: int, body: bytes) -> UpstreamError:
        error = error_object(body)
        if not isinstance(error, UpstreamError):  # an OpenAI-shaped body from a gateway
            return UpstreamError(
                message=text_field(error, "message"), code=text_field(error, "code")
            )
        try:
            answer = upstream_json(body)
        except ValueError:
            return error
        if not isinstance(answer, dict):
            return error
        name = answer.get("name") if isinstance(answer.get("name"), str) else None
        errors = answer.get("errors")
        message = "; ".join(str(e) for e in errors) if isinstance(errors, list) else None
        if name == "content_moderation":
            return UpstreamError(message=message, code="content_policy_violation", status=400)
        return UpstreamError(message=message or error.message, code=name)
