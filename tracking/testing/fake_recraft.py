"""A fake Recraft API on loopback, written from Recraft's API reference.

``POST /v1/images/imageToImage`` (``image``, ``prompt``, ``strength``, ``model``, ``n``,
``response_format``) and ``POST /v1/images/inpaint`` (``image``, ``mask`` of pure black and white
pixels, ``prompt``...) with ``Authorization: Bearer``; the answer is OpenAI-shaped
(``{"created", "credits", "data": [{"b64_json"} | {"url"}]}``) where ``credits`` are the API units
charged: :data:`UNITS` per image of the model (Recraft's pricing page). Errors are
``{"code", "message"}``.

``POST /v1/images/generations`` takes JSON (Recraft's endpoint reference, read 2026-12-07):
``prompt`` (required), ``model``, ``n`` (1 to 6), ``size``, ``style`` and the like, and
``response_format``; it answers the same shape, :data:`UNITS` per image of the model (the V4 and
V4.1 models' prices from their pages in Recraft's API reference).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from .app_thread import ServedApp
from .fake_images import inspect, render
from .forms import read_form

__all__ = ["UNITS", "FakeRecraft", "RecraftRequest"]

#: API units per image (1,000 units = 1 USD).
UNITS = {
    "recraftv3": 40,
    "recraftv3_vector": 80,
    "recraftv4": 40,
    "recraftv4_vector": 80,
    "recraftv4_pro": 250,
    "recraftv4_pro_vector": 300,
    "recraftv4_1": 35,
    "recraftv4_1_vector": 80,
    "recraftv4_1_pro": 210,
}


@dataclass
class RecraftRequest:
    endpoint: str
    fields: dict[str, str]
    files: dict[str, bytes]


@dataclass
class _State:
    api_keys: frozenset[str] | None
    requests: list[RecraftRequest] = field(default_factory=list)


STATE = web.AppKey("recraft_state", _State)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _binary_mask(data: bytes) -> bool:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        low, high = image.convert("L").getextrema()
        histogram = image.convert("L").histogram()
        return sum(histogram[1:255]) == 0 and low in (0, 255) and high in (0, 255)


def build_app(*, api_keys: Iterable[str] | None = None) -> web.Application:
    state = _State(frozenset(api_keys) if api_keys else None)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state

    async def edit(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if not key or (state.api_keys is not None and key not in state.api_keys):
            return _error(401, "not_authenticated", "Invalid API token")
        form = await read_form(request)
        if form is None:
            return _error(400, "invalid_request", "malformed multipart body")
        fields, files = form
        endpoint = request.match_info["endpoint"]
        state.requests.append(RecraftRequest(endpoint, fields, files))
        model = fields.get("model", "recraftv3")
        if model not in UNITS:
            return _error(400, "invalid_model", f"unknown model {model}")
        if "image" not in files or inspect(files["image"]) is None or not fields.get("prompt"):
            return _error(400, "invalid_request", "image and prompt are required")
        if endpoint == "inpaint" and ("mask" not in files or not _binary_mask(files["mask"])):
            return _error(400, "invalid_mask", "mask must be pure black and white")
        if endpoint == "imageToImage" and not 0 <= float(fields.get("strength", "-1")) <= 1:
            return _error(400, "invalid_request", "strength must be between 0 and 1")
        n = int(fields.get("n", "1"))
        picture = render(
            image=files["image"], mask=None, size=(1024, 1024), prompt=fields["prompt"]
        )
        encoded = base64.b64encode(picture).decode()
        return web.json_response(
            {
                "created": int(time.time()),
                "credits": UNITS[model] * n,
                "data": [{"b64_json": encoded} for _ in range(n)],
            }
        )

    async def generate(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if not key or (state.api_keys is not None and key not in state.api_keys):
            return _error(401, "not_authenticated", "Invalid API token")
        if not request.content_type.startswith("application/json"):
            return _error(400, "invalid_request", "the body must be JSON")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request", "malformed JSON body")
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "the body must be a JSON object")
        fields = {name: str(value) for name, value in body.items()}
        state.requests.append(RecraftRequest("generations", fields, {}))
        model = body.get("model", "recraftv4_1")  # the API's default model
        if model not in UNITS:
            return _error(400, "invalid_model", f"unknown model {model}")
        prompt, n = body.get("prompt"), body.get("n", 1)
        if not isinstance(prompt, str) or not prompt:
            return _error(400, "invalid_request", "prompt is required")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 6:
            return _error(400, "invalid_request", "n must be between 1 and 6")
        picture = render(image=None, mask=None, size=(1024, 1024), prompt=prompt)
        encoded = base64.b64encode(picture).decode()
        return web.json_response(
            {
                "created": int(time.time()),
                "credits": UNITS[model] * n,
                "data": [{"b64_json": encoded} for _ in range(n)],
            }
        )

    app.router.add_post("/v1/images/generations", generate)
    app.router.add_post("/v1/images/{endpoint}", edit)
    return app


class FakeRecraft(ServedApp):
    """Runs the fake Recraft API on a loopback port in a background thread."""

    thread_name = "fake-recraft"

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, api_keys: Iterable[str] | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.app = build_app(api_keys=api_keys)

    @property
    def requests(self) -> list[RecraftRequest]:
        return self.app[STATE].requests

    @property
    def url(self) -> str:
        """The ``api_base`` for the ``recraft`` provider (it includes ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"
