"""Vertex AI: Gemini's image models through a Google Cloud project.

``model="vertex_ai/gemini-3.1-flash-image"`` sends the same ``generateContent`` body as the
``gemini`` provider to
``{api_base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``
with a bearer access token. The project comes from ``VERTEXAI_PROJECT`` (or
``GOOGLE_CLOUD_PROJECT``), the location from ``VERTEXAI_LOCATION`` (or ``GOOGLE_CLOUD_LOCATION``,
default ``global``), the token from ``api_key`` or ``VERTEX_ACCESS_TOKEN`` (for example the
output of ``gcloud auth print-access-token``; tokens expire after about an hour, so a long-running
process should refresh the variable or pass ``api_key`` per call). ``api_base`` defaults to
``https://aiplatform.googleapis.com`` for the global location and
``https://{location}-aiplatform.googleapis.com`` for a region. Answers, errors and prices are the
Gemini provider's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..errors import ConfigurationError
from ..response import asks_google_search
from .base import EDITS_AND_GENERATIONS, PreparedRequest, request_headers
from .gemini import GeminiAnswers, check_request, generate_content_body

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = ["VertexAIProvider"]


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _project() -> str:
    project = _env("VERTEXAI_PROJECT", "GOOGLE_CLOUD_PROJECT")
    if not project:
        raise ConfigurationError(
            "vertex_ai: no Google Cloud project; set VERTEXAI_PROJECT (or GOOGLE_CLOUD_PROJECT) "
            "in the environment (LiteLLM's litellm_params.vertex_project is not read)"
        )
    return project


class VertexAIProvider(GeminiAnswers):
    name = "vertex_ai"
    #: answers whole: ``stream=True`` is refused before sending (:func:`.prepare_call`)
    streams = False
    #: images are sent as base64 in JSON: large ones are prepared off the event loop
    encodes_images = True
    operations = EDITS_AND_GENERATIONS

    def check_settings(self, model: str, api_base: str | None, api_version: str | None) -> None:
        """A deployment needs its Google Cloud project in the environment (checked when a
        router or the proxy loads it, as its key is: :func:`tracking.providers.check_deployment`):
        without it every call would fail."""
        _project()

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        check_request(request, options)
        project = _project()
        location = _env("VERTEXAI_LOCATION", "GOOGLE_CLOUD_LOCATION") or "global"
        token = options.api_key or _env("VERTEX_ACCESS_TOKEN")
        if not token:
            raise ConfigurationError(
                "api_key: no Vertex AI access token; pass api_key=... or set VERTEX_ACCESS_TOKEN "
                "(e.g. from `gcloud auth print-access-token`)"
            )
        default_base = (
            "https://aiplatform.googleapis.com"
            if location == "global"
            else f"https://{location}-aiplatform.googleapis.com"
        )
        api_base = (options.api_base or default_base).rstrip("/")
        body, tier = generate_content_body(request, drop_params=options.drop_params)
        path = (
            f"/v1/projects/{quote(project, safe='')}/locations/{quote(location, safe='')}"
            f"/publishers/google/models/{quote(request.upstream_model, safe='')}:generateContent"
        )
        return PreparedRequest(
            url=f"{api_base}{path}",
            headers=request_headers(
                {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                options.extra_headers,
            ),
            body=body,
            secrets=(token,),
            price_size=tier,
            read=self.parse_grounded if asks_google_search(request.extra_body) else None,
        )
