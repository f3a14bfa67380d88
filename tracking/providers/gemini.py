"""Google's Gemini API: ``POST {api_base}/v1beta/models/{model}:generateContent``.

``model="gemini/gemini-3.1-flash-image"`` edits with Gemini's native image models ("Nano
Banana"). The key goes in the ``x-goog-api-key`` header, from ``api_key`` or ``GEMINI_API_KEY``
(then ``GOOGLE_API_KEY``); ``api_base`` defaults to Google's endpoint (``GEMINI_API_BASE``
overrides it). The request is JSON: the prompt as a text part, each input image as an
``inlineData`` part (base64), image output asked for with ``responseModalities: ["IMAGE"]``;
a generation sends the text part alone.

OpenAI's ``size`` becomes ``imageConfig``: ``WIDTHxHEIGHT`` picks the model's nearest aspect
ratio (compared on a log scale, so 2:1 is as far from 1:1 as 1:2) and, for models that take it,
the smallest resolution tier (512 where the model has it, 1K, 2K, 4K) whose side is at least two
thirds of the long side; ``auto`` or no size leaves both to the model (it keeps the input's
aspect, at 1K). The answer's inline images become ``data[].b64_json`` and ``usageMetadata``
becomes OpenAI-style ``usage`` split by modality (text and image input, image and text output,
thinking counted as text output), so pricing, the SDK, the proxy and the official clients see
the OpenAI shape.

A refusal by Google's safety system (``promptFeedback.blockReason``, a safety finish reason, or
an answer with no image) is a :class:`~tracking.errors.ContentPolicyError`; an answer with no
image after another finish reason (text only), or whose ``inlineData`` is not base64 of an image,
an :class:`~tracking.errors.APIResponseError`.

Billing of answers without an image: Google bills the Gemini API by token count and exempts only
requests that fail with an HTTP 400 or 500 error (Gemini API billing FAQ, "What am I billed for?"
and "Am I charged for failed requests?", https://ai.google.dev/gemini-api/docs/billing, official,
read 2026-12-04). A safety block or a text-only answer is an HTTP 200 that reports the tokens it
consumed in ``usageMetadata`` (the prompt, any thinking, output that was withheld), so it is
billed for them: the error carries that usage (``billed_usage``) and the call is priced from it
(``cost_source="usage"``; no image output is charged when ``candidatesTokenCount`` is 0). An
answer without ``usageMetadata`` has nothing to price from: a refusal is then estimated from its
input alone (the flow marks the error with the answer's status, ``answer_status``), an
unreadable answer as a whole image. Error bodies
(``{"error": {"code", "message", "status", "details"}}``) keep Google's ``status`` as the error
``code``; a ``RetryInfo`` detail gives the wait before a retry; ``API_KEY_INVALID`` (sent with
HTTP 400) is an authentication failure.

Billing of tool-use prompt tokens: a request with a tool (Grounding with Google Search, which
Gemini's image models take in ``tools``) reports the tokens of the tool's results in
``toolUsePromptTokenCount`` (and by modality in ``toolUsePromptTokensDetails``), outside
``promptTokenCount``. They are billed as input tokens at the input rates, by modality (text unless
the details say IMAGE). Google's Vertex AI API describes the field as "the number of tokens in the
results from tool executions, which are provided back to the model as input" (its discovery
document, as Google's generated client documents ``UsageMetadata``:
https://pub.dev/documentation/googleapis/latest/aiplatform_v1/GoogleCloudAiplatformV1UsageMetadata/toolUsePromptTokenCount.html,
official; the Gemini API's own: "number of tokens present in tool-use prompt(s)",
https://googleapis.github.io/java-genai/javadoc/google-genai/com.google.genai.types/-usage-metadata/tool-use-prompt-token-count.html,
official; both read 2026-12-06) and Google bills by token count (the billing FAQ above). No Google
pricing page found here names a rate of their own, so the input rate is the conservative reading: it
never leaves tokens Google counts out of the bill.

Billing of Grounding with Google Search: besides its result tokens, Google charges a fee per
search query the model runs (Gemini 3 models: the answer's non-empty
``groundingMetadata.webSearchQueries``; Google ignores empty ones) or per grounded prompt (Gemini
2.5: one per request). A request whose ``tools`` hold ``googleSearch`` (or ``google_search``) is
read with :meth:`GeminiAnswers.parse_grounded`, which puts a
:class:`~tracking.response.SearchGrounding` on the response (on the error, for an answer without
an image: ``billed_grounding``); the price entry says which unit its fee is charged per and at
what rate (``tools.google_search`` in ``prices.json``). An answer that does not say what it ran
(no ``groundingMetadata``, or ``webSearchQueries`` that is not a list of texts) is taken to have
run one query (``reported=False``): its fee is an estimate, never $0. Image search queries
(``groundingMetadata.imageSearchQueries``, answered when ``googleSearch.searchTypes`` holds
``imageSearch``) are not counted: no page read says whether or at what rate Google bills them
(docs/gemini.md).

Grounding with Google Maps (``googleMaps`` or ``google_maps`` in ``tools``) is refused before
sending with an :class:`~tracking.errors.UnsupportedParamsError` (``drop_params=True`` drops the
tool instead): Google lists no image model among the models that take it (Firebase AI Logic's
"Grounding with Google Maps" page lists only text models, while its Google Search page lists the
image models; https://firebase.google.com/docs/ai-logic/grounding-google-maps, official, read
2026-12-07), so no price entry gives its fee ($25 per 1,000 grounded prompts for Gemini 2.5
models, as Google's pricing page is quoted on Google's forum,
https://discuss.ai.google.dev/t/gemini-2-5-pro-ai-studio-google-maps-grounding-how-are-tool-use-context-tokens-billed/128770,
secondary, read 2026-12-07), and a call sent with it would be billed without it.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import (
    APIError,
    APIResponseError,
    ContentPolicyError,
    UnsupportedParamsError,
    ValidationError,
)
from ..families import resolution_tier
from ..images import encodes_image
from ..response import (
    MAPS_TOOLS,
    ImageResponse,
    SearchGrounding,
    UntrustedUsage,
    asks_google_maps,
    asks_google_search,
    reported_usage,
    upstream_json,
    usage_count,
)
from .base import (
    EDITS_AND_GENERATIONS,
    GPT_IMAGE_OPTIONS,
    PreparedRequest,
    UpstreamError,
    api_base_for,
    api_key_for,
    error_object,
    refuse_several_images,
    refuse_unsupported,
    request_headers,
    sides_of,
    text_field,
)

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = [
    "GEMINI_IMAGE_MODELS",
    "GeminiImageModel",
    "GeminiProvider",
    "check_request",
    "image_config",
    "search_grounding",
]

DEFAULT_GEMINI_API_BASE = "https://generativelanguage.googleapis.com"

_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


@dataclass(frozen=True, slots=True)
class GeminiImageModel:
    """What one Gemini image model takes in ``imageConfig`` (from Google's image guide)."""

    aspect_ratios: tuple[str, ...]
    #: resolution tiers for ``imageSize``; empty: the model takes no ``imageSize`` (1K only)
    image_sizes: tuple[str, ...] = ()


#: Sources: Google's Gemini API image-generation guide and model pages, read 2026-12-03; the
#: 512 tier of gemini-3.1-flash-image (``imageSize`` "512", as Google's Firebase AI Logic
#: clients name it: ``ImageConfig.ImageSize.Size512``) from Google's Vertex AI model page
#: (docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/3-1-flash-image, "747
#: tokens for 512p (0.25MP)"), read 2026-12-05.
GEMINI_IMAGE_MODELS: Mapping[str, GeminiImageModel] = {
    "gemini-3.1-flash-image": GeminiImageModel(
        (*_RATIOS, "1:4", "4:1", "1:8", "8:1"), ("512", "1K", "2K", "4K")
    ),
    "gemini-3-pro-image": GeminiImageModel(_RATIOS, ("1K", "2K", "4K")),
    "gemini-3.1-flash-image-preview": GeminiImageModel(
        (*_RATIOS, "1:4", "4:1", "1:8", "8:1"), ("1K", "2K", "4K")
    ),
    "gemini-3-pro-image-preview": GeminiImageModel(_RATIOS, ("1K", "2K", "4K")),
    "gemini-2.5-flash-image": GeminiImageModel(_RATIOS),
    # Nano Banana 2.1: the wide ratios and 1K / 2K / 4K from Google's changelog of 2026-10-06
    # (ai.google.dev/gemini-api/docs/changelog, read 2026-12-07); no 512 tier, which the API
    # refuses for it (TanStack AI's Gemini adapter 0.36.0 release notes, read 2026-12-07)
    "gemini-nano-banana-2.1": GeminiImageModel(
        (*_RATIOS, "1:4", "4:1", "1:8", "8:1"), ("1K", "2K", "4K")
    ),
    # Nano Banana 2 Lite: the same ratios, 1K alone (Google's Vertex AI model page, read
    # 2026-12-07: "Supported resolutions: 1K")
    "gemini-3.1-flash-lite-image": GeminiImageModel((*_RATIOS, "1:4", "4:1", "1:8", "8:1")),
}
_DEFAULT_MODEL = GeminiImageModel(_RATIOS)

#: Finish reasons with which Gemini reports that its safety system withheld the image.
_SAFETY_FINISH = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
        "NO_IMAGE",
        "IMAGE_OTHER",
    }
)


