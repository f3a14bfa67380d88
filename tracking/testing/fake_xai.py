"""A fake xAI image API on loopback (edits and generations), written from xAI's image guides and
API reference.

``POST /v1/images/edits`` takes JSON (``Content-Type: application/json``; anything else is 415)
with ``Authorization: Bearer``: ``prompt``, the input as ``image: {"url"}`` or as ``images:
[{"url"}, ...]`` (one to three; never both), ``model``, ``n`` (1 to 10), ``aspect_ratio`` (one of
xAI's thirteen or ``auto``), ``resolution`` (``1k``, ``2k``), ``response_format`` (``url``, the
default, or ``b64_json``), ``user``. ``size`` and ``style`` are refused as xAI refuses them
("Argument not supported"). Only base64 data URIs are read: the fake never goes to the network,
so a web URL is an image it cannot fetch.

The answer is ``{"created", "data": [{"b64_json" | "url", "mime_type", "revised_prompt"}],
"block_reason": null, "usage": {"cost_in_usd_ticks"}}``; the ticks (10^10 per USD) are what xAI
bills for an edit, the output images and the input images both: :data:`OUTPUT_TICKS` per output
image (xAI's $0.02) and :data:`INPUT_TICKS` per input image (a stand-in figure: xAI says input
images are billed but the fake cannot confirm their price). Errors are xAI's flat ``{"code",
"error"}``; a missing key is 401, an incorrect one 400, as xAI answers them.

``POST /v1/images/generations`` (xAI's image generation guide and API reference, read
2026-12-07) takes the same JSON without images: ``prompt``, ``model``, ``n``, ``aspect_ratio``,
``resolution``, ``response_format``, ``user`` and ``quality`` (``low``, ``medium``, ``high``,
which the reference lists for generations); ``size`` and ``style`` are refused the same way, and
an ``image`` or ``images`` is refused too (the fake's choice: the reference lists no input image
for a generation, and an edit has its own endpoint). ``aspect_ratio`` ``auto`` makes a square
image. Its answer has the edit's shape; the ticks are :data:`OUTPUT_TICKS` per output image (a
generation has no input image to bill).

``grok-imagine-image-2.0`` (xAI's release notes and its migration guide for
grok-imagine-image-quality, read 2026-12-07) takes the same requests plus ``quality`` on both
endpoints (``low``, ``medium`` or ``auto``, the default, served at ``low`` for a generation and
``medium`` for an edit; ``high`` is refused), up to five source images for an edit and the 21:9
and 5:2 aspect ratios. Its ticks are :data:`OUTPUT_TICKS_2` per output image by the quality served
and the resolution (``low`` at 1k is xAI's $0.05 for grok-imagine-image-quality less the $0.01
the migration guide states; the other three are stand-ins in the ratio resellers quote), plus
:data:`INPUT_TICKS` per input image of an edit.

Faults (:mod:`.faults` syntax) come from the ``x-fake-fault`` header or the server's queue
(``faults=[...]``, :meth:`FakeXAI.inject`): ``status=N`` (with ``retry_after``, ``message``)
answers that error, ``code=moderation`` a 400 naming the content moderation, ``code=blocked`` a
200 with a ``block_reason`` and no image, ``latency=S`` waits first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .app_thread import ServedApp
from .fake_images import inspect, render
from .faults import Fault, next_fault, parse_fault

__all__ = ["INPUT_TICKS", "OUTPUT_TICKS", "OUTPUT_TICKS_2", "FakeXAI", "XAIRequest"]

OUTPUT_TICKS = 200_000_000  # $0.02 per output image
INPUT_TICKS = 20_000_000  # $0.002 per input image (stand-in)
#: grok-imagine-image-2.0's ticks per output image by (quality served, resolution)
OUTPUT_TICKS_2 = {
    ("low", "1k"): 400_000_000,  # $0.04
    ("medium", "1k"): 600_000_000,  # $0.06
    ("low", "2k"): 600_000_000,  # $0.06
    ("medium", "2k"): 800_000_000,  # $0.08
}
_MODEL_2 = "grok-imagine-image-2.0"
_MODELS = frozenset({"grok-imagine-image", _MODEL_2})
_RATIOS_2 = frozenset({"21:9", "5:2"})
_QUALITIES_2 = frozenset({"low", "medium", "auto"})
_RATIOS = frozenset(
    {"1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9", "1:2"}
    | {"2:1", "auto"}
)
_SIDES = {"1k": 1024, "2k": 2048}


@dataclass
class XAIRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    path: str = "/v1/images/edits"  #: which endpoint it was sent to


@dataclass
class _State:
    api_keys: frozenset[str] | None
    faults: list[Fault]
    requests: list[XAIRequest] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: Any = field(default_factory=lambda: itertools.count(1))


STATE = web.AppKey("xai_state", _State)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"code": code, "error": message}, status=status, headers=headers)


def _read_image(item: object) -> bytes | str:
    """The bytes of one ``{"url": data URI}``, else what is wrong with it."""
    url = item.get("url") if isinstance(item, dict) else None
    if not isinstance(url, str) or not url:
        return "each image must be an object with a non-empty url"
    if not url.startswith("data:"):
        return f"could not fetch the image at {url[:60]}"
    header, _, encoded = url.partition(",")
    if not header.endswith(";base64"):
        return "an image data URI must be base64"
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "an image data URI is not valid base64"
    return data if inspect(data) is not None else "an input image is not a PNG, JPEG or WebP"


def _output_size(ratio: str, resolution: str, first: bytes | None) -> tuple[int, int]:
    side = _SIDES[resolution]
    if ratio == "auto":
        shape = inspect(first) if first is not None else None
        value = shape[1] / shape[2] if shape else 1.0
    else:
        width, _, height = ratio.partition(":")
        value = float(width) / float(height)
    return round(side * math.sqrt(value)), round(side / math.sqrt(value))


_INVALID = "Client specified an invalid argument"
_QUALITIES = frozenset({"low", "medium", "high"})


def _check_common(body: dict[str, Any]) -> tuple[int, str, str] | None:
    """What edits and generations check alike, before their own fields: the first problem."""
    for name in ("size", "style"):
        if name in body:
            return 400, _INVALID, f"Argument not supported: {name}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return 422, "Unprocessable Entity", "prompt: field required"
    model = body.get("model", "grok-imagine-image")
    if model not in _MODELS:
        return 404, "Some requested entity was not found", f"The model {model} does not exist"
    return None


def _check_output(body: dict[str, Any]) -> tuple[int, str, str] | None:
    """The output fields both endpoints take: the first problem."""
    invalid = _INVALID
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
        return 400, invalid, "n: must be between 1 and 10"
    ratios = _RATIOS | _RATIOS_2 if body.get("model") == _MODEL_2 else _RATIOS
    if body.get("aspect_ratio", "auto") not in ratios:
        return 400, invalid, f"aspect_ratio: unsupported value {body.get('aspect_ratio')!r}"
    if body.get("resolution", "1k") not in _SIDES:
        return 400, invalid, "resolution: must be 1k or 2k"
    if body.get("response_format", "url") not in ("url", "b64_json"):
        return 400, invalid, "response_format: must be url or b64_json"
    return None


def _check_generation(body: dict[str, Any]) -> tuple[int, str, str] | None:
    """A generation's body: the first problem, or None."""
    problem = _check_common(body)
    if problem is not None:
        return problem
    for name in ("image", "images"):
        if name in body:
            return 400, _INVALID, f"{name}: a generation takes no input image (edit it instead)"
    if body.get("model") == _MODEL_2:
        problem = _check_quality_2(body)
    elif body.get("quality", "low") not in _QUALITIES:
        problem = 400, _INVALID, "quality: must be low, medium or high"
    return problem or _check_output(body)


