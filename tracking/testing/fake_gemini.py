"""A fake Gemini API (and Vertex AI) ``generateContent`` upstream for image models, on loopback.

Written from Google's Gemini API reference, independently of the SDK's provider code: it checks
the request as Google documents it (an API key in ``x-goog-api-key`` or ``?key=``; on the Vertex
route a bearer token), refuses what Google refuses with Google-shaped errors
(``{"error": {"code", "message", "status", "details"}}``), and answers with an inline PNG and
``usageMetadata`` split by modality. A request with a text part and no image part generates an
image from the prompt alone (Gemini's text-to-image); images without text are refused.

Token counts are the fake's documented convention, not Google's tokenizer:

* input text tokens: ``ceil(len(text) / 4)``; input image tokens: ``INPUT_IMAGE_TOKENS`` each;
* output image tokens per image by model and ``imageSize``, as Google's pricing page lists them
  (``OUTPUT_IMAGE_TOKENS``; 1K when no size is asked);
* a request whose ``tools`` hold Grounding with Google Search (``googleSearch`` or
  ``google_search``) reports ``TOOL_USE_PROMPT_TOKENS`` text tokens of search results in
  ``toolUsePromptTokenCount`` and ``toolUsePromptTokensDetails``, counted in
  ``totalTokenCount`` and kept out of ``promptTokenCount``, as Google's API reference describes
  the field ("the number of tokens in the results from tool executions, which are provided back
  to the model as input"); its candidate carries ``groundingMetadata`` as Google's grounding guide
  shows it: ``webSearchQueries`` (``SEARCH_QUERIES`` non-empty queries made from the prompt, and
  one empty query, which Google says it does not bill), ``groundingChunks`` (a ``web`` source
  each) and a ``searchEntryPoint``;
* a ``googleSearch`` whose ``searchTypes`` holds ``imageSearch`` (Grounding with Google Image
  Search, which Gemini 3.1 Flash Image takes) also reports ``IMAGE_SEARCH_QUERIES`` queries in
  ``groundingMetadata.imageSearchQueries`` and an ``image`` chunk each (``sourceUri``,
  ``imageUri``, ``title``, ``domain``), as Google's API reference describes the fields;
* a request whose ``tools`` hold Grounding with Google Maps (``googleMaps`` or ``google_maps``)
  is answered as Google's Maps grounding guide shows it: ``groundingChunks`` with a ``maps``
  place each (``uri``, ``title``, ``placeId``; ``MAPS_PLACES`` of them), a
  ``googleMapsWidgetContextToken`` when the tool asks ``enableWidget``, and
  ``TOOL_USE_PROMPT_TOKENS`` tool-use prompt tokens. The fake does not judge which models take
  the tool (Google lists no image model among them): it answers what a grounded answer holds, so
  a test can see what a call sent with it would be billed.

Faults (:mod:`.faults`, the ``x-fake-fault`` header or ``faults=[...]``): ``status=N`` answers a
Google-shaped error (429 ``RESOURCE_EXHAUSTED`` carries a ``RetryInfo`` of ``retry_after``
seconds, default 0), ``latency``, ``drop``, ``malformed``; ``code=blocked`` answers 200 with
``promptFeedback.blockReason`` and the prompt's tokens in ``usageMetadata``;
``code=image_safety`` answers 200 with a candidate that has finish reason ``IMAGE_SAFETY``, no
image, and ``usageMetadata`` with the prompt's tokens, no candidate tokens and
``THOUGHTS_TOKENS`` thinking tokens (as Google reports a withheld image; a grounded request's
also its ``groundingMetadata`` and tool-use prompt tokens: it searched first); ``code=text_only``
answers a text part and no image after finish reason ``STOP``, with its text tokens;
``code=bad_base64`` and ``code=html_image`` answer an image whose ``inlineData.data`` is not
base64, or base64 of HTML, with the usual usage; ``code=no_usage`` leaves ``usageMetadata`` out;
for a grounded request ``code=no_grounding`` leaves ``groundingMetadata`` out and
``code=bad_grounding`` answers ``webSearchQueries`` as a text, not a list.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .app_thread import ServedApp
from .fake_images import inspect, render
from .faults import FAULT_HEADER, Fault, next_fault, parse_fault

__all__ = [
    "IMAGE_SEARCH_QUERIES",
    "INPUT_IMAGE_TOKENS",
    "MAPS_PLACES",
    "OUTPUT_IMAGE_TOKENS",
    "SEARCH_QUERIES",
    "THOUGHTS_TOKENS",
    "TOOL_USE_PROMPT_TOKENS",
    "FakeGemini",
    "GeminiRequest",
]

INPUT_IMAGE_TOKENS = 258
#: thinking tokens an answer whose image was withheld (``code=image_safety``) reports
THOUGHTS_TOKENS = 173
#: search-result tokens a grounded request (``tools: [{"googleSearch": {}}]``) reports
TOOL_USE_PROMPT_TOKENS = 311
#: non-empty search queries a grounded request's ``groundingMetadata.webSearchQueries`` reports
SEARCH_QUERIES = 2
_SEARCH_TOOLS = ("googleSearch", "google_search")
#: image search queries a request with ``googleSearch.searchTypes.imageSearch`` reports
IMAGE_SEARCH_QUERIES = 3
#: places a request with Grounding with Google Maps reports in ``groundingChunks``
MAPS_PLACES = 2
_MAPS_TOOLS = ("googleMaps", "google_maps")
#: ``inlineData.data`` of the faults that answer a broken image: not base64; base64 of HTML
_BROKEN_IMAGES = {
    "bad_base64": "<html><body>502 Bad Gateway</body></html>",
    "html_image": base64.b64encode(b"<html><body>502 Bad Gateway</body></html>").decode(),
}
#: image output tokens per image, by model and imageSize (Google's pricing page, 2026-12-03)
OUTPUT_IMAGE_TOKENS: dict[str, dict[str, int]] = {
    # 512: Google's Vertex AI page for the model ("747 tokens for 512p", read 2026-12-05)
    "gemini-3.1-flash-image": {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    "gemini-3-pro-image": {"1K": 1120, "2K": 1120, "4K": 2000},
    "gemini-2.5-flash-image": {"1K": 1290},
    # 1K / 4K: the published $0.0336 / $0.1134 per image at $30 per 1M tokens (read 2026-12-07);
    # 2K: no page read states it, gemini-3.1-flash-image's count stands in
    "gemini-nano-banana-2.1": {"1K": 1120, "2K": 1680, "4K": 3780},
    # 1K alone: Google's Vertex AI model page, "1120 output image tokens for 1K" (2026-12-07)
    "gemini-3.1-flash-lite-image": {"1K": 1120},
}
_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
_WIDE = {"1:4", "4:1", "1:8", "8:1"}
#: the models that take the wide ratios (Google's image guide and model pages)
_WIDE_MODELS = frozenset(
    {"gemini-3.1-flash-image", "gemini-nano-banana-2.1", "gemini-3.1-flash-lite-image"}
)
_MIME_TYPES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class GeminiRequest:
    """What the fake saw of one request."""

    path: str
    model: str
    headers: dict[str, str]
    body: dict[str, Any]


def _error(
    status: int, message: str, *, details: list[dict[str, Any]] | None = None
) -> web.Response:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


def _base_model(model: str) -> str:
    return model.removesuffix("-preview")


class _State:
    def __init__(self, api_keys: Iterable[str] | None, faults: Iterable[Fault | str]) -> None:
        self.api_keys = frozenset(api_keys) if api_keys else None
        self.faults = [parse_fault(f) if isinstance(f, str) else f for f in faults]
        self.requests: list[GeminiRequest] = []
        self.hits = 0
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def next_fault(self, request: web.Request) -> Fault | None:
        return next_fault(request.headers, self.faults, self.lock)


STATE = web.AppKey("gemini_state", _State)


def build_app(
    *, api_keys: Iterable[str] | None = None, faults: Iterable[Fault | str] = ()
) -> web.Application:
    state = _State(api_keys, faults)
    app = web.Application(client_max_size=128 * 1024 * 1024)
    app[STATE] = state

    async def gemini(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return _error(403, "Method doesn't allow unregistered callers. Please use an API key.")
        if state.api_keys is not None and key not in state.api_keys:
            return _error(
                400,
                "API key not valid. Please pass a valid API key.",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        return await _generate(state, request)

    async def vertex(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return _error(401, "Request is missing required authentication credential.")
        if state.api_keys is not None and auth[7:].strip() not in state.api_keys:
            return _error(401, "Request had invalid authentication credentials.")
        return await _generate(state, request)

    app.router.add_post("/v1beta/models/{target}", gemini)
    app.router.add_post(
        "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}", vertex
    )
    return app


async def _generate(state: _State, request: web.Request) -> web.StreamResponse:
    state.hits += 1
    model, _, method = request.match_info["target"].partition(":")
    try:
        fault = state.next_fault(request)
    except ValueError as exc:
        return _error(400, f"Invalid {FAULT_HEADER} header: {exc}")
    raw = await request.read()
    if fault is not None and fault.latency:
        await asyncio.sleep(fault.latency)
    if fault is not None and fault.drop:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)
    if fault is not None and fault.status is not None:
        details = None
        if fault.status == 429:
            wait = fault.retry_after or 0
            details = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"}
            ]
        return _error(fault.status, fault.message or "Injected fault.", details=details)
    if fault is not None and fault.malformed:
        return web.Response(body=b'{"candidates": [{"content": ', content_type="application/json")
    if method != "generateContent":
        return _error(404, f"Method {method or '(none)'} is not found.")
    base = _base_model(model)
    if base not in OUTPUT_IMAGE_TOKENS:
        return _error(404, f"models/{model} is not found for API version v1beta.")
    try:
        body = json.loads(raw)
        prompt, images, config = _read_body(body, base)
    except (ValueError, KeyError, TypeError) as exc:
        return _error(400, f"Invalid JSON payload received. {exc}")
    state.requests.append(GeminiRequest(request.path, model, dict(request.headers), body))
    code = fault.code if fault is not None else None
    text_tokens = math.ceil(len(prompt) / 4)
    image_tokens = INPUT_IMAGE_TOKENS * len(images)
    prompt_usage = {
        "promptTokenCount": text_tokens + image_tokens,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": text_tokens},
            {"modality": "IMAGE", "tokenCount": image_tokens},
        ],
    }
    if code == "blocked":  # refused before generating: the prompt's tokens alone
        return web.json_response(
            {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {**prompt_usage, "totalTokenCount": text_tokens + image_tokens},
            }
        )
    if code == "image_safety":  # the image was made, then withheld: the prompt and the thinking
        total = text_tokens + image_tokens + THOUGHTS_TOKENS
        withheld: dict[str, Any] = {
            "candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}],
            "usageMetadata": {
                **prompt_usage,
                "candidatesTokenCount": 0,
                "thoughtsTokenCount": THOUGHTS_TOKENS,
                "totalTokenCount": total,
            },
            "modelVersion": model,
        }
        if _grounded(body):  # searched first: its queries and their results' tokens
            withheld["candidates"][0]["groundingMetadata"] = _grounding_metadata(prompt, None, body)
            withheld["usageMetadata"]["toolUsePromptTokenCount"] = TOOL_USE_PROMPT_TOKENS
            withheld["usageMetadata"]["totalTokenCount"] = total + TOOL_USE_PROMPT_TOKENS
        return web.json_response(withheld)
    if code == "text_only":  # a refusal in words, as a text part, after a normal finish
        reply = "I can't make that edit."
        reply_tokens = math.ceil(len(reply) / 4)
        return web.json_response(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": reply}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    **prompt_usage,
                    "candidatesTokenCount": reply_tokens,
                    "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": reply_tokens}],
                    "totalTokenCount": text_tokens + image_tokens + reply_tokens,
                },
                "modelVersion": model,
            }
        )
    size = config.get("imageSize", "1K")
    tokens = OUTPUT_IMAGE_TOKENS[base]
    output_tokens = tokens.get(size, tokens["1K"])
    first = images[0] if images else None
    picture = render(image=first, mask=None, size=_dims(config), prompt=prompt)
    data = _BROKEN_IMAGES.get(code or "", base64.b64encode(picture).decode())
    answer: dict[str, Any] = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"inlineData": {"mimeType": "image/png", "data": data}}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "modelVersion": model,
        "responseId": f"fake-gemini-{next(state.counter)}",
    }
    grounded = _grounded(body)
    if grounded and code != "no_grounding":
        answer["candidates"][0]["groundingMetadata"] = _grounding_metadata(prompt, code, body)
    if code != "no_usage":
        tool_tokens = TOOL_USE_PROMPT_TOKENS if grounded else 0
        answer["usageMetadata"] = {
            **prompt_usage,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": text_tokens + image_tokens + tool_tokens + output_tokens,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": output_tokens}],
        }
        if tool_tokens:
            answer["usageMetadata"]["toolUsePromptTokenCount"] = tool_tokens
            answer["usageMetadata"]["toolUsePromptTokensDetails"] = [
                {"modality": "TEXT", "tokenCount": tool_tokens}
            ]
    return web.json_response(answer)


def _tool(body: Any, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The request's first tool named one of ``names`` (its configuration object), or None."""
    tools = body.get("tools") if isinstance(body, dict) else None
    for tool in tools if isinstance(tools, list) else ():
        for name in names:
            if isinstance(tool, dict) and name in tool:
                config = tool[name]
                return config if isinstance(config, dict) else {}
    return None


