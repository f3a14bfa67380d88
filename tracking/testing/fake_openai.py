"""A fake OpenAI ``/images/edits`` and ``/images/generations`` upstream that speaks real HTTP
on loopback (generations: :mod:`.fake_generations`).

It is deliberately its own simple code: it does not import the SDK's request rules, so a wrong
rule cannot pass on both sides (its checks are in :mod:`.fake_rules`). It parses the multipart
body, requires a key, refuses what OpenAI refuses with OpenAI-shaped error JSON, and answers as
OpenAI does: base64 images with ``usage`` for GPT image models, ``url``s it serves itself for
dall-e-2. The images are real and reflect the edit (:mod:`.fake_images`): the input, tinted by
the prompt where the mask allows. It also serves Azure's deployment route
(``/openai/deployments/{deployment}/images/edits?api-version=...``, ``api-key`` header).

Faults (:mod:`.faults`) are injected per request with the ``x-fake-fault`` header or per server
with ``faults=[...]`` / :meth:`FakeOpenAI.inject`: a status code, latency, Retry-After,
malformed JSON, a dropped connection, a slow body, an answer without its usage.
:attr:`FakeOpenAI.hits` counts every image request that arrived, faulted or not, so tests can
count attempts. ``GET /v1/models`` lists the
image models with their ``shutdown_date`` (:mod:`.fake_models`). A request without ``model``
gets gpt-image-2, a live model.

Token counts are a documented, deterministic estimate (no tokenizer download):

* input text tokens: ``ceil(len(prompt) / 4)``;
* input image tokens: 323 per input image, a ``markup`` counted as one more input image (the
  mask is not counted);
* output image tokens per image, by quality and size, as OpenAI publishes for gpt-image-1
  (``OUTPUT_TOKENS``); for gpt-image-2 and the 2.5 / 2.6 models, the counts behind gpt-image-2's
  published per-image prices at $30 per 1M tokens (``OUTPUT_TOKENS_2``; ``xhigh`` and ``max``,
  which have no published figure, are the fake's own 1.5x and 2x of ``high``); an ``auto``
  quality answers ``medium``; an ``auto`` size answers the standard size closest to the first
  input image's aspect; other sizes scale by area;
* a 2.6 model's gif (``frame_count`` frames drawn on one sheet) or svg answer counts as one image
  of its size and quality: the usage is an image's, whatever the format.

An edit may also come as OpenAI's JSON edit body (``Content-Type: application/json``, after the
API reference's ``EditImageBodyJsonParam``: ``images`` a list of 1 to 16 objects holding exactly
one of ``image_url``, an http(s) or base64 ``data:`` URL, and ``file_id``; ``mask`` one such
object; ``prompt`` required; the form's other fields as JSON values of their type). A ``data:``
URL is decoded into the image it holds; the fake fetches no URL nor file: it stands for the
image OpenAI would fetch with a 1024x1024 PNG of its own, and records every reference as it came
(:attr:`ReceivedRequest.references`).

``canned=True`` reads each body but does no multipart or image work and answers a pre-built
response: for benchmarks, where the fake must cost as little as possible (faults still apply).

Streaming (``stream=true``, GPT image models) answers ``text/event-stream`` as OpenAI does:
``partial_images`` (0 to 3) ``image_edit.partial_image`` events, then one ``image_edit.completed``
event with the final image and ``usage``. The fake's convention for that usage: the plain
answer's usage plus ``PARTIAL_IMAGE_OUTPUT_TOKENS`` (100) output tokens per partial image, and no
``output_tokens_details``. Each event carries one image, so a stream with ``n`` above 1 is
refused as OpenAI refuses it (400 ``unsupported_parameter``, "Streaming is only supported with
n=1."). The faults ``break_after=N`` (close the connection after N events) and
``event_delay=S`` (pause between events) apply to streamed answers; a canned stream is one
partial image and the completed event.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from .app_thread import ServedApp
from .fake_admin import Billing, add_admin_routes
from .fake_images import inspect, render, solid_png
from .fake_models import models_body
from .fake_rules import (
    DALL_E_2,
    FLEXIBLE_SIZE_MODELS,
    GPT_IMAGE_MODELS,
    check_edit,
    json_edit_fields,
)
from .faults import FAULT_HEADER, Fault, next_fault, parse_fault

__all__ = [
    "DEFAULT_MODEL",
    "OUTPUT_TOKENS",
    "OUTPUT_TOKENS_2",
    "PARTIAL_IMAGE_OUTPUT_TOKENS",
    "FakeOpenAI",
    "Fault",
    "ReceivedRequest",
    "build_app",
]

#: The listening socket's backlog for ``tracking fake-openai`` (aiohttp's own default).
BACKLOG = 128

#: The model of a request that names none.
DEFAULT_MODEL = "gpt-image-2"

OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
OUTPUT_TOKENS_2: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 200, "1024x1536": 167, "1536x1024": 167},
    "medium": {"1024x1024": 1767, "1024x1536": 1367, "1536x1024": 1367},
    "high": {"1024x1024": 7024, "1024x1536": 5500, "1536x1024": 5500},
    "xhigh": {"1024x1024": 10536, "1024x1536": 8250, "1536x1024": 8250},
    "max": {"1024x1024": 14048, "1024x1536": 11000, "1536x1024": 11000},
}
IMAGE_INPUT_TOKENS = 323
#: Output tokens each partial image adds to a streamed answer's usage (the fake's convention,
#: after OpenAI's image generation guide: about 100 per partial image).
PARTIAL_IMAGE_OUTPUT_TOKENS = 100
_CANNED_STREAM_MARK = b'name="stream"'

#: OpenAI's usual wording and error type for the statuses a fault may inject.
_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    404: ("The requested resource was not found.", "invalid_request_error", None),
    408: ("Request timed out.", "invalid_request_error", None),
    409: ("Another request is in progress.", "invalid_request_error", None),
    413: ("The request is too large.", "invalid_request_error", None),
    422: ("The request could not be processed.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


@dataclass
class ReceivedRequest:
    """What the fake saw of one request (for tests to assert on)."""

    path: str
    headers: dict[str, str]
    fields: dict[str, str]
    files: list[tuple[str, str, str, int]]  # (field name, filename, content type, size)
    query: dict[str, str] = field(default_factory=dict)
    peer: tuple[str, int] | None = None  #: the client's address: tells connections apart
    #: Every text field in order, repeats included (``fields`` keeps the last of a name).
    form: list[tuple[str, str]] = field(default_factory=list)
    #: A JSON edit's image references as sent: (key, "image_url" or "file_id", value), a
    #: data: URL's value cut to its first 40 characters; empty for a multipart edit.
    references: list[tuple[str, str, str]] = field(default_factory=list)
    #: Whether the edit came as OpenAI's JSON edit body.
    json_body: bool = False


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    error_type: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class _FakeState:
    def __init__(
        self,
        api_keys: Iterable[str] | None,
        canned: bool,
        faults: Iterable[Fault | str],
        extra_models: Iterable[str],
        require_key: bool,
    ) -> None:
        self.api_keys = frozenset(api_keys) if api_keys else None
        self.canned = canned
        self.extra_models = frozenset(extra_models)
        self.require_key = require_key
        self.requests: list[ReceivedRequest] = []
        self.files: dict[str, bytes] = {}
        self.responses: list[dict[str, Any]] = []  #: every JSON body answered, oldest first
        self.counter = itertools.count(1)
        self.hits = 0  #: edit requests received, faulted or not
        self.streams_cut = 0  #: streamed answers whose client went away before their end
        self.billing = Billing()  #: what the admin endpoints bill (:mod:`.fake_admin`)
        self.faults_lock = threading.Lock()
        self.faults: list[Fault] = [parse_fault(f) if isinstance(f, str) else f for f in faults]
        self.canned_body = json.dumps(
            {
                "created": 1_700_000_000,
                "data": [{"b64_json": base64.b64encode(solid_png(8, 8, (40, 120, 200))).decode()}],
                "usage": {
                    "input_tokens": 333,
                    "input_tokens_details": {"text_tokens": 10, "image_tokens": 323},
                    "output_tokens": 272,
                    "total_tokens": 605,
                },
                "size": "1024x1024",
                "quality": "low",
                "background": "opaque",
                "output_format": "png",
            }
        ).encode()
        self.canned_events = _stream_events(json.loads(self.canned_body), 1)

    def next_fault(self, request: web.Request) -> Fault | None:
        """The request's own fault header, else the next queued server fault (consuming it)."""
        return next_fault(request.headers, self.faults, self.faults_lock)