def _ratio_value(ratio: str) -> float:
    width, _, height = ratio.partition(":")
    return int(width) / int(height)


def image_config(size: str | None, model: str) -> tuple[dict[str, str], str]:
    """``imageConfig`` for an OpenAI ``size``, and the resolution tier it bills at; a
    :class:`~tracking.errors.ValidationError` for a size that is not ``auto`` or
    ``WIDTHxHEIGHT`` with both sides above zero (checked here for every model: the family table
    knows only some)."""
    spec = GEMINI_IMAGE_MODELS.get(model, _DEFAULT_MODEL)
    if not size or size == "auto":
        return {}, "1K"
    width, height = sides_of(size, "Gemini")
    target = math.log(width / height)
    ratio = min(spec.aspect_ratios, key=lambda r: abs(math.log(_ratio_value(r)) - target))
    config = {"aspectRatio": ratio}
    if not spec.image_sizes:
        return config, "1K"
    tier = resolution_tier(width, height, spec.image_sizes)
    config["imageSize"] = tier
    return config, tier


#: OpenAI parameters Gemini's ``generateContent`` has no field for (its answer is base64).
_NOT_TAKEN = ("mask", *GPT_IMAGE_OPTIONS, "response_format")


def check_request(request: ImageEditRequest, options: CallOptions) -> None:
    """What Gemini's image models take, checked before sending for every model, also one the
    family table does not know (a new model): one image per request, and none of OpenAI's
    parameters it has no field for (dropped with ``drop_params=True``). Sent, they were ignored
    upstream without a word: one image made of the ``n`` asked, a mask not applied."""
    makes = f"{request.upstream_model} makes 1 image per request"
    refuse_several_images(request, makes, "; loop over calls for several")
    refuse_unsupported(request, options, "Gemini", _NOT_TAKEN)
    if asks_google_maps(request.extra_body) and not options.drop_params:
        raise UnsupportedParamsError(
            f"extra_body.tools: Grounding with Google Maps is not offered for Gemini's image "
            f"models ({request.upstream_model}): Google lists no image model among those that "
            "take it, and a call asking for it would be billed at a fee no price here gives; "
            "leave googleMaps out, or pass drop_params=True to drop it",
            param="extra_body",
            rule="unsupported",
        )