def _check_quality_2(body: dict[str, Any]) -> tuple[int, str, str] | None:
    if body.get("quality", "auto") not in _QUALITIES_2:
        return 400, _INVALID, "quality: must be low, medium or auto"
    return None


def _check(body: dict[str, Any]) -> tuple[int, str, str] | list[bytes]:
    """The input images, or the first problem as (status, code, message)."""
    invalid = _INVALID
    problem = _check_common(body)
    if problem is not None:
        return problem
    if ("image" in body) == ("images" in body):
        return 400, invalid, "Exactly one of image or images must be given"
    items = [body["image"]] if "image" in body else body["images"]
    most = 5 if body.get("model") == _MODEL_2 else 3
    if not isinstance(items, list) or not 1 <= len(items) <= most:
        return 400, invalid, f"images: between 1 and {most} input images"
    if body.get("model") == _MODEL_2 and (problem := _check_quality_2(body)) is not None:
        return problem
    images = []
    for item in items:
        read = _read_image(item)
        if isinstance(read, str):
            return 400, invalid, read
        images.append(read)
    problem = _check_output(body)
    return images if problem is None else problem


def _output_ticks(body: dict[str, Any], editing: bool) -> int:
    """The ticks one output image of ``body`` is billed."""
    if body.get("model") != _MODEL_2:
        return OUTPUT_TICKS
    quality = body.get("quality", "auto")
    if quality == "auto":
        quality = "medium" if editing else "low"
    return OUTPUT_TICKS_2[quality, body.get("resolution", "1k")]


