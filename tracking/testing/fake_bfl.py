"""A fake Black Forest Labs API on loopback: submit a FLUX job, poll it, download its result.

Written from BFL's API reference, independently of the SDK's provider: ``POST /v1/{model}``
(``flux-kontext-pro``, ``flux-kontext-max``, ``flux-pro-1.0-fill``) with the ``x-key`` header
answers ``{"id", "polling_url"}``; ``GET /v1/get_result?id=...`` answers ``{"id", "status",
"result"}``, ``Pending`` for the job's first ``polls`` polls (default 2) and then ``Ready`` with
``result.sample``, a URL on the fake that serves the PNG for ``sample_ttl`` seconds and then
404s, as BFL's signed delivery URLs expire. Errors are FastAPI-shaped (``{"detail": ...}``).

FLUX.2 (``flux-2-pro``, ``flux-2-max``, ``flux-2-flex``, ``flux-2-klein-4b``,
``flux-2-klein-9b``), from BFL's API reference and its own integration guide (read
2026-12-07): ``prompt``, ``input_image`` and up to seven more references (``input_image_2``...
``input_image_8``; three more for [klein]), ``width`` / ``height`` (at least 64, multiples of 16,
at most 4 MP together; left out, the first input image's), ``seed``, ``safety_tolerance`` (0 to
5), ``output_format`` (``jpeg``, ``png``, ``webp``), and for [flex] ``steps`` (1 to 50) and
``guidance`` (1.5 to 10); anything else is refused with a 422. Without ``input_image`` a
FLUX.2 job is a text-to-image generation (the guide's "FLUX.2 Text-to-Image Endpoints": the same
paths, ``prompt``, ``width``, ``height``...), billed for its output alone. The submission
answers ``cost`` (credits, 1 credit = $0.01), ``input_mp`` and ``output_mp``: BFL's guide
prices a job at the first output megapixel's price, each further output megapixel's and each
input megapixel's (:data:`FLUX2_CENTS`), every image's megapixels (of 1024x1024 pixels) rounded
up to a whole one. ``code=no_cost`` answers the submission without those three members.

Per job, the submission's ``x-fake-fault`` header (else the next of the server's queued
``faults``) chooses trouble (:mod:`.faults` syntax): ``code=never`` (Pending forever),
``code=moderated`` (``Content Moderated``: the output was flagged), ``code=request_moderated``
(``Request Moderated``: the input was flagged), ``code=error`` (``Error``), ``code=poll_503``
(the first poll answers 503, then the job goes on), ``code=poll_429`` (every poll answers 429, with
``Retry-After`` when the fault has ``retry_after``), ``code=expired`` (the job is Ready but its
result URL answers 404, as once it has expired), ``code=html_result`` (the result URL answers
200 with an HTML page, as a CDN's error page), ``code=result_429`` / ``code=result_503`` (the
result URL answers 429 / 503 to every download, with ``Retry-After`` when the fault has
``retry_after``), ``status=N`` (the submission itself answers N).
:attr:`FakeBFL.max_in_flight` is the most requests the fake was serving at once, so tests can
check that polls share the client's connection pool.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from .app_thread import ServedApp
from .fake_images import inspect, render
from .faults import FAULT_HEADER, Fault, next_fault, parse_fault

__all__ = ["FakeBFL", "FluxJob"]

#: FLUX.2 models -> (cents for the first output megapixel, for each further megapixel, output
#: or input; the most input images), from BFL's integration guide's price table
#: (github.com/black-forest-labs/skills, skills/bfl-api/SKILL.md, read 2026-12-07)
FLUX2_CENTS = {
    "flux-2-pro": ("3", "1.5", 8),
    "flux-2-max": ("7", "3", 8),
    "flux-2-flex": ("5", "5", 8),
    "flux-2-klein-4b": ("1.4", "0.1", 4),
    "flux-2-klein-9b": ("1.5", "0.2", 4),
}
MODELS = frozenset({"flux-kontext-pro", "flux-kontext-max", "flux-pro-1.0-fill", *FLUX2_CENTS})
_MEGAPIXEL = 1024 * 1024
_FLUX2_FIELDS = frozenset(
    {"prompt", "seed", "width", "height", "safety_tolerance", "output_format", "input_image"}
    | {"webhook_url", "webhook_secret", "disable_pup"}
    | {f"input_image_{n}" for n in range(2, 9)}
)
_FLEX_FIELDS = frozenset({"steps", "guidance", "prompt_upsampling"})
#: faults -> the status BFL's error reference gives a job its moderation refused
_MODERATED = {"moderated": "Content Moderated", "request_moderated": "Request Moderated"}


@dataclass
class FluxJob:
    id: str
    model: str
    body: dict[str, Any]
    polls_left: int
    trouble: str | None = None
    #: with ``code=result_429`` / ``result_503``: the Retry-After its downloads are answered
    retry_after: float | None = None
    polls: int = 0
    downloads: int = 0  #: requests for its result
    ready_at: float | None = None
    #: the result's width and height
    size: tuple[int, int] = (1024, 1024)
    #: FLUX.2: the credits its submission answered it cost (None: no cost answered)
    cost: Decimal | None = None


@dataclass
class _State:
    api_keys: frozenset[str] | None
    polls: int
    sample_ttl: float
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: dict[str, FluxJob] = field(default_factory=dict)
    counter: Any = field(default_factory=lambda: itertools.count(1))
    in_flight: int = 0
    max_in_flight: int = 0
    peers: set[tuple[str, int]] = field(default_factory=set)


STATE = web.AppKey("bfl_state", _State)


def _detail(status: int, message: str) -> web.Response:
    return web.json_response({"detail": message}, status=status)


def _busy(status: int, retry_after: float | None) -> web.Response:
    """A 429 or 503, with ``Retry-After`` when the fault gives one (as the fake OpenAI sends
    them, :mod:`.faults`)."""
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = str(math.ceil(retry_after))
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    return web.Response(status=status, text="Too busy, try again later", headers=headers)


#: a FLUX.2 generation's size when it sends no width and height: the integration guide states no
#: default, so the fake takes its example's 1024x1024
_GENERATED = (1024, 1024)
FILL = "flux-pro-1.0-fill"


def _flux2_problem(model: str, body: dict[str, Any]) -> str | None:
    """What BFL's FLUX.2 reference refuses with a 422, or None."""
    fields = _FLUX2_FIELDS | (_FLEX_FIELDS if model == "flux-2-flex" else frozenset())
    unknown = sorted(set(body) - fields)
    if unknown:
        return f"{unknown[0]}: not a field of {model}"
    most = FLUX2_CENTS[model][2]
    images = [k for k in body if k.startswith("input_image")]
    if len(images) > most:
        return f"{model} takes at most {most} input images, got {len(images)}"
    for side in ("width", "height"):
        value = body.get(side)
        if value is not None and (type(value) is not int or value < 64 or value % 16):
            return f"{side}: an integer of at least 64, a multiple of 16"
    width, height = body.get("width"), body.get("height")
    if width is not None and height is not None and width * height > 4 * _MEGAPIXEL:
        return "width x height: at most 4 megapixels"
    if body.get("output_format", "jpeg") not in ("jpeg", "png", "webp"):
        return "output_format: jpeg, png or webp"
    tolerance = _lax(body.get("safety_tolerance", 2), int)
    if tolerance is None or not 0 <= tolerance <= 5:
        return "safety_tolerance: an integer from 0 to 5"
    steps = _lax(body.get("steps", 50), int)
    if steps is None or not 1 <= steps <= 50:
        return "steps: an integer from 1 to 50"
    guidance = _lax(body.get("guidance", 4.5), float)
    if guidance is None or not 1.5 <= guidance <= 10:
        return "guidance: a number from 1.5 to 10"
    return None


