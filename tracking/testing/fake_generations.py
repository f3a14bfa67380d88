"""The fake OpenAI upstream's ``POST /v1/images/generations``, written from OpenAI's API
reference for ``images.generate``.

The body is JSON (as the official clients send it). The fake checks it with its own rules
(:func:`.fake_rules.check_generation`, independent of the SDK's), and answers as OpenAI does
for the GPT image models: ``data[].b64_json`` with ``usage`` (input text tokens only: a
generation has no input image), ``size``, ``quality``, ``background`` and ``output_format``;
with ``"stream": true`` ``image_generation.partial_image`` events then one
``image_generation.completed`` event. Token counts follow the edit's conventions
(:mod:`.fake_openai`). Azure's deployment route
(``/openai/deployments/{deployment}/images/generations``) is served too, and faults apply as
for edits.
"""

from __future__ import annotations

import json

from aiohttp import web

from .fake_openai import (
    DEFAULT_MODEL,
    ReceivedRequest,
    _answered,
    _error,
    _FakeState,
    _gpt_image_answer,
    _peer,
    _refused_key,
    _stream_events,
    _Streamed,
)
from .fake_rules import check_generation, generation_fields

__all__ = ["generate"]

_MAX_BODY = 1024 * 1024  # a prompt of 32,000 characters and a few options fit many times


async def generate(state: _FakeState, request: web.Request) -> web.Response | _Streamed:
    """One generation request's answer (a streamed one as events to send)."""
    refused = _refused_key(state, request)
    if refused is not None:
        return refused
    deployment = request.match_info.get("deployment")
    if deployment is not None and not request.query.get("api-version"):
        return _error(404, "Resource not found: the api-version query parameter is required.")
    if not request.content_type.startswith("application/json"):
        return _error(400, "Invalid content type: expected application/json")
    raw = await request.read()
    if len(raw) > _MAX_BODY:
        return _error(413, "The request is too large.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return _error(400, "The JSON body must be an object.")
    if state.canned:
        request_id = f"req_fake_{next(state.counter)}"
        if body.get("stream") is True:
            canned = json.loads(state.canned_body)
            return _Streamed(_stream_events(canned, 1, "image_generation"), request_id)
        return web.Response(
            body=state.canned_body,
            content_type="application/json",
            headers={"x-request-id": request_id},
        )
    fields = generation_fields(body)
    if isinstance(fields, tuple):
        status, message, param, code = fields
        return _error(status, message, param=param, code=code)
    state.requests.append(
        ReceivedRequest(
            path=request.path,
            headers=dict(request.headers),
            fields=fields,
            files=[],
            query=dict(request.query),
            peer=_peer(request),
        )
    )
    model = fields.get("model") or deployment or DEFAULT_MODEL
    problem = check_generation(
        model, fields, extra_models=state.extra_models, deployment=deployment
    )
    if problem is not None:
        status, message, param, code = problem
        return _error(status, message, param=param, code=code)
    answer = _gpt_image_answer(state, request, {**fields, "model": model}, [], None)
    return _answered(state, model, fields, answer, "image_generation")