def _without_maps(tools: Any) -> Any:
    """``tools`` without Grounding with Google Maps (``drop_params=True``); None when nothing is
    left, so the member is left out."""
    if not isinstance(tools, list):
        return tools
    kept = [
        tool
        for tool in tools
        if not (isinstance(tool, Mapping) and any(name in tool for name in MAPS_TOOLS))
    ]
    return kept or None


def generate_content_body(
    request: ImageEditRequest, *, drop_params: bool = False
) -> tuple[bytes, str]:
    """The ``generateContent`` JSON for an edit (or a generation: the prompt alone, no image
    parts), and the tier it bills at. ``drop_params``: Grounding with Google Maps, which
    :func:`check_request` otherwise refuses, is dropped from ``extra_body``'s ``tools``."""
    parts: list[dict[str, Any]] = [{"text": request.prompt}]
    parts.extend(
        {
            "inlineData": {
                "mimeType": image.content_type,
                "data": base64.b64encode(image.content).decode("ascii"),
            }
        }
        for image in request.images
    )
    config, tier = image_config(request.size, request.upstream_model)
    members, generation_members = _extra_members(request.extra_body)
    if drop_params and asks_google_maps(members):
        tools = _without_maps(members.pop("tools"))
        if tools is not None:
            members["tools"] = tools
    generation: dict[str, Any] = {"responseModalities": ["IMAGE"], **generation_members}
    if config:
        generation["imageConfig"] = config
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": generation,
        **members,
    }
    return json.dumps(body).encode(), tier