def _lax(value: Any, kind: type[int] | type[float]) -> float | None:
    """``value`` read as BFL's FastAPI schema reads a number in lax mode: the number, or its
    text (``"20"``); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            return None
    if kind is int and not isinstance(value, int):
        return None
    return value if isinstance(value, int | float) else None


def _flux2_bill(
    model: str, body: dict[str, Any], first: tuple[int, int]
) -> tuple[dict[str, Any], tuple[int, int], Decimal]:
    """The submission's ``cost``, ``input_mp`` and ``output_mp``, the result's size and the
    credits, by BFL's guide: ``first + (output MP - 1) * per MP + input MP * per MP`` cents, each
    image's megapixels rounded up to a whole one."""
    width, height = body.get("width"), body.get("height")
    size = (width, height) if width and height else first
    inputs = []
    for name, value in body.items():
        if name.startswith("input_image"):
            header = inspect(base64.b64decode(value))
            inputs.append(header[1] * header[2] if header else 0)
    output_mp = math.ceil(size[0] * size[1] / _MEGAPIXEL)
    input_mp = sum(math.ceil(pixels / _MEGAPIXEL) for pixels in inputs)
    first_cents, more_cents, _ = FLUX2_CENTS[model]
    credits = Decimal(first_cents) + (output_mp - 1 + input_mp) * Decimal(more_cents)
    answer = {
        "cost": float(credits),
        "input_mp": round(sum(inputs) / _MEGAPIXEL, 2),
        "output_mp": round(size[0] * size[1] / _MEGAPIXEL, 2),
    }
    return answer, size, credits