def _grounded(body: Any) -> bool:
    """Whether the request's ``tools`` hold Grounding with Google Search or Google Maps."""
    return _tool(body, _SEARCH_TOOLS) is not None or _tool(body, _MAPS_TOOLS) is not None


def _grounding_metadata(prompt: str, code: str | None, body: Any) -> dict[str, Any]:
    """What a grounded answer reports it ran. Google Search: ``SEARCH_QUERIES`` queries made
    from the prompt and an empty one (Google's answers hold such; its billing ignores them), and
    with ``searchTypes.imageSearch`` ``IMAGE_SEARCH_QUERIES`` image search queries. Google Maps:
    ``MAPS_PLACES`` places, and the widget's context token when ``enableWidget`` is asked."""
    metadata: dict[str, Any] = {"groundingChunks": []}
    search = _tool(body, _SEARCH_TOOLS)
    if search is not None:
        queries = [f"{prompt} reference {index}" for index in range(1, SEARCH_QUERIES + 1)]
        queries.insert(1, "")
        metadata["webSearchQueries"] = " ".join(queries) if code == "bad_grounding" else queries
        metadata["groundingChunks"] += [
            {"web": {"uri": f"https://example.com/result/{index}", "title": f"Result {index}"}}
            for index in range(1, SEARCH_QUERIES + 1)
        ]
        metadata["searchEntryPoint"] = {"renderedContent": "<div>Google Search suggestions</div>"}
        types = search.get("searchTypes")
        if isinstance(types, dict) and "imageSearch" in types:
            metadata["imageSearchQueries"] = [
                f"{prompt} picture {index}" for index in range(1, IMAGE_SEARCH_QUERIES + 1)
            ]
            metadata["groundingChunks"] += [
                {
                    "image": {
                        "sourceUri": f"https://example.com/page/{index}",
                        "imageUri": f"https://example.com/picture/{index}.png",
                        "title": f"Picture {index}",
                        "domain": "example.com",
                    }
                }
                for index in range(1, IMAGE_SEARCH_QUERIES + 1)
            ]
    maps = _tool(body, _MAPS_TOOLS)
    if maps is not None:
        metadata["groundingChunks"] += [
            {
                "maps": {
                    "uri": f"https://maps.google.com/?cid={1000 + index}",
                    "title": f"Place {index}",
                    "placeId": f"places/fake-place-{index}",
                }
            }
            for index in range(1, MAPS_PLACES + 1)
        ]
        if maps.get("enableWidget") is True:
            metadata["googleMapsWidgetContextToken"] = "widgetcontent/fake-maps-context"
    return metadata