#: ``generateContent`` members the call is made, priced and read by, which ``extra_body`` may
#: not set (Google's JSON takes the proto's snake_case names as well as the camelCase ones):
#: with their value the upstream would make and bill other images than the ledger records (a 4K
#: ``imageSize`` for a call priced at 1K, ``candidateCount`` images priced as one, other
#: ``contents``) or answer in another shape (``responseModalities``).
_OWN_MEMBERS = {
    "contents": "the prompt and images: pass prompt= and image=",
    "generation_config": "spell it generationConfig",
}
_OWN_GENERATION_MEMBERS = {
    "imageConfig": "the aspect ratio and the resolution tier the call is priced by: pass size=",
    "image_config": "the aspect ratio and the resolution tier the call is priced by: pass size=",
    "candidateCount": "the number of images the call is priced by: one per call",
    "candidate_count": "the number of images the call is priced by: one per call",
    "responseModalities": "the answer must hold an image",
    "response_modalities": "the answer must hold an image",
}


def _extra_members(extra_body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``extra_body`` as the body's own members and ``generationConfig``'s (merged into the
    call's, never replacing it); a :class:`~tracking.errors.ValidationError` for a member the
    call itself sets (:data:`_OWN_MEMBERS`, :data:`_OWN_GENERATION_MEMBERS`)."""
    members = dict(extra_body)
    for name, why in _OWN_MEMBERS.items():
        if name in members:
            raise _own_member(name, why)
    generation = members.pop("generationConfig", None)
    if generation is None:
        return members, {}
    if not isinstance(generation, Mapping):
        raise ValidationError(
            f"extra_body: 'generationConfig' must be an object, got {type(generation).__name__}",
            param="extra_body",
            rule="type",
        )
    for name, why in _OWN_GENERATION_MEMBERS.items():
        if name in generation:
            raise _own_member(f"generationConfig.{name}", why)
    return members, dict(generation)


def _own_member(name: str, why: str) -> ValidationError:
    return ValidationError(
        f"extra_body: {name!r} is set by the call ({why}); extra_body may not override it",
        param="extra_body",
        rule="unsupported",
    )


def search_grounding(payload: Mapping[str, Any]) -> SearchGrounding:
    """What a grounded request's answer says it ran: the non-empty texts of its first
    candidate's ``groundingMetadata.webSearchQueries`` (Google ignores empty ones when it bills).
    An answer that does not say (no ``groundingMetadata``, or ``webSearchQueries`` absent or not
    a list of texts) is taken to have run one query, flagged ``reported=False``: the fee is then
    an estimate, never $0 (the model may also have chosen not to search)."""
    candidates = payload.get("candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates else None
    metadata = first.get("groundingMetadata") if isinstance(first, dict) else None
    queries = metadata.get("webSearchQueries") if isinstance(metadata, dict) else None
    if not isinstance(queries, list) or not all(isinstance(query, str) for query in queries):
        return SearchGrounding(queries=1, reported=False)
    return SearchGrounding(queries=sum(1 for query in queries if query.strip()))


class GeminiAnswers:
    """Reading Gemini's ``generateContent`` answers and errors (Gemini API and Vertex AI)."""

    def parse_grounded(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse:
        """:meth:`parse` for a request with Grounding with Google Search: the response (or the
        error of an answer without an image) carries what the answer says the search ran."""
        return self.parse(status, headers, body, grounded=True)

    def parse(
        self, status: int, headers: dict[str, str], body: bytes, *, grounded: bool = False
    ) -> ImageResponse:
        try:
            payload = upstream_json(body)
        except ValueError:
            raise APIResponseError("the upstream sent a body that is not JSON") from None
        if not isinstance(payload, dict):
            raise APIResponseError("the upstream's JSON is not an object")
        usage = openai_usage(payload.get("usageMetadata"))
        grounding = search_grounding(payload) if grounded else None
        try:
            images = _images(payload)
        except APIError as error:  # no usable image, but the tokens it reports are billed
            error.billed_usage = reported_usage(usage)
            error.billed_grounding = grounding
            raise
        raw: dict[str, Any] = {
            "created": int(time.time()),
            "data": [{"b64_json": image["data"]} for image in images],
            "output_format": _format_of(images[0].get("mimeType")),
        }
        if usage is not None:
            raw["usage"] = usage
        return ImageResponse(raw=raw, grounding=grounding)

    def read_error(self, status: int, body: bytes) -> UpstreamError:
        error = error_object(body)
        if isinstance(error, UpstreamError):
            return error
        retry_after: float | None = None
        override: int | None = None
        for detail in error.get("details") or ():
            if not isinstance(detail, dict):
                continue
            kind = str(detail.get("@type", ""))
            if kind.endswith("google.rpc.RetryInfo"):
                retry_after = _seconds(detail.get("retryDelay"))
            elif kind.endswith("google.rpc.ErrorInfo") and detail.get("reason") in (
                "API_KEY_INVALID",
                "API_KEY_EXPIRED",
            ):
                override = 401
        return UpstreamError(
            message=text_field(error, "message"),
            code=text_field(error, "status"),
            status=override,
            retry_after=retry_after,
        )


def _images(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's inline images; a :class:`~tracking.errors.ContentPolicyError` when the safety
    system withheld them, an :class:`~tracking.errors.APIResponseError` when there is none or
    one is not base64 of an image.

    Parts marked ``"thought": true`` (the API's ``Part.thought``: "the part is thought from the
    model") are left out: the image models think in images, and up to two interim drafts come
    before the final image, which is the answer (Google's image-generation guide, "Thinking
    process", as quoted by help.apiyi.com/en?p=26130 and blog.laozhang.ai, "temporary images
    nano banana", read 2026-12-06; Google's own page was not readable here)."""
    feedback = payload.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise ContentPolicyError(
            f"the upstream's safety system blocked the prompt ({feedback['blockReason']})",
            code="content_policy_violation",
        )
    candidates = payload.get("candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates else {}
    content = first.get("content") if isinstance(first, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    images = [
        part["inlineData"]
        for part in (parts if isinstance(parts, list) else [])
        if isinstance(part, dict)
        and part.get("thought") is not True  # a draft of the thinking, not the answer
        and isinstance(part.get("inlineData"), dict)
        and isinstance(part["inlineData"].get("data"), str)
    ]
    finish = first.get("finishReason") if isinstance(first, dict) else None
    if not isinstance(finish, str):  # an object or a list (unhashable): no reason to read
        finish = None
    if not images:
        if finish in _SAFETY_FINISH or finish is None or not isinstance(candidates, list):
            raise ContentPolicyError(
                f"the upstream returned no image (finish reason {finish or 'none'}); its "
                "safety system most likely withheld it",
                code="content_policy_violation",
            )
        raise APIResponseError(f"the upstream returned no image (finish reason {finish})")
    for index, image in enumerate(images):
        if not encodes_image(image["data"]):
            raise APIResponseError(f"the upstream's image {index} is not base64 of an image")
    return images


def openai_usage(metadata: Any) -> dict[str, Any] | None:
    """Gemini's ``usageMetadata`` as OpenAI's Images API ``usage``, split by modality.

    Tokens of a modality the answer does not break down are counted as the dearer kind (image
    output, text input), so a cost is never understated; thinking tokens are billed as text
    output, and ``cachedContentTokenCount`` becomes ``cached_tokens``. Tool-use prompt tokens
    (``toolUsePromptTokenCount``: the results of a tool such as Grounding with Google Search,
    given back to the model) are input, by their modality (the module's "Billing of tool-use
    prompt tokens"). None
    when there is no usage, or one that cannot be trusted (a count that is not a whole number
    from 0 to :data:`~tracking.response.MAX_TOKENS`: a string, a float, a negative; a details
    field that is not a list; details above their total, IMAGE input tokens above
    ``promptTokenCount`` or ``toolUsePromptTokenCount``, TEXT output tokens above
    ``candidatesTokenCount``): the call is then priced by estimate, as an OpenAI-shaped
    answer's untrusted usage is, never from counts read as 0.
    """
    if not isinstance(metadata, dict):
        return None
    try:
        prompt = usage_count(metadata.get("promptTokenCount"))
        candidates = usage_count(metadata.get("candidatesTokenCount"))
        thoughts = usage_count(metadata.get("thoughtsTokenCount"))
        tool_use = usage_count(metadata.get("toolUsePromptTokenCount"))
        cached = usage_count(metadata.get("cachedContentTokenCount"))
        total = usage_count(metadata.get("totalTokenCount"))
        by_input = _by_modality(metadata.get("promptTokensDetails"))
        by_tool_use = _by_modality(metadata.get("toolUsePromptTokensDetails"))
        by_output = _by_modality(metadata.get("candidatesTokensDetails"))
    except UntrustedUsage:
        return None
    prompt_image, tool_use_image = by_input.get("IMAGE", 0), by_tool_use.get("IMAGE", 0)
    output_text = by_output.get("TEXT", 0)
    if prompt_image > prompt or tool_use_image > tool_use or output_text > candidates:
        return None  # a part above its whole
    input_image = prompt_image + tool_use_image
    input_text = (prompt - prompt_image if by_input else prompt) + tool_use - tool_use_image
    output_image = candidates - output_text
    output_text += thoughts
    details: dict[str, int] = {"text_tokens": input_text, "image_tokens": input_image}
    if cached:
        details["cached_tokens"] = cached
    return {
        "input_tokens": prompt + tool_use,
        "input_tokens_details": details,
        "output_tokens": output_image + output_text,
        "output_tokens_details": {"image_tokens": output_image, "text_tokens": output_text},
        "total_tokens": total or prompt + tool_use + candidates + thoughts,
    }


def _by_modality(details: Any) -> dict[str, int]:
    """Token counts by modality; :class:`~tracking.response.UntrustedUsage` when the details
    are not a list or a count in them cannot be trusted."""
    if details is None:
        return {}
    if not isinstance(details, list):
        raise UntrustedUsage
    counts: dict[str, int] = {}
    for item in details:
        if isinstance(item, dict) and isinstance(item.get("modality"), str):
            count = usage_count(item.get("tokenCount"))
            counts[item["modality"]] = counts.get(item["modality"], 0) + count
    return counts


def _seconds(value: Any) -> float | None:
    """``"37s"`` or ``"1.5s"`` (protobuf Duration in JSON) -> seconds; None when unreadable."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _format_of(mime_type: Any) -> str:
    if isinstance(mime_type, str) and mime_type.startswith("image/"):
        return {"jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}.get(mime_type[6:], "png")
    return "png"


class GeminiProvider(GeminiAnswers):
    name = "gemini"
    #: answers whole: ``stream=True`` is refused before sending (:func:`.prepare_call`)
    streams = False
    #: images are sent as base64 in JSON: large ones are prepared off the event loop
    encodes_images = True
    key_variables = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    operations = EDITS_AND_GENERATIONS

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        check_request(request, options)
        api_key = api_key_for(options, "Gemini", *self.key_variables)
        api_base = api_base_for(options, "GEMINI_API_BASE", DEFAULT_GEMINI_API_BASE)
        body, tier = generate_content_body(request, drop_params=options.drop_params)
        model = quote(request.upstream_model, safe="")
        return PreparedRequest(
            url=f"{api_base}/v1beta/models/{model}:generateContent",
            headers=request_headers(
                {
                    "x-goog-api-key": api_key,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                options.extra_headers,
            ),
            body=body,
            secrets=(api_key,),
            price_size=tier,
            read=self.parse_grounded if asks_google_search(request.extra_body) else None,
        )
