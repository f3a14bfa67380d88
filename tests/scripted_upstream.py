"""One loopback upstream that answers every provider's edit paths with what a test scripts: the
body and status a hostile or broken upstream would send, where the shipped fakes only send
well-formed answers. Each provider's calls go to ``api_base`` from :meth:`ScriptedUpstream.base`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import make_png
from tests.proxy_support import ProxyProcess, write_config
from tracking.testing.app_thread import AppThread

__all__ = [
    "GEMINI_ANSWER",
    "MODELS",
    "PNG",
    "Reply",
    "ScriptedUpstream",
    "proxy_in_front",
    "scripted_upstream",
]

PNG = make_png(64, 64)
#: A Gemini answer with one image (``PNG``) and its usage, as ``generateContent`` sends it.
GEMINI_ANSWER = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "image/png",
                            "data": base64.b64encode(PNG).decode(),
                        }
                    }
                ]
            },
            "finishReason": "STOP",
        }
    ],
    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1120},
}

#: One model per provider the scripted upstream serves.
MODELS = {
    "gemini": "gemini/gemini-3.1-flash-image",
    "xai": "xai/grok-imagine-image",
    "recraft": "recraft/recraftv3",
    "stability": "stability/inpaint",
    "flux": "black_forest_labs/flux-kontext-pro",
    "openai": "gpt-image-2",
    "compatible": "openai_compatible/my-model",
    "azure": "azure/my-deployment",
}


@dataclass
class Reply:
    """What the upstream answers: a status and a body (a dict or list is sent as JSON)."""

    body: Any = field(default_factory=dict)
    status: int = 200

    def response(self) -> web.Response:
        body = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return web.Response(body=body, status=self.status, content_type="application/json")


@dataclass
class ScriptedUpstream:
    url: str = ""
    #: the reply to an edit (FLUX: to a poll of the job; its submission is always accepted)
    reply: Reply = field(default_factory=Reply)
    #: the reply to a FLUX submission instead of accepting the job
    submission: Reply | None = None
    #: the JSON bodies of the edits received (multipart ones as None)
    received: list[Any] = field(default_factory=list)

    def base(self, provider: str) -> str:
        """The ``api_base`` a call of ``provider`` (a key of :data:`MODELS`) is given."""
        return self.url + {"xai": "/x", "openai": "/o", "compatible": "/c"}.get(provider, "")

    def params(self, provider: str, **more: Any) -> dict[str, Any]:
        """``tracking.image_edit`` arguments for one edit of ``provider`` sent here."""
        settings: dict[str, Any] = {
            "model": MODELS[provider],
            "api_base": self.base(provider),
            "api_key": "test-key-0123456789",
            "prompt": "a hat",
            "max_retries": 0,
            "timeout": 20,
        }
        if provider == "azure":
            settings["api_version"] = "2025-04-01-preview"
        return {**settings, **more}


@contextmanager
def scripted_upstream() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()

    async def edit(request: web.Request) -> web.Response:
        body = await request.read()
        is_json = request.content_type == "application/json"
        upstream.received.append(json.loads(body) if is_json else None)
        return upstream.reply.response()

    async def submit(request: web.Request) -> web.Response:
        upstream.received.append(json.loads(await request.read()))
        if upstream.submission is not None:
            return upstream.submission.response()
        return web.json_response({"id": "job-1", "polling_url": f"{upstream.url}/poll"})

    async def poll(request: web.Request) -> web.Response:
        return upstream.reply.response()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1beta/models/{model}", edit)  # Gemini: {model}:generateContent
    app.router.add_post("/v1/projects/{path:.+}", edit)  # Vertex AI: .../{model}:generateContent
    for prefix in ("/x", "/o", "/c", "/openai/deployments/{deployment}"):
        app.router.add_post(f"{prefix}/images/edits", edit)
    app.router.add_post("/images/imageToImage", edit)
    app.router.add_post("/images/inpaint", edit)
    app.router.add_post("/v2beta/stable-image/edit/{operation}", edit)
    app.router.add_post("/v1/{model}", submit)
    app.router.add_get("/poll", poll)
    server = AppThread(app, name="scripted-upstream", shutdown_timeout=0.1)
    upstream.url = f"http://127.0.0.1:{server.start()}"
    try:
        yield upstream
    finally:
        server.stop()


@contextmanager
def proxy_in_front(
    folder: Path, deployments: dict[str, tuple[str, str]], **litellm_params: Any
) -> Iterator[ProxyProcess]:
    """``tracking serve`` with a SQLite ledger in ``folder``, serving each model name of
    ``deployments`` (name -> (model, api_base)) from the scripted upstream; ``litellm_params``
    are given to every deployment (``max_retries=0``)."""
    entries = [
        {
            "model_name": name,
            "litellm_params": {
                "model": model,
                "api_key": "test-key-0123456789",
                "api_base": api_base,
                **litellm_params,
            },
        }
        for name, (model, api_base) in deployments.items()
    ]
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": entries,
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as process:
        yield process


def stream_call(model: str, api_base: str) -> dict[str, Any]:
    """The parameters of a streamed edit with two partial images, low quality, 1024x1024, sent
    to ``api_base`` with the session fake's key."""
    from tests.conftest import API_KEY

    return {
        "model": model,
        "prompt": "a hat",
        "image": make_png(16, 16),
        "quality": "low",
        "size": "1024x1024",
        "api_key": API_KEY,
        "api_base": api_base,
        "stream": True,
        "partial_images": 2,
    }
