"""A fake Stability AI edit API on loopback, written from Stability's API reference.

``POST /v2beta/stable-image/edit/{inpaint|erase|search-and-replace|outpaint}`` takes multipart
(``image``, ``prompt``, ``mask``, ``search_prompt``, ``left``/``right``/``up``/``down``,
``output_format``) with ``Authorization: Bearer``, and answers ``{"image": base64,
"finish_reason": "SUCCESS", "seed"}`` when asked for JSON (``Accept: application/json``), the image
bytes otherwise. Errors are Stability-shaped: ``{"id", "name", "errors": [...]}``. The
``x-fake-fault`` header: ``status=N`` answers that error, ``code=filtered`` answers 200 with
``finish_reason: CONTENT_FILTERED`` and the image, as Stability documents it ("successful
generation, however the output violated our content moderation policy and has been blurred as a
result": the ``ImageJSONResponse`` schema of Stability's OpenAPI description, as generated into
the tryAGI/StabilityAI client, read 2026-12-06), ``code=moderation`` a 403 ``content_moderation``.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .app_thread import ServedApp
from .fake_images import inspect, render
from .faults import FAULT_HEADER, parse_fault
from .forms import read_form

__all__ = ["FakeStability", "StabilityRequest"]

_OPERATIONS = {"inpaint", "erase", "search-and-replace", "outpaint"}


@dataclass
class StabilityRequest:
    operation: str
    fields: dict[str, str]
    files: dict[str, bytes]
    headers: dict[str, str]


@dataclass
class _State:
    api_keys: frozenset[str] | None
    requests: list[StabilityRequest] = field(default_factory=list)
    counter: Any = field(default_factory=lambda: itertools.count(1))


STATE = web.AppKey("stability_state", _State)


def _error(status: int, name: str, *errors: str) -> web.Response:
    return web.json_response(
        {"id": "fake-error", "name": name, "errors": list(errors)}, status=status
    )


def build_app(*, api_keys: Iterable[str] | None = None) -> web.Application:
    state = _State(frozenset(api_keys) if api_keys else None)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state

    async def edit(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if not key or (state.api_keys is not None and key not in state.api_keys):
            return _error(401, "unauthorized", "authorization: invalid or missing API key")
        operation = request.match_info["operation"]
        if operation not in _OPERATIONS:
            return _error(404, "not_found", f"no edit operation {operation}")
        form = await read_form(request)
        if form is None:
            return _error(400, "bad_request", "malformed multipart body")
        fields, files = form
        state.requests.append(StabilityRequest(operation, fields, files, dict(request.headers)))
        fault = (
            parse_fault(request.headers[FAULT_HEADER]) if FAULT_HEADER in request.headers else None
        )
        if fault is not None and fault.status is not None:
            return _error(fault.status, fault.code or "server_error", fault.message or "injected")
        if fault is not None and fault.code == "moderation":
            return _error(
                403,
                "content_moderation",
                "Your request was flagged by our content moderation system",
            )
        problems = []
        if "image" not in files or inspect(files["image"]) is None:
            problems.append("image: required, a PNG, JPEG or WebP file")
        if operation != "erase" and not fields.get("prompt"):
            problems.append("prompt: cannot be empty")
        if operation == "search-and-replace" and not fields.get("search_prompt"):
            problems.append("search_prompt: cannot be empty")
        if problems:
            return _error(400, "bad_request", *problems)
        picture = render(
            image=files["image"],
            mask=None,
            size=(1024, 1024),
            prompt=fields.get("prompt", operation),
        )
        filtered = fault is not None and fault.code == "filtered"
        if "application/json" not in request.headers.get("Accept", ""):
            headers = {"finish-reason": "CONTENT_FILTERED" if filtered else "SUCCESS"}
            return web.Response(body=picture, content_type="image/png", headers=headers)
        return web.json_response(
            {
                # CONTENT_FILTERED: a successful generation whose output was blurred (the
                # fake's is not), billed as any other
                "image": base64.b64encode(picture).decode(),
                "finish_reason": "CONTENT_FILTERED" if filtered else "SUCCESS",
                "seed": next(state.counter),
            }
        )

    app.router.add_post("/v2beta/stable-image/edit/{operation}", edit)
    return app


class FakeStability(ServedApp):
    """Runs the fake Stability AI API on a loopback port in a background thread."""

    thread_name = "fake-stability"

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, api_keys: Iterable[str] | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.app = build_app(api_keys=api_keys)

    @property
    def requests(self) -> list[StabilityRequest]:
        return self.app[STATE].requests

    @property
    def url(self) -> str:
        """The ``api_base`` for the ``stability`` provider."""
        return f"http://{self.host}:{self.port}"
