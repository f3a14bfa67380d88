"""A fake Black Forest Labs API on loopback: submit a FLUX job, poll it, download its result.

Written from BFL's API reference, independently of the SDK's provider: ``POST /v1/{model}``
(``flux-kontext-pro``, ``flux-kontext-max``, ``flux-pro-1.0-fill``) with the ``x-key`` header
answers ``{"id", "polling_url"}``; ``GET /v1/get_result?id=...`` answers ``{"id", "status",
"result"}``, ``Pending`` for the job's first ``polls`` polls (default 2) and then ``Ready`` with
``result.sample``, a URL on the fake that serves the PNG for ``sample_ttl`` seconds and then
404s, as BFL's signed delivery URLs expire. Errors are FastAPI-shaped (``{"detail": ...}``).

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
from typing import Any

from aiohttp import web

from .app_thread import ServedApp
from .fake_images import inspect, render
from .faults import FAULT_HEADER, Fault, next_fault, parse_fault

__all__ = ["FakeBFL", "FluxJob"]

MODELS = frozenset({"flux-kontext-pro", "flux-kontext-max", "flux-pro-1.0-fill"})
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
            source = body["image" if model == "flux-pro-1.0-fill" else "input_image"]
            picture = base64.b64decode(source, validate=True)
        except (ValueError, KeyError, TypeError):
            return _detail(422, "input_image (image for fill) must be a base64 image")
        if inspect(picture) is None or not isinstance(body.get("prompt"), str):
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
        state.jobs[job.id] = job
        base = f"{request.scheme}://{request.host}"
        return web.json_response({"id": job.id, "polling_url": f"{base}/v1/get_result?id={job.id}"})

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
        source = job.body.get("image") or job.body.get("input_image") or ""
        png = render(
            image=base64.b64decode(source), mask=None, size=(1024, 1024), prompt=job.body["prompt"]
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
