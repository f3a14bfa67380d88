"""Black Forest Labs (FLUX): ``POST {api_base}/v1/{model}``, then poll the job, then download.

``model="black_forest_labs/flux-kontext-pro"`` (or ``flux-kontext-max``) edits with FLUX.1
Kontext; a call with a ``mask`` runs on ``flux-pro-1.0-fill`` instead (Kontext takes no mask) and
is priced as Fill. The key goes in the ``x-key`` header, from ``api_key`` or ``BFL_API_KEY``;
``api_base`` defaults to ``https://api.bfl.ai`` (``BFL_API_BASE`` overrides it).

The API answers asynchronously: the submission returns a job ``id`` and a ``polling_url``; the
job is polled (0.5 s, then 1.5 times longer each time, at most 5 s apart) until it is ``Ready``,
and its ``result.sample`` URL, which expires after about ten minutes, is downloaded at once and
answered as ``data[0].b64_json``. The call's ``timeout`` bounds the whole job. A job that ends
``Error`` or ``Failed``, a result that is not an image (an HTML page, an empty body) and a result
URL that refuses the download (404 or 403 once it has expired; a 429, a 5xx or a dropped
connection that outlasts the retries a poll gets, see ``tracking.flow._follow``) are an
:class:`~tracking.errors.APIResponseError`, one refused by the moderation (``Content Moderated``,
``Request Moderated``) a :class:`~tracking.errors.ContentPolicyError`; none is submitted again
(it was billed, or, moderated, refused for good). The key is
only sent to the API's own host or to ``*.bfl.ai``: a ``polling_url`` elsewhere is refused, and the
result is downloaded without the key.

Billing: a job is charged once it is accepted, whatever follows (its failures are estimated at
the model's price), except one BFL's moderation refuses: "You are not charged for requests
that return a moderated status. Only successful generations (status: Ready) consume credits"
(BFL's help center, "Why is my prompt getting moderated?",
https://help.bfl.ai/articles/4212278032-my-prompt-is-getting-moderated, updated 2026-06-12,
official, read 2026-12-06; it says ``Request Moderated`` flags the input before processing and
``Content Moderated`` the output after it). Its error says so
(:attr:`~tracking.errors.APIError.not_billed_reason`), and the call is recorded at $0 with
``price_ref="failed-call:not-billed:moderated"``.

The mask: OpenAI's marks the area to edit with transparent pixels; FLUX Fill takes a black and
white image where white is edited, so the mask is converted (alpha 0 becomes white).

FLUX.2 (``flux-2-pro``, ``flux-2-max``, ``flux-2-flex``, ``flux-2-klein-4b``,
``flux-2-klein-9b``) edits through the same submit, poll and download, from BFL's API reference
(https://docs.bfl.ml/api-reference/models/generate-or-edit-an-image-with-flux2-%5Bpro%5D.md, the
OpenAPI of https://api.bfl.ai/openapi.json), its editing guide
(https://docs.bfl.ai/flux_2/flux2_image_editing, https://docs.bfl.ai/guides/prompting_editing_overview)
and its own integration guide (https://github.com/black-forest-labs/skills,
``skills/bfl-api/SKILL.md`` and ``references/endpoints.md``), all official and read 2026-12-07:
the image and up to seven more references as ``input_image``, ``input_image_2``...
``input_image_8`` ([klein]: three more), a ``size`` as ``width`` and ``height`` (at least 64,
multiples of 16, at most 4 MP; ``auto``: BFL's default, the input's), no mask (a masked call is
refused before sending), and from ``extra_body`` ``seed``, ``safety_tolerance`` (0 to 5),
``disable_pup`` ([pro], [max]) and, for [flex] alone, ``steps`` (1 to 50), ``guidance`` (1.5 to
10) and ``prompt_upsampling``: a value out of range, or a [flex] member sent to another model
(which BFL's schema would ignore without a word), is a
:class:`~tracking.errors.ValidationError` on ``extra_body`` before anything is sent.

FLUX.2 also generates (``tracking.image_generation``, the proxy's ``/v1/images/generations``):
the same endpoint without an input image, from BFL's integration guide
(``references/endpoints.md``, "FLUX.2 Text-to-Image Endpoints", read 2026-12-07): ``prompt``,
``width`` and ``height`` (the size asked; 1024x1024, the guide's example, when none is, since the
guide states no default), ``output_format`` and the same ``extra_body`` members. FLUX.1 Kontext
and Fill are served for edits alone: a generation naming them is an
:class:`~tracking.errors.UnsupportedOperationError` before anything is sent.

FLUX.2 is priced per megapixel, and the submission answers what the job costs: ``cost`` in
credits (1 credit = $0.01, BFL's pricing page, https://docs.bfl.ai/quick_start/pricing, read
2026-12-07), beside ``input_mp`` and ``output_mp``. That figure is the call's cost
(:attr:`~tracking.response.ImageResponse.billed_usd`, ``cost_source="usage"``), also for a job
that ends ``Error`` after it was accepted; a moderated job stays not billed. Without it (and for
an attempt whose answer was lost) the price table's ``per_megapixel`` prices estimate it
(:mod:`tracking.pricing.megapixels`), from the result's size as downloaded.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from math import gcd
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import APIResponseError, ContentPolicyError, ValidationError
from ..images import is_image, read_image
from ..response import ImageResponse, reported_charge, upstream_json
from .base import (
    EDITS_AND_GENERATIONS,
    Poll,
    PreparedRequest,
    UpstreamError,
    add_extra_members,
    api_base_for,
    api_key_for,
    error_object,
    extra_number,
    refuse_several_images,
    refuse_unsupported,
    request_headers,
    sides_of,
    text_field,
)
from .masks import white_means_edit

if TYPE_CHECKING:
    from ..images import ImageFile
    from ..request import CallOptions, ImageEditRequest

__all__ = ["CREDITS_PER_USD", "FILL_MODEL", "BlackForestLabsProvider", "served_models"]

DEFAULT_BFL_API_BASE = "https://api.bfl.ai"
FILL_MODEL = "flux-pro-1.0-fill"
#: BFL's pricing page: 1 credit = $0.01
CREDITS_PER_USD = Decimal(100)


def is_flux2(upstream_model: str) -> bool:
    """A FLUX.2 model (``flux-2-pro``, ``flux-2-klein-4b``...), edited with its own body."""
    return upstream_model.startswith("flux-2-")


def served_models(upstream_model: str) -> tuple[str, ...]:
    """The models some calls asking ``upstream_model`` are served with instead (a call with a
    mask runs on FLUX Fill; FLUX.2 takes no mask, so none), each priced as it by the
    deployment's terms."""
    return () if upstream_model == FILL_MODEL or is_flux2(upstream_model) else (FILL_MODEL,)