def build_app(
    *, api_keys: Iterable[str] | None = None, faults: Iterable[Fault | str] = ()
) -> web.Application:
    state = _State(
        frozenset(api_keys) if api_keys else None,
        [parse_fault(f) if isinstance(f, str) else f for f in faults],
    )
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state

    async def admitted(request: web.Request) -> tuple[dict[str, Any], Fault | None] | web.Response:
        """The request's JSON body (recorded) and its fault, or the answer refusing it."""
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if not key:
            return _error(401, "Unauthenticated", "No authorization header was provided")
        if state.api_keys is not None and key not in state.api_keys:
            return _error(
                400,
                _INVALID,
                f"Incorrect API key provided: {key[:2]}***. You can obtain an API key from the "
                "xAI console.",
            )
        if not request.content_type.startswith("application/json"):
            return _error(415, "Unsupported Media Type", "Content-Type must be application/json")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, _INVALID, "malformed JSON body")
        if not isinstance(body, dict):
            return _error(422, "Unprocessable Entity", "the body must be a JSON object")
        state.requests.append(XAIRequest(body, dict(request.headers), request.path))
        fault = next_fault(request.headers, state.faults, state.lock)
        if fault is not None and fault.latency:
            await asyncio.sleep(fault.latency)
        if fault is not None and fault.status is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(math.ceil(fault.retry_after))
            return _error(fault.status, fault.code or "Error", fault.message or "injected", headers)
        return body, fault

    async def serve(request: web.Request) -> web.Response:
        """An edit or a generation (by the path): its images, or its error."""
        admission = await admitted(request)
        if isinstance(admission, web.Response):
            return admission
        body, fault = admission
        images: list[bytes] = []
        if request.path.endswith("/generations"):
            problem = _check_generation(body)
        else:
            checked = _check(body)
            problem, images = (checked, []) if isinstance(checked, tuple) else (None, checked)
        if problem is not None:
            return _error(*problem)
        if fault is not None and fault.code == "moderation":
            return _error(400, _INVALID, "Generated image rejected by content moderation.")
        n = body.get("n", 1)
        usage = {"cost_in_usd_ticks": _output_ticks(body, bool(images)) * n}
        usage["cost_in_usd_ticks"] += INPUT_TICKS * len(images)
        if fault is not None and fault.code == "blocked":
            return web.json_response({"data": [], "block_reason": "moderation", "usage": usage})
        first = images[0] if images else None
        size = _output_size(body.get("aspect_ratio", "auto"), body.get("resolution", "1k"), first)
        picture = render(image=first, mask=None, size=size, prompt=body["prompt"])
        data = []
        for _ in range(n):
            item: dict[str, Any] = {"mime_type": "image/png", "revised_prompt": ""}
            if body.get("response_format", "url") == "b64_json":
                item["b64_json"] = base64.b64encode(picture).decode()
            else:
                name = f"xai-tmp-imgen-{next(state.counter)}.png"
                state.files[name] = picture
                item["url"] = f"{request.scheme}://{request.host}/imgen/{name}"
            data.append(item)
        return web.json_response(
            {"created": int(time.time()), "data": data, "block_reason": None, "usage": usage}
        )

    async def download(request: web.Request) -> web.Response:
        picture = state.files.get(request.match_info["name"])
        if picture is None:
            return web.Response(status=404)
        return web.Response(body=picture, content_type="image/png")

    app.router.add_post("/v1/images/edits", serve)
    app.router.add_post("/v1/images/generations", serve)
    app.router.add_get("/imgen/{name}", download)
    return app


class FakeXAI(ServedApp):
    """Runs the fake xAI API on a loopback port in a background thread."""

    thread_name = "fake-xai"

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

    def inject(self, *faults: Fault | str) -> None:
        """Queue faults for the next requests (each applies to ``times`` requests)."""
        state = self.app[STATE]
        with state.lock:
            state.faults.extend(parse_fault(f) if isinstance(f, str) else f for f in faults)

    @property
    def requests(self) -> list[XAIRequest]:
        return self.app[STATE].requests

    @property
    def url(self) -> str:
        """The ``api_base`` for the ``xai`` provider (it includes ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"