def build_app(
    *,
    api_keys: Iterable[str] | None = None,
    polls: int = 2,
    sample_ttl: float = 600.0,
    faults: Iterable[Fault | str] = (),
) -> web.Application:
    queued = [parse_fault(f) if isinstance(f, str) else f for f in faults]
    state = _State(frozenset(api_keys) if api_keys else None, polls, sample_ttl, queued)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            state.peers.add((str(peer[0]), int(peer[1])))
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            state.in_flight -= 1

    app.middlewares.append(count)

    def authorized(request: web.Request) -> bool:
        key = request.headers.get("x-key")
        return bool(key) and (state.api_keys is None or key in state.api_keys)

    async def submit(request: web.Request) -> web.Response:
        if not authorized(request):
            return _detail(403, "Not authenticated - Invalid Authentication")
        model = request.match_info["model"]
        if model not in MODELS:
            return _detail(404, "Not Found")
        try:
            fault = next_fault(request.headers, state.faults, state.lock)
        except ValueError as exc:
            return _detail(400, f"Invalid {FAULT_HEADER} header: {exc}")
        if fault is not None and fault.status is not None:
            return _detail(fault.status, fault.message or "Injected fault")
        try:
            body = json.loads(await request.read())
            generating = model in FLUX2_CENTS and "input_image" not in body
            source = "" if generating else body["image" if model == FILL else "input_image"]
            picture = base64.b64decode(source, validate=True)
        except (ValueError, KeyError, TypeError):
            return _detail(422, "input_image (image for fill) must be a base64 image")
        header = ("png", *_GENERATED) if generating else inspect(picture)
        if header is None or not isinstance(body.get("prompt"), str):
            return _detail(422, "a prompt and a readable image are required")
        if model == "flux-pro-1.0-fill" and "mask" not in body:
            return _detail(422, "mask is required for flux-pro-1.0-fill")
        job = FluxJob(
            id=f"job-{next(state.counter)}",
            model=model,
            body=body,
            polls_left=state.polls,
            trouble=fault.code if fault is not None else None,
            retry_after=fault.retry_after if fault is not None else None,
        )
        answer: dict[str, Any] = {}
        if model in FLUX2_CENTS:
            problem = _flux2_problem(model, body)
            if problem is not None:
                return _detail(422, problem)
            answer, job.size, job.cost = _flux2_bill(model, body, (header[1], header[2]))
            if job.trouble == "no_cost":
                answer = {}
        state.jobs[job.id] = job
        base = f"{request.scheme}://{request.host}"
        polling_url = f"{base}/v1/get_result?id={job.id}"
        return web.json_response({"id": job.id, "polling_url": polling_url, **answer})

    async def get_result(request: web.Request) -> web.Response:
        if not authorized(request):
            return _detail(403, "Not authenticated - Invalid Authentication")
        job = state.jobs.get(request.query.get("id", ""))
        if job is None:
            return web.json_response({"id": request.query.get("id"), "status": "Task not found"})
        job.polls += 1
        if job.trouble == "poll_503" and job.polls == 1:
            return _detail(503, "Service temporarily unavailable")
        if job.trouble == "poll_429":
            return _busy(429, job.retry_after)
        if job.trouble in _MODERATED:
            status = _MODERATED[job.trouble]
            return web.json_response({"id": job.id, "status": status, "result": None})
        if job.trouble == "error":
            return web.json_response({"id": job.id, "status": "Error", "result": None})
        if job.trouble == "never" or job.polls_left > 0:
            job.polls_left -= 1
            return web.json_response({"id": job.id, "status": "Pending", "result": None})
        if job.ready_at is None:
            job.ready_at = time.monotonic()
        base = f"{request.scheme}://{request.host}"
        return web.json_response(
            {
                "id": job.id,
                "status": "Ready",
                "result": {
                    "sample": f"{base}/delivery/{job.id}.png?signature=fake",
                    "prompt": job.body.get("prompt"),
                },
            }
        )

    async def delivery(request: web.Request) -> web.Response:
        job = state.jobs.get(request.match_info["name"].removesuffix(".png"))
        if job is None or job.ready_at is None:
            return web.Response(status=404)
        job.downloads += 1
        if job.trouble in ("result_429", "result_503"):
            return _busy(int(job.trouble.removeprefix("result_")), job.retry_after)
        if job.trouble == "expired" or time.monotonic() - job.ready_at > state.sample_ttl:
            return web.Response(status=404, text="the signed URL has expired")
        if job.trouble == "html_result":
            return web.Response(text="<html>Bad gateway</html>", content_type="text/html")
        source = job.body.get("image") or job.body.get("input_image")
        png = render(
            image=base64.b64decode(source) if source else None,
            mask=None,
            size=job.size,
            prompt=job.body["prompt"],
        )
        return web.Response(body=png, content_type="image/png")

    app.router.add_post("/v1/{model}", submit)
    app.router.add_get("/v1/get_result", get_result)
    app.router.add_get("/delivery/{name}", delivery)
    return app


class FakeBFL(ServedApp):
    """Runs the fake BFL API on a loopback port in a background thread."""

    thread_name = "fake-bfl"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        polls: int = 2,
        sample_ttl: float = 600.0,
        faults: Iterable[Fault | str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.app = build_app(api_keys=api_keys, polls=polls, sample_ttl=sample_ttl, faults=faults)

    @property
    def state(self) -> _State:
        return self.app[STATE]

    @property
    def jobs(self) -> dict[str, FluxJob]:
        return self.state.jobs

    @property
    def url(self) -> str:
        """The ``api_base`` for the ``black_forest_labs`` provider."""
        return f"http://{self.host}:{self.port}"