_FIRST_WAIT = 0.5
_MAX_WAIT = 5.0
_PENDING = frozenset({"Pending", "Processing", "Queued", "Task not found"})
_MODERATED = frozenset({"Content Moderated", "Request Moderated"})
_EXTRA_IMAGES = ("input_image_2", "input_image_3", "input_image_4")
_FLUX2_IMAGES = tuple(f"input_image_{n}" for n in range(2, 9))


def _aspect_ratio(size: str | None) -> str | None:
    """``aspect_ratio`` for an OpenAI ``size`` (none for ``auto``); a
    :class:`~tracking.errors.ValidationError` for one that is not ``WIDTHxHEIGHT`` with both
    sides above zero (checked here for every model: the family table knows only Kontext)."""
    if not size or size == "auto":
        return None
    w, h = sides_of(size, "FLUX")
    divisor = gcd(w, h)
    return f"{w // divisor}:{h // divisor}"


def _b64(image: ImageFile) -> str:
    return base64.b64encode(image.content).decode("ascii")


@dataclass(frozen=True, slots=True)
class _Job:
    """What the polls of one job share: where the key may go, and how to call back."""

    api_key: str
    trusted_host: str
    output_format: str

    def may_receive_key(self, url: str) -> bool:
        host = urlsplit(url).hostname or ""
        return host == self.trusted_host or host.endswith(".bfl.ai")

    def poll(self, url: str, wait: float, charged: Decimal | None = None) -> Poll:
        if not self.may_receive_key(url):
            raise APIResponseError(
                f"the job's polling_url is on another host ({urlsplit(url).hostname}); "
                "not polled, so the key does not leave the provider"
            )
        request = PreparedRequest(
            url=url,
            headers={"x-key": self.api_key, "Accept": "application/json"},
            body=b"",
            secrets=(self.api_key,),
            method="GET",
            read=lambda status, headers, body: self.status(url, wait, body, charged),
        )
        return Poll(request, wait)

    def submitted(self, status: int, headers: dict[str, str], body: bytes) -> Poll:
        answer = _json(body)
        url = answer.get("polling_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise APIResponseError("the submission's answer has no polling_url")
        return self.poll(url, _FIRST_WAIT, _charged(answer.get("cost")))

    def status(
        self, url: str, wait: float, body: bytes, charged: Decimal | None = None
    ) -> ImageResponse | Poll:
        try:
            return self._status(url, wait, body, charged)
        except APIResponseError as error:  # the job was accepted: what BFL said it costs
            error.billed_usd = charged
            raise

    def _status(
        self, url: str, wait: float, body: bytes, charged: Decimal | None
    ) -> ImageResponse | Poll:
        answer = _json(body)
        state = answer.get("status")
        if not isinstance(state, str):  # an object or a list: unhashable, no status to read
            raise APIResponseError(
                f"the job's status is not a text (got {type(state).__name__}: {str(state)[:40]!r})"
            )
        if state == "Ready":
            result = answer.get("result") or {}
            sample = result.get("sample") if isinstance(result, dict) else None
            if not isinstance(sample, str) or not sample.startswith(("http://", "https://")):
                raise APIResponseError("the job is Ready but has no result.sample URL")
            download = PreparedRequest(
                url=sample,
                headers={},
                body=b"",
                method="GET",
                read=lambda status, headers, body: self.image(body, charged),
                result=True,
            )
            return Poll(download, 0.0)
        if state in _MODERATED:
            refused = ContentPolicyError(
                f"the provider's moderation refused the job ({state}); BFL does not charge it",
                code="content_policy_violation",
            )
            refused.not_billed_reason = "moderated"  # see the module's "Billing"
            raise refused
        if state in _PENDING:
            return self.poll(url, min(wait * 1.5, _MAX_WAIT), charged)
        raise APIResponseError(f"the job ended with status {state!r}")

    def image(self, body: bytes, charged: Decimal | None = None) -> ImageResponse:
        if not is_image(body):  # an error page, an empty body: nothing to answer as an image
            error = APIResponseError(f"the job's result is not an image ({len(body):,} bytes)")
            error.billed_usd = charged
            raise error
        raw: dict[str, Any] = {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(body).decode("ascii")}],
            "output_format": self.output_format,
        }
        made = _result_size(body)
        if made is not None:  # what a per-megapixel price bills when no cost was answered
            raw["size"] = made
        response = ImageResponse(raw=raw)
        response.billed_usd = charged
        return response


