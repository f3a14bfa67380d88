"""Azure OpenAI: ``POST {api_base}/openai/deployments/{deployment}/images/edits?api-version=...``
(and ``.../images/generations`` for a generation).

``model="azure/<deployment>"`` names the deployment. The resource endpoint (``api_base``, e.g.
``https://my-resource.openai.azure.com``), the key (sent as the ``api-key`` header) and the
``api_version`` come from the call or from ``AZURE_API_BASE`` / ``AZURE_API_KEY`` /
``AZURE_API_VERSION``. There is no default API version, as with the official ``AzureOpenAI``
client: Azure retires versions, and a silent stale default would fail far from its cause. The
body is OpenAI's multipart, with the deployment as ``model`` as the official client sends it;
answers and errors have OpenAI's shape.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from ..errors import ConfigurationError
from .base import EDITS_AND_GENERATIONS, OpenAIAnswers, PreparedRequest, request_headers
from .openai import encoded_body

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = ["AzureProvider"]


def _setting(value: str | None, variable: str, what: str) -> str:
    found = value or os.environ.get(variable)
    if not found:
        raise ConfigurationError(f"{what}: not set for Azure; pass {what}=... or set {variable}")
    return found


class AzureProvider(OpenAIAnswers):
    name = "azure"
    key_variables = ("AZURE_API_KEY",)
    operations = EDITS_AND_GENERATIONS
    takes_image_references = True  #: as OpenAI's (:mod:`.openai`)

    def check_settings(self, model: str, api_base: str | None, api_version: str | None) -> None:
        """A deployment needs its resource's URL and an API version, given or in the
        environment (checked when a router or the proxy loads it, as its key is:
        :func:`tracking.providers.check_deployment`)."""
        _setting(api_base, "AZURE_API_BASE", "api_base")
        _setting(api_version, "AZURE_API_VERSION", "api_version")

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        api_base = _setting(options.api_base, "AZURE_API_BASE", "api_base").rstrip("/")
        api_version = _setting(options.api_version, "AZURE_API_VERSION", "api_version")
        api_key = _setting(options.api_key, self.key_variables[0], "api_key")
        deployment = quote(request.upstream_model, safe="")
        body, content_type, endpoint = encoded_body(request)
        headers = request_headers(
            {
                "api-key": api_key,
                "Content-Type": content_type,
                "Accept": "application/json",
            },
            options.extra_headers,
        )
        query = urlencode({"api-version": api_version})
        return PreparedRequest(
            url=f"{api_base}/openai/deployments/{deployment}/{endpoint}?{query}",
            headers=headers,
            body=body,
            secrets=(api_key,),
        )
