"""Vertex AI: Gemini's image models through a Google Cloud project.

``model="vertex_ai/gemini-3.1-flash-image"`` sends the same ``generateContent`` body as the
``gemini`` provider to
``{api_base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``
with a bearer access token. The project and location are the call's (or its deployment's)
``vertex_project`` and ``vertex_location``, LiteLLM's ``litellm_params`` names, so deployments
of one model may each use their own; else the project comes from ``VERTEXAI_PROJECT`` (or
``GOOGLE_CLOUD_PROJECT``), the location from ``VERTEXAI_LOCATION`` (or ``GOOGLE_CLOUD_LOCATION``),
default ``global``. Either is held to the shape Google gives it
(:func:`tracking.endpoint.check_vertex_place`), from the environment too: it is written into the
URL. The token comes from ``api_key`` or ``VERTEX_ACCESS_TOKEN`` (for example the output of
``gcloud auth print-access-token``; tokens expire after about an hour, so a long-running process
should refresh the variable or pass ``api_key`` per call); a deployment with neither is refused
when it is loaded (:func:`tracking.providers.check_deployment` reads :attr:`key_variables`).
``api_base`` defaults to ``https://aiplatform.googleapis.com`` for the global location,
``https://aiplatform.{us|eu}.rep.googleapis.com`` for the multi-regions ``us`` and ``eu``, and
``https://{location}-aiplatform.googleapis.com`` for a region (:func:`default_api_base`). Answers,
errors and prices are the Gemini provider's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..endpoint import check_vertex_setting
from ..errors import ConfigurationError
from ..response import asks_google_search
from .base import EDITS_AND_GENERATIONS, PreparedRequest, api_key_for, request_headers
from .gemini import GeminiAnswers, check_request, generate_content_body

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = ["VertexAIProvider", "check_place", "default_api_base"]

#: Where a call without its own ``vertex_project`` / ``vertex_location`` reads them, in order.
PROJECT_VARIABLES = ("VERTEXAI_PROJECT", "GOOGLE_CLOUD_PROJECT")
LOCATION_VARIABLES = ("VERTEXAI_LOCATION", "GOOGLE_CLOUD_LOCATION")
DEFAULT_LOCATION = "global"
#: Google's multi-region locations: their endpoint is ``aiplatform.{location}.rep.googleapis.com``
#: (the multi-region table of Google's generative AI locations page, read 2026-12-07); the path
#: keeps ``locations/{location}`` as for a region.
MULTI_REGIONS = frozenset({"us", "eu"})


def _env(name: str, variables: tuple[str, ...]) -> str | None:
    """The setting ``name`` from the first of ``variables`` set, checked as a call's own is."""
    for variable in variables:
        value = os.environ.get(variable)
        if value:
            return check_vertex_setting(name, value, f" (from {variable})")
    return None


def _project(given: str | None) -> str:
    project = given or _env("vertex_project", PROJECT_VARIABLES)
    if not project:
        raise ConfigurationError(
            "vertex_project: not given, and neither VERTEXAI_PROJECT nor GOOGLE_CLOUD_PROJECT "
            "is set in the environment (every call would fail)",
            param="vertex_project",
        )
    return project


def _location(given: str | None) -> str:
    return given or _env("vertex_location", LOCATION_VARIABLES) or DEFAULT_LOCATION


def default_api_base(location: str) -> str:
    """Google's endpoint for ``location``: the global one, a multi-region's or a region's."""
    if location == DEFAULT_LOCATION:
        return "https://aiplatform.googleapis.com"
    if location in MULTI_REGIONS:
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def check_place(project: str | None, location: str | None) -> None:
    """A ``vertex_ai/`` deployment's project and location, checked when a router or the proxy
    loads it, as its key is: its own (already checked, :func:`tracking.endpoint
    .check_vertex_place`), else the environment's, which must then be set (without a project
    every call would fail) and of the right shape."""
    _project(project)
    _location(location)


class VertexAIProvider(GeminiAnswers):
    name = "vertex_ai"
    #: answers whole: ``stream=True`` is refused before sending (:func:`.prepare_call`)
    streams = False
    #: images are sent as base64 in JSON: large ones are prepared off the event loop
    encodes_images = True
    operations = EDITS_AND_GENERATIONS
    #: where a call without ``api_key`` reads its access token; a deployment with neither is
    #: refused at load (:func:`tracking.providers.check_deployment`)
    key_variables = ("VERTEX_ACCESS_TOKEN",)

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        check_request(request, options)
        project = _project(options.vertex_project)
        location = _location(options.vertex_location)
        token = api_key_for(options, "Vertex AI", *self.key_variables)
        api_base = (options.api_base or default_api_base(location)).rstrip("/")
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