#: OpenAI parameters BFL's API has no field for.
_NOT_TAKEN = (
    "markup",
    "quality",
    "background",
    "input_fidelity",
    "moderation",
    "output_compression",
    "response_format",
)


def _check_request(request: ImageEditRequest, options: CallOptions) -> None:
    """What every FLUX model takes, checked before sending, also for a model the family table
    does not know: one image per job, and none of OpenAI's parameters BFL has no field for
    (dropped with ``drop_params=True``). Sent, they were ignored without a word. A FLUX.2 call's
    ``extra_body`` is checked too (:func:`_check_flux2_extras`)."""
    makes = f"{request.upstream_model} makes 1 image per job"
    refuse_several_images(request, makes, "; loop over calls for several")
    refuse_unsupported(request, options, "Black Forest Labs", _NOT_TAKEN)
    if is_flux2(request.upstream_model):
        _check_flux2_extras(request.upstream_model, request.extra_body)


#: FLUX.2 members of ``extra_body`` with a range, by BFL's API reference: (low, high, integer)
_Range = tuple[Decimal | None, Decimal | None, bool]
_FLUX2_RANGES: dict[str, _Range] = {
    "safety_tolerance": (Decimal(0), Decimal(5), True),
    "seed": (None, None, True),
}
_FLEX_RANGES: dict[str, _Range] = {
    "steps": (Decimal(1), Decimal(50), True),
    "guidance": (Decimal("1.5"), Decimal(10), False),
}
_FLEX_ONLY = ("steps", "guidance", "prompt_upsampling")
_SIZED = ("width", "height")


def _check_flux2_extras(model: str, extra: Mapping[str, Any]) -> None:
    """A FLUX.2 call's ``extra_body``: ``seed`` an integer, ``safety_tolerance`` 0 to 5, and for
    [flex] ``steps`` 1 to 50 and ``guidance`` 1.5 to 10; the [flex] members on another model are
    refused (BFL's schema for it has no such field and would ignore them)."""
    sent = next((name for name in extra if name.startswith("input_image") or name in _SIZED), None)
    if sent is not None:  # the call's images and size are its own parameters, checked and priced
        raise ValidationError(
            f"extra_body: {sent!r} is set from the call's own parameters for {model} (image, "
            "size); pass it there",
            param="extra_body",
            rule="unsupported",
        )
    ranges = dict(_FLUX2_RANGES)
    if model.startswith("flux-2-flex"):
        ranges.update(_FLEX_RANGES)
    else:
        taken = next((name for name in _FLEX_ONLY if name in extra), None)
        if taken is not None:
            raise ValidationError(
                f"extra_body: {taken!r} is a FLUX.2 [flex] parameter; {model} has no such field "
                "(BFL would ignore it)",
                param="extra_body",
                rule="unsupported",
            )
    for name, (low, high, whole) in ranges.items():
        if name not in extra:
            continue
        value = extra[name]
        number = extra_number(value, whole)
        if (
            number is None
            or (low is not None and number < low)
            or (high is not None and number > high)
        ):
            kind = "an integer" if whole else "a number"
            bounds = f" from {low} to {high}" if low is not None else ""
            raise ValidationError(
                f"extra_body: {name} must be {kind}{bounds} for {model}, got {str(value)[:40]!r}",
                param="extra_body",
                rule="range",
            )