STATE = web.AppKey("state", _FakeState)


def _gone() -> web.Response:
    """What a handler returns once the connection is gone: aiohttp cannot write it, moves on."""
    return web.Response(status=499)


def build_app(
    *,
    api_keys: Iterable[str] | None = None,
    canned: bool = False,
    faults: Iterable[Fault | str] = (),
    extra_models: Iterable[str] = (),
    require_key: bool = True,
) -> web.Application:
    """The fake as an aiohttp application (``FakeOpenAI`` runs it on a thread)."""
    state = _FakeState(api_keys, canned, faults, extra_models, require_key)
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[STATE] = state

    from .fake_generations import generate  # it builds on this module's answers

    def serving(
        answer: Callable[[_FakeState, web.Request], Awaitable[web.Response | _Streamed]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            state.hits += 1
            fault: Fault | None = None
            if state.faults or FAULT_HEADER in request.headers:
                try:
                    fault = state.next_fault(request)
                except ValueError as exc:
                    return _error(400, f"Invalid {FAULT_HEADER} header: {exc}")
            if fault is not None:
                faulted = await _apply_fault(request, fault)
                if faulted is not None:
                    return faulted
            try:
                response = await answer(state, request)
            except ConnectionError:  # the client hung up (e.g. timed out during latency)
                return _gone()
            if isinstance(response, _Streamed):
                return await _send_events(request, response, fault)
            if fault is not None and fault.no_usage and response.status == 200:
                response = _without_usage(response)
            if fault is not None and fault.slow_body:
                return await _send_slowly(request, response, fault.slow_body)
            return response

        return handler

    edits = serving(_edit)
    generations = serving(generate)

    async def serve_file(request: web.Request) -> web.Response:
        data = state.files.get(request.match_info["name"])
        if data is None:
            return _error(404, "no such file")
        return web.Response(body=data, content_type="image/png")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(request: web.Request) -> web.Response:
        return web.json_response(models_body(state.extra_models))

    app.router.add_post("/v1/images/edits", edits)
    app.router.add_post("/images/edits", edits)
    app.router.add_post("/openai/deployments/{deployment}/images/edits", edits)
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_post("/images/generations", generations)
    app.router.add_post("/openai/deployments/{deployment}/images/generations", generations)
    app.router.add_get("/files/{name}", serve_file)
    app.router.add_get("/health", health)
    add_admin_routes(app, state.billing)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    return app


async def _apply_fault(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    """Answer with the fault, or None when the request should go on (latency, slow body)."""
    if fault.status is not None or fault.malformed or fault.drop or fault.big_body is not None:
        await request.read()  # as a real server would: the whole upload arrives first
    if fault.latency:
        await asyncio.sleep(fault.latency)
    if fault.drop:
        if request.transport is not None:
            request.transport.close()
        return _gone()
    if fault.status is not None:
        message, error_type, code = _STATUS_ERRORS.get(
            fault.status, (f"HTTP {fault.status}", "invalid_request_error", None)
        )
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = str(math.ceil(fault.retry_after))
            headers["retry-after-ms"] = str(round(fault.retry_after * 1000))
        return _error(
            fault.status,
            fault.message or message,
            code=fault.code or code,
            error_type=fault.type or error_type,
            headers=headers,
        )
    if fault.malformed:
        return web.Response(
            body=b'{"created": 1700000000, "data": [{"b64_json": "iVBOR',
            content_type="application/json",
        )
    if fault.big_body is not None:
        return await _send_big(request, fault.big_body)
    return None


def _without_usage(response: web.Response) -> web.Response:
    """``response`` (a JSON answer) with its ``usage`` left out: the ``no_usage`` fault."""
    body = json.loads(response.body if isinstance(response.body, bytes) else b"{}")
    body.pop("usage", None)
    request_id = response.headers.get("x-request-id")
    return web.json_response(body, headers={"x-request-id": request_id} if request_id else None)


#: Base64 of a PNG's signature and four more bytes: 16 characters, no padding, so the ``A``s that
#: follow keep the string valid base64.
_PNG_HEAD = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d")


async def _send_big(request: web.Request, size: int) -> web.StreamResponse:
    """A 200 JSON answer of ``size`` bytes, chunked, made as it is sent (never held whole). Its
    ``b64_json`` starts as base64 of a PNG (the signature), as the client checks."""
    head = b'{"created": 1700000000, "data": [{"b64_json": "' + _PNG_HEAD
    tail = b'"}]}'
    block = b"A" * 65536
    big = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    big.enable_chunked_encoding()
    try:
        await big.prepare(request)
        await big.write(head)
        left = size - len(head) - len(tail)
        while left > 0:
            await big.write(block[: min(left, len(block))])
            left -= len(block)
        await big.write(tail)
        await big.write_eof()
    except ConnectionError:
        pass  # the client stopped reading: what a cap on answers is for
    return big


async def _send_slowly(
    request: web.Request, response: web.Response, delay: float
) -> web.StreamResponse:
    body = response.body if isinstance(response.body, bytes) else b""
    slow = web.StreamResponse(status=response.status, headers=response.headers)
    slow.content_length = len(body)
    try:
        await slow.prepare(request)
        await slow.write(body[: len(body) // 2])
        await asyncio.sleep(delay)
        await slow.write(body[len(body) // 2 :])
        await slow.write_eof()
    except ConnectionError:
        pass  # the client gave up waiting: exactly what a slow body is for
    return slow


@dataclass
class _Streamed:
    """A streamed answer to send: its SSE events, already encoded."""

    events: list[bytes]
    request_id: str


def _sse(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def _stream_events(
    body: dict[str, Any], partial_images: int, kind: str = "image_edit"
) -> list[bytes]:
    """A plain GPT image answer as OpenAI streams it: the partial images, then the completed
    event, whose usage counts the partial images' output tokens. ``kind`` names the events
    (``image_edit`` or ``image_generation``)."""
    keys: tuple[str, ...] = ("size", "quality", "background", "output_format")
    shown: dict[str, Any] = {k: body[k] for k in keys if k in body}
    b64 = body["data"][0]["b64_json"]
    created = body["created"]
    events = [
        _sse(
            {
                "type": f"{kind}.partial_image",
                "b64_json": b64,
                "created_at": created,
                **shown,
                "partial_image_index": index,
            }
        )
        for index in range(partial_images)
    ]
    usage: dict[str, Any] = dict(body["usage"])
    extra = PARTIAL_IMAGE_OUTPUT_TOKENS * partial_images
    usage["output_tokens"] += extra
    usage["total_tokens"] += extra
    completed: dict[str, Any] = {
        "type": f"{kind}.completed",
        "b64_json": b64,
        "created_at": created,
        **shown,
        "usage": usage,
    }
    events.append(_sse(completed))
    return events


async def _send_events(
    request: web.Request, streamed: _Streamed, fault: Fault | None
) -> web.StreamResponse:
    answer = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "x-request-id": streamed.request_id,
        },
    )
    break_after = fault.break_after if fault is not None else None
    delay = fault.event_delay if fault is not None else 0.0
    try:
        await answer.prepare(request)
        for index, event in enumerate(streamed.events):
            if break_after is not None and index >= break_after:
                if request.transport is not None:
                    request.transport.close()  # mid-stream: no closing chunk, no more events
                return answer
            if index and delay and not await _pause_unless_gone(request, delay):
                raise ConnectionResetError("the client went away")
            await answer.write(event)
        await answer.write_eof()
    except ConnectionError:  # the client went away mid-stream
        state = request.app[STATE]
        state.streams_cut += 1
    return answer


async def _pause_unless_gone(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the client's connection is found closed."""
    end = asyncio.get_running_loop().time() + seconds
    while (left := end - asyncio.get_running_loop().time()) > 0:
        await asyncio.sleep(min(left, 0.02))
        if request.transport is None or request.transport.is_closing():
            return False
    return True


def _streams(fields: dict[str, str]) -> bool:
    return fields.get("stream", "false").lower() in ("true", "1")


def _refused_key(state: _FakeState, request: web.Request) -> web.Response | None:
    """OpenAI's 401 for a missing or unknown key; None when the key is fine."""
    key = _api_key(request)
    if not key and state.require_key:
        return _error(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth.",
        )
    if key and state.api_keys is not None and key not in state.api_keys:
        # A careless upstream echoes the whole key: the SDK must mask it.
        return _error(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")
    return None


def _answered(
    state: _FakeState, model: str, fields: dict[str, str], body: dict[str, Any], kind: str
) -> web.Response | _Streamed:
    """A GPT image (or dall-e-2) answer, streamed when asked, recorded and billed."""
    request_id = f"req_fake_{next(state.counter)}"
    source = "image.generation" if kind == "image_generation" else "image.edit"
    if _streams(fields):  # the rules let only GPT image models stream
        events = _stream_events(body, int(fields.get("partial_images", "0")), kind)
        completed = json.loads(events[-1].split(b"data: ", 1)[1])
        state.responses.append(completed)
        state.billing.record(model, {**body, "usage": completed["usage"]}, source)  # partials too
        return _Streamed(events, request_id)
    state.responses.append(body)
    state.billing.record(model, body, source)
    return web.json_response(body, headers={"x-request-id": request_id})


async def _edit(state: _FakeState, request: web.Request) -> web.Response | _Streamed:
    refused = _refused_key(state, request)
    if refused is not None:
        return refused
    if state.canned:
        raw = await request.read()
        if _CANNED_STREAM_MARK in raw:
            return _Streamed(state.canned_events, f"req_fake_{next(state.counter)}")
        return web.Response(
            body=state.canned_body,
            content_type="application/json",
            headers={"x-request-id": f"req_fake_{next(state.counter)}"},
        )
    deployment = request.match_info.get("deployment")
    if deployment is not None and not request.query.get("api-version"):
        return _error(404, "Resource not found: the api-version query parameter is required.")
    references: list[tuple[str, str, str]] = []
    as_json = request.content_type == "application/json"
    try:
        if as_json:
            fields, files, references = _read_json_edit(await request.read())
            form = list(fields.items())
        else:
            fields, files, form = await _read_form(request)
    except ValueError as exc:
        return _error(400, str(exc))
    state.requests.append(
        ReceivedRequest(
            path=request.path,
            headers=dict(request.headers),
            fields=fields,
            files=[(name, fname, ctype, len(data)) for name, fname, ctype, data in files],
            query=dict(request.query),
            peer=_peer(request),
            form=form,
            references=references,
            json_body=as_json,
        )
    )
    model = fields.get("model") or deployment or DEFAULT_MODEL
    images = [f for f in files if f[0] in ("image", "image[]")]
    mask = next((f for f in files if f[0] == "mask"), None)
    markup = next((f for f in files if f[0] == "markup"), None)
    problem = check_edit(
        model,
        fields,
        images,
        mask,
        markup=markup,
        extra_models=state.extra_models,
        deployment=deployment,
    )
    if problem is not None:
        status, message, param, code = problem
        return _error(status, message, param=param, code=code)
    if _is_dall_e_2(model, deployment):
        body = _dall_e_2_answer(state, request, fields, images, mask)
    else:  # the markup is billed as one more input image
        body = _gpt_image_answer(
            state, request, fields, images, mask, extra_inputs=int(bool(markup))
        )
    return _answered(state, model, fields, body, "image_edit")


def _is_dall_e_2(model: str, deployment: str | None) -> bool:
    if model == DALL_E_2:
        return True
    return deployment is not None and model not in GPT_IMAGE_MODELS and "dall-e" in model


def _dall_e_2_answer(
    state: _FakeState,
    request: web.Request,
    fields: dict[str, str],
    images: list[tuple[str, str, str, bytes]],
    mask: tuple[str, str, str, bytes] | None,
) -> dict[str, Any]:
    n = int(fields.get("n", "1"))
    dims = _dimensions(fields.get("size", "1024x1024")) or (1024, 1024)
    png = render(
        image=images[0][3], mask=mask[3] if mask else None, size=dims, prompt=fields["prompt"]
    )
    data: list[dict[str, Any]] = []
    for _ in range(n):
        if fields.get("response_format", "url") == "b64_json":
            data.append({"b64_json": base64.b64encode(png).decode()})
        else:
            name = f"img-{next(state.counter)}.png"
            state.files[name] = png
            data.append({"url": f"{request.scheme}://{request.host}/files/{name}"})
    return {"created": int(time.time()), "data": data}


def _gpt_image_answer(
    state: _FakeState,
    request: web.Request,
    fields: dict[str, str],
    images: list[tuple[str, str, str, bytes]],
    mask: tuple[str, str, str, bytes] | None,
    *,
    extra_inputs: int = 0,
) -> dict[str, Any]:
    prompt = fields["prompt"]
    n = 1 if _streams(fields) else int(fields.get("n", "1"))  # a stream is one image (above)
    quality = fields.get("quality", "auto")
    quality = "medium" if quality == "auto" else quality
    size = fields.get("size", "auto")
    if size == "auto":  # a generation has no input: the fake makes it square
        size = _size_for(images[0][3]) if images else "1024x1024"
    dims = _dimensions(size) or (1024, 1024)
    output_format = fields.get("output_format", "png")
    background = fields.get("background", "auto")
    background = "opaque" if background == "auto" else background
    compression = fields.get("output_compression")
    picture = render(
        image=images[0][3] if images else None,
        mask=mask[3] if mask else None,
        size=dims,
        prompt=prompt,
        output_format=output_format,
        transparent=background == "transparent",
        compression=int(compression) if compression and compression.isdigit() else None,
        frames=int(fields.get("frame_count", "9")),
        frame_ms=int(fields.get("frame_duration_ms", "200")),
    )
    per_image = _output_tokens(
        OUTPUT_TOKENS_2 if fields.get("model") in FLEXIBLE_SIZE_MODELS else OUTPUT_TOKENS,
        quality,
        size,
        dims,
    )
    text_tokens = math.ceil(len(prompt) / 4)
    image_tokens = IMAGE_INPUT_TOKENS * (len(images) + extra_inputs)
    encoded = base64.b64encode(picture).decode()
    return {
        "created": int(time.time()),
        "data": [{"b64_json": encoded} for _ in range(n)],
        "usage": {
            "input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": per_image * n,
            "total_tokens": text_tokens + image_tokens + per_image * n,
        },
        "size": size,
        "quality": quality,
        "background": background,
        "output_format": output_format,
    }


def _peer(request: web.Request) -> tuple[str, int] | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (str(peer[0]), int(peer[1])) if peer else None


def _api_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return request.headers.get("api-key") or None


async def _read_form(
    request: web.Request,
) -> tuple[dict[str, str], list[tuple[str, str, str, bytes]], list[tuple[str, str]]]:
    if not request.content_type.startswith("multipart/form-data"):
        raise ValueError("Invalid content type: expected multipart/form-data")
    fields: dict[str, str] = {}
    form: list[tuple[str, str]] = []
    files: list[tuple[str, str, str, bytes]] = []
    reader = await request.multipart()
    while True:
        try:
            part = await reader.next()
        except HttpProcessingError as exc:  # a part's header line no server accepts (a NUL)
            raise ValueError(f"Malformed multipart body: {exc.message}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise ValueError("Malformed multipart body")
        data = await part.read()
        if part.filename is not None:
            ctype = part.headers.get("Content-Type", "application/octet-stream")
            files.append((part.name, part.filename, ctype, bytes(data)))
        else:
            fields[part.name] = bytes(data).decode("utf-8")
            form.append((part.name, fields[part.name]))
    return fields, files, form


def _read_json_edit(
    raw: bytes,
) -> tuple[dict[str, str], list[tuple[str, str, str, bytes]], list[tuple[str, str, str]]]:
    """A JSON edit body as the form's text fields, its images as uploads, and its references."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise ValueError("The JSON body must be an object.")
    fields = json_edit_fields(body)
    if isinstance(fields, tuple):  # a field of an unknown name or of the wrong type
        raise ValueError(fields[1])
    if "prompt" not in fields:
        raise ValueError("Missing required parameter: 'prompt'.")
    images = body.get("images")
    if not isinstance(images, list) or not 1 <= len(images) <= 16:
        raise ValueError("Invalid 'images': expected an array of 1 to 16 image references.")
    name = "image" if len(images) == 1 else "image[]"
    refs = [(name, item) for item in images]
    refs.extend((key, body[key]) for key in ("mask", "markup") if body.get(key) is not None)
    files: list[tuple[str, str, str, bytes]] = []
    references: list[tuple[str, str, str]] = []
    for key, item in refs:
        kind, value, data = _json_image(key, item)
        references.append((key, kind, value[:40] if value.startswith("data:") else value))
        files.append((key, f"{key.rstrip('[]')}.png", "image/png", data))
    return fields, files, references


def _json_image(key: str, item: object) -> tuple[str, str, bytes]:
    """One ImageRefParam: exactly one of ``image_url`` and ``file_id``; its bytes (a data: URL
    decoded; the fake's stand-in PNG for what OpenAI would fetch)."""
    if not isinstance(item, dict) or set(item) - {"image_url", "file_id"}:
        raise ValueError(f"Invalid '{key}': expected an object with image_url or file_id.")
    given = [k for k in ("image_url", "file_id") if item.get(k) is not None]
    if len(given) != 1 or not isinstance(item[given[0]], str):
        raise ValueError(f"Invalid '{key}': provide exactly one of image_url or file_id.")
    kind, value = given[0], item[given[0]]
    if kind == "file_id":
        return kind, value, _stand_in(key)
    if value.startswith("data:"):
        header, _, encoded = value.partition(",")
        if not header.endswith(";base64"):
            raise ValueError(f"Invalid '{key}': a data URL must be base64-encoded.")
        try:
            return kind, value, base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ValueError(f"Invalid '{key}': the data URL is not valid base64.") from None
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"Invalid '{key}': image_url must be a URL or a data URL.")
    return kind, value, _stand_in(key)


def _stand_in(key: str) -> bytes:
    """What the fake takes a fetched image to be: a 1024x1024 PNG, with an alpha channel for a
    mask or a markup (whose transparent pixels say where to edit)."""
    if key not in ("mask", "markup"):
        return solid_png(1024, 1024, (150, 120, 90))
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (1024, 1024), (0, 0, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def _dimensions(size: str) -> tuple[int, int] | None:
    width, sep, height = size.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        return None
    return int(width), int(height)


def _size_for(image: bytes) -> str:
    header = inspect(image)
    if header is None:
        return "1024x1024"
    width, height = header[1], header[2]
    if width > height * 1.2:
        return "1536x1024"
    if height > width * 1.2:
        return "1024x1536"
    return "1024x1024"


def _output_tokens(
    tables: dict[str, dict[str, int]], quality: str, size: str, dims: tuple[int, int]
) -> int:
    table = tables.get(quality, tables["medium"])
    if size in table:
        return table[size]
    return round(table["1024x1024"] * dims[0] * dims[1] / (1024 * 1024))


class FakeOpenAI(ServedApp):
    """Runs the fake on a loopback port in a background thread.

    >>> with FakeOpenAI() as fake:
    ...     tracking.image_edit(..., api_base=fake.url, api_key="sk-test")
    """

    thread_name = "fake-openai"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        canned: bool = False,
        faults: Iterable[Fault | str] = (),
        extra_models: Iterable[str] = (),
        require_key: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.app = build_app(
            api_keys=api_keys,
            canned=canned,
            faults=faults,
            extra_models=extra_models,
            require_key=require_key,
        )

    @property
    def state(self) -> _FakeState:
        return self.app[STATE]

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request the fake parsed, oldest first."""
        return self.state.requests

    @property
    def hits(self) -> int:
        """Every edit request that arrived, faulted or not: the attempts a client made."""
        return self.state.hits

    @property
    def billing(self) -> Billing:
        """What the fake billed, for its admin Usage and Costs endpoints; ``billing.factor``
        bills a model at another price."""
        return self.state.billing

    def inject(self, spec: Fault | str | None = None, /, **fields: Any) -> Fault:
        """Queue a server fault for the next request(s): ``inject("status=503", times=2)``,
        ``inject(status=429, retry_after=0)``, ``inject(drop=True, times=None)`` (every request).
        """
        fault = parse_fault(spec) if isinstance(spec, str) else (spec or Fault())
        if fields:
            fault = fault.with_changes(**fields)
        with self.state.faults_lock:
            self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Forget every queued server fault."""
        with self.state.faults_lock:
            self.state.faults.clear()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``api_base`` to pass to the SDK (it includes ``/v1``)."""
        return f"{self.base_url}/v1"


def run(
    host: str = "127.0.0.1",
    port: int = 8090,
    *,
    canned: bool = False,
    api_keys: Iterable[str] | None = None,
    faults: Iterable[Fault | str] = (),
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Serve the fake in the foreground (``tracking fake-openai``) until interrupted; on
    ``sockets`` when given (bound by the caller, listening with :data:`BACKLOG`: one aiohttp
    site each), which ``host`` and ``port`` then do not change."""
    where: dict[str, Any] = (
        {"sock": list(sockets)} if sockets is not None else {"host": host, "port": port}
    )
    web.run_app(
        build_app(api_keys=api_keys, canned=canned, faults=faults),
        **where,
        backlog=BACKLOG,
        access_log=None,
        print=lambda text: print(text, flush=True),
    )
