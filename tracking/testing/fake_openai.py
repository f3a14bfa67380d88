"""A fake OpenAI ``/images/edits`` upstream that speaks real HTTP on loopback.

It is deliberately its own simple code: it does not import the SDK's request rules, so a wrong
rule cannot pass on both sides. It parses the multipart body, requires a key, and answers as
OpenAI does: base64 images with ``usage`` for GPT image models, ``url``s it serves itself for
dall-e-2.

Token counts are a documented, deterministic estimate (no tokenizer download):

* input text tokens: ``ceil(len(prompt) / 4)``;
* input image tokens: 323 per input image (and mask is not counted);
* output image tokens per image, by quality and size, as OpenAI publishes for gpt-image-1
  (``OUTPUT_TOKENS``); an ``auto`` quality answers ``medium``; an ``auto`` size answers the
  standard size closest to the first input image's aspect; other sizes scale by area.

``canned=True`` reads each body but does no multipart or image work and answers a pre-built
response: for benchmarks, where the fake must cost as little as possible.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

__all__ = ["OUTPUT_TOKENS", "FakeOpenAI", "ReceivedRequest", "build_app"]

GPT_IMAGE_MODELS = frozenset(
    {
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "gpt-image-2",
        "gpt-image-2-2026-04-21",
        "chatgpt-image-latest",
    }
)
OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
IMAGE_INPUT_TOKENS = 323
_PREVIEW_SIDE = 64  # returned images are small previews of the requested aspect: cheap to make


@dataclass
class ReceivedRequest:
    """What the fake saw of one request (for tests to assert on)."""

    path: str
    headers: dict[str, str]
    fields: dict[str, str]
    files: list[tuple[str, str, str, int]]  # (field name, filename, content type, size)
    query: dict[str, str] = field(default_factory=dict)
    peer: tuple[str, int] | None = None  #: the client's address: tells connections apart


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    error_type: str = "invalid_request_error",
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return web.json_response(body, status=status)


class _FakeState:
    def __init__(self, api_keys: Iterable[str] | None, canned: bool) -> None:
        self.api_keys = frozenset(api_keys) if api_keys else None
        self.canned = canned
        self.requests: list[ReceivedRequest] = []
        self.files: dict[str, bytes] = {}
        self.responses: list[dict[str, Any]] = []  #: every JSON body answered, oldest first
        self.counter = itertools.count(1)
        self.canned_body = json.dumps(
            {
                "created": 1_700_000_000,
                "data": [{"b64_json": base64.b64encode(_png(8, 8, (40, 120, 200))).decode()}],
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


STATE = web.AppKey("state", _FakeState)


def build_app(*, api_keys: Iterable[str] | None = None, canned: bool = False) -> web.Application:
    """The fake as an aiohttp application (``FakeOpenAI`` runs it on a thread)."""
    state = _FakeState(api_keys, canned)
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[STATE] = state

    async def edits(request: web.Request) -> web.StreamResponse:
        key = _api_key(request)
        if not key:
            return _error(401, "You didn't provide an API key.", error_type="invalid_request_error")
        if state.api_keys is not None and key not in state.api_keys:
            # A careless upstream echoes the whole key: the SDK must mask it.
            return _error(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")
        if state.canned:
            await request.read()
            return web.Response(
                body=state.canned_body,
                content_type="application/json",
                headers={"x-request-id": f"req_fake_{next(state.counter)}"},
            )
        try:
            fields, files = await _read_form(request)
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
            )
        )
        deployment = request.match_info.get("deployment")
        return _answer(state, request, fields, files, deployment)

    async def serve_file(request: web.Request) -> web.Response:
        data = state.files.get(request.match_info["name"])
        if data is None:
            return _error(404, "no such file")
        return web.Response(body=data, content_type="image/png")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/v1/images/edits", edits)
    app.router.add_post("/images/edits", edits)
    app.router.add_post("/openai/deployments/{deployment}/images/edits", edits)
    app.router.add_get("/files/{name}", serve_file)
    app.router.add_get("/health", health)
    return app


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
) -> tuple[dict[str, str], list[tuple[str, str, str, bytes]]]:
    if not request.content_type.startswith("multipart/form-data"):
        raise ValueError("Invalid content type: expected multipart/form-data")
    fields: dict[str, str] = {}
    files: list[tuple[str, str, str, bytes]] = []
    reader = await request.multipart()
    while True:
        part = await reader.next()
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
    return fields, files


def _answer(
    state: _FakeState,
    request: web.Request,
    fields: dict[str, str],
    files: list[tuple[str, str, str, bytes]],
    deployment: str | None,
) -> web.Response:
    model = fields.get("model") or deployment or "dall-e-2"
    prompt = fields.get("prompt", "")
    images = [f for f in files if f[0] in ("image", "image[]")]
    if not prompt:
        return _error(400, "Missing required parameter: 'prompt'.", param="prompt")
    if not images:
        return _error(400, "Missing required parameter: 'image'.", param="image")
    try:
        n = int(fields.get("n", "1"))
    except ValueError:
        return _error(400, f"Invalid value for 'n': {fields['n']!r}.", param="n")
    if not 1 <= n <= 10:
        return _error(400, f"Invalid value for 'n': must be 1 to 10, got {n}.", param="n")
    created = int(time.time())
    color = _color(prompt)
    request_id = f"req_fake_{next(state.counter)}"
    is_gpt_image = model in GPT_IMAGE_MODELS or (deployment is not None and "dall-e" not in model)
    if not is_gpt_image:
        size = fields.get("size", "1024x1024")
        width, height = _dimensions(size) or (1024, 1024)
        png = _png(_PREVIEW_SIDE, _PREVIEW_SIDE * height // width, color)
        data: list[dict[str, Any]] = []
        for _ in range(n):
            if fields.get("response_format", "url") == "b64_json":
                data.append({"b64_json": base64.b64encode(png).decode()})
            else:
                name = f"img-{next(state.counter)}.png"
                state.files[name] = png
                data.append({"url": f"{request.scheme}://{request.host}/files/{name}"})
        body: dict[str, Any] = {"created": created, "data": data}
        state.responses.append(body)
        return web.json_response(body, headers={"x-request-id": request_id})
    if "response_format" in fields:
        return _error(
            400,
            f"Unknown parameter: 'response_format'. ({model} always returns b64_json)",
            param="response_format",
            code="unknown_parameter",
        )
    quality = fields.get("quality", "auto")
    quality = "medium" if quality == "auto" else quality
    size = fields.get("size", "auto")
    if size == "auto":
        size = _size_for(images[0][3])
    dims = _dimensions(size)
    if dims is None:
        return _error(400, f"Invalid value for 'size': {size!r}.", param="size")
    output_format = fields.get("output_format", "png")
    background = fields.get("background", "auto")
    background = "opaque" if background == "auto" else background
    per_image = _output_tokens(quality, size, dims)
    png = _png(_PREVIEW_SIDE, max(1, _PREVIEW_SIDE * dims[1] // dims[0]), color)
    text_tokens = math.ceil(len(prompt) / 4)
    image_tokens = IMAGE_INPUT_TOKENS * len(images)
    body = {
        "created": created,
        "data": [{"b64_json": base64.b64encode(png).decode()} for _ in range(n)],
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
    state.responses.append(body)
    return web.json_response(body, headers={"x-request-id": request_id})


def _dimensions(size: str) -> tuple[int, int] | None:
    width, sep, height = size.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        return None
    return int(width), int(height)


def _size_for(image: bytes) -> str:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(image)) as img:
            width, height = img.size
    except Exception:
        return "1024x1024"
    if width > height * 1.2:
        return "1536x1024"
    if height > width * 1.2:
        return "1024x1536"
    return "1024x1024"


def _output_tokens(quality: str, size: str, dims: tuple[int, int]) -> int:
    table = OUTPUT_TOKENS.get(quality, OUTPUT_TOKENS["medium"])
    if size in table:
        return table[size]
    return round(table["1024x1024"] * dims[0] * dims[1] / (1024 * 1024))


def _color(prompt: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def _png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


class FakeOpenAI:
    """Runs the fake on a loopback port in a background thread.

    >>> with FakeOpenAI() as fake:
    ...     tracking.image_edit(..., api_base=fake.url, api_key="sk-test")
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        canned: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.app = build_app(api_keys=api_keys, canned=canned)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> _FakeState:
        return self.app[STATE]

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request the fake parsed, oldest first."""
        return self.state.requests

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``api_base`` to pass to the SDK (it includes ``/v1``)."""
        return f"{self.base_url}/v1"

    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_site())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]

    async def _stop_site(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(
    host: str = "127.0.0.1",
    port: int = 8090,
    *,
    canned: bool = False,
    api_keys: Iterable[str] | None = None,
) -> None:
    """Serve the fake in the foreground (``tracking fake-openai``) until interrupted."""
    web.run_app(
        build_app(api_keys=api_keys, canned=canned),
        host=host,
        port=port,
        access_log=None,
        print=lambda text: print(text, flush=True),
    )