def _flux2_size(size: str | None) -> dict[str, int]:
    """``width`` and ``height`` for a FLUX.2 ``size`` (none for ``auto``: BFL's default, the
    input image's); a :class:`~tracking.errors.ValidationError` for sides under 64 or not
    multiples of 16 (the family table checks known models; this any ``flux-2-`` name)."""
    if not size or size == "auto":
        return {}
    width, height = sides_of(size, "FLUX.2")
    if min(width, height) < 64 or width % 16 or height % 16:
        raise ValidationError(
            f"size: FLUX.2 takes sides of at least 64 pixels, multiples of 16; got {size!r}",
            param="size",
            rule="multiple_of",
        )
    return {"width": width, "height": height}


def _charged(credits: object) -> Decimal | None:
    """USD from a FLUX.2 submission's ``cost`` (credits); None when absent or not a plain,
    plausible amount (the price table then estimates the call)."""
    return reported_charge(credits, CREDITS_PER_USD, "black_forest_labs")


def _result_size(body: bytes) -> str | None:
    """``WIDTHxHEIGHT`` of a downloaded result, from its header; None when unreadable."""
    try:
        made = read_image(body, param="result")
    except ValueError:
        return None
    return None if made.width is None else f"{made.width}x{made.height}"


def _json(body: bytes) -> dict[str, Any]:
    try:
        answer = upstream_json(body)
    except ValueError:
        raise APIResponseError("the upstream sent a body that is not JSON") from None
    if not isinstance(answer, dict):
        raise APIResponseError("the upstream's JSON is not an object")
    return answer


class BlackForestLabsProvider:
    name = "black_forest_labs"
    #: answers whole: ``stream=True`` is refused before sending (:func:`.prepare_call`)
    streams = False
    #: a mask is decoded and converted (white means edit) while the request is prepared
    converts_masks = True
    #: images are sent as base64 in JSON
    encodes_images = True
    key_variables = ("BFL_API_KEY",)
    operations = EDITS_AND_GENERATIONS

    def serves_model(self, model: str, operation: str) -> bool:
        """Edits with every FLUX model; generations with FLUX.2 alone."""
        return operation == "image_edit" or is_flux2(model)

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        _check_request(request, options)
        api_key = api_key_for(options, "Black Forest Labs", *self.key_variables)
        api_base = api_base_for(options, "BFL_API_BASE", DEFAULT_BFL_API_BASE)
        output_format = request.output_format or "png"
        body: dict[str, Any]
        if request.operation == "image_generation":  # FLUX.2 (serves_model): no input image
            model = request.upstream_model
            body = {"prompt": request.prompt, "output_format": output_format}
            body.update(_flux2_size(request.size) or {"width": 1024, "height": 1024})
        elif request.mask is not None:
            model = FILL_MODEL
            body = {
                "prompt": request.prompt,
                "image": _b64(request.images[0]),
                "mask": base64.b64encode(white_means_edit(request.mask)).decode("ascii"),
                "output_format": output_format,
            }
        else:
            model = request.upstream_model
            flux2 = is_flux2(model)
            body = {
                "prompt": request.prompt,
                "input_image": _b64(request.images[0]),
                "output_format": output_format,
            }
            more = _FLUX2_IMAGES if flux2 else _EXTRA_IMAGES
            body.update(zip(more, map(_b64, request.images[1:]), strict=False))
            if flux2:  # width and height
                body.update(_flux2_size(request.size))
            elif (ratio := _aspect_ratio(request.size)) is not None:
                body["aspect_ratio"] = ratio
        add_extra_members(body, request.extra_body, "Black Forest Labs")
        job = _Job(api_key, urlsplit(api_base).hostname or "", output_format)
        return PreparedRequest(
            url=f"{api_base}/v1/{model}",
            headers=request_headers(
                {
                    "x-key": api_key,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                options.extra_headers,
            ),
            body=json.dumps(body).encode(),
            secrets=(api_key,),
            price_size="any",
            price_model=FILL_MODEL if model == FILL_MODEL else None,
            read=job.submitted,
        )

    def parse(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse | Poll:
        # Every request this provider prepares carries its own reader (the job's).
        raise APIResponseError("a FLUX answer arrived without its job")

    def read_error(self, status: int, body: bytes) -> UpstreamError:
        error = error_object(body)
        if isinstance(error, UpstreamError):
            # FastAPI's shape: {"detail": "..."} or {"detail": [{"msg": ...}]}
            try:
                detail = upstream_json(body).get("detail")
            except (ValueError, AttributeError):
                return error
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                detail = detail[0].get("msg")
            return UpstreamError(message=str(detail)) if detail else error
        return UpstreamError(message=text_field(error, "message"), code=text_field(error, "code"))