def _read_body(body: Any, model: str) -> tuple[str, list[bytes], dict[str, str]]:
    contents = body["contents"]
    parts = contents[-1]["parts"]
    texts = [part["text"] for part in parts if "text" in part]
    images: list[bytes] = []
    for part in parts:
        inline = part.get("inlineData")
        if inline is None:
            continue
        if inline.get("mimeType") not in _MIME_TYPES:
            raise ValueError(f"Unsupported MIME type: {inline.get('mimeType')}")
        data = base64.b64decode(inline["data"], validate=True)
        if inspect(data) is None:
            raise ValueError("Unable to process input image.")
        images.append(data)
    if not texts:  # images alone are refused; a text part alone generates an image
        raise ValueError("A request needs a text part.")
    generation = body.get("generationConfig") or {}
    if "IMAGE" not in (generation.get("responseModalities") or ["TEXT", "IMAGE"]):
        raise ValueError("responseModalities must include IMAGE for an image model.")
    config = generation.get("imageConfig") or {}
    ratio = config.get("aspectRatio")
    allowed = _RATIOS | (_WIDE if model in _WIDE_MODELS else set())
    if ratio is not None and ratio not in allowed:
        raise ValueError(f"Unsupported aspect ratio: {ratio}")
    size = config.get("imageSize")
    if size is not None and size not in OUTPUT_IMAGE_TOKENS[model]:
        raise ValueError(f"Unsupported image size: {size}")
    return " ".join(texts), images, config


def _dims(config: dict[str, str]) -> tuple[int, int]:
    width, _, height = config.get("aspectRatio", "1:1").partition(":")
    side = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}.get(config.get("imageSize", "1K"), 1024)
    ratio = int(width) / int(height)
    return round(side * math.sqrt(ratio)), round(side / math.sqrt(ratio))


class FakeGemini(ServedApp):
    """Runs the fake Gemini API on a loopback port in a background thread.

    >>> with FakeGemini(api_keys=["g-key"]) as fake:
    ...     tracking.image_edit(model="gemini/gemini-3.1-flash-image", api_base=fake.url, ...)
    """

    thread_name = "fake-gemini"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        faults: Iterable[Fault | str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.app = build_app(api_keys=api_keys, faults=faults)

    @property
    def requests(self) -> list[GeminiRequest]:
        return self.app[STATE].requests

    @property
    def hits(self) -> int:
        return self.app[STATE].hits

    def inject(self, spec: Fault | str) -> None:
        self.app[STATE].faults.append(parse_fault(spec) if isinstance(spec, str) else spec)

    @property
    def url(self) -> str:
        """The ``api_base`` for the ``gemini`` and ``vertex_ai`` providers."""
        return f"http://{self.host}:{self.port}"
