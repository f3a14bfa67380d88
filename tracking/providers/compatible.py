"""Any OpenAI-compatible server: ``model="openai_compatible/<model>"`` with an explicit api_base.

The request is OpenAI's (``POST {api_base}/images/edits``, multipart, or
``POST {api_base}/images/generations``, JSON; JSON back), but nothing
defaults to OpenAI: ``api_base`` must be given (or ``OPENAI_COMPATIBLE_API_BASE``), so a call
meant for a local server never reaches api.openai.com by accident, and the key is optional
(``OPENAI_COMPATIBLE_API_KEY``; many local servers take none, and then no Authorization header
is sent). Model names the family table does not know get only the generic checks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from .base import EDITS_AND_GENERATIONS, OpenAIAnswers, PreparedRequest, request_headers
from .openai import encoded_body

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = ["CompatibleProvider"]


class CompatibleProvider(OpenAIAnswers):
    name = "openai_compatible"
    operations = EDITS_AND_GENERATIONS
    takes_image_references = True  #: as OpenAI's (:mod:`.openai`)

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        api_base = options.api_base or os.environ.get("OPENAI_COMPATIBLE_API_BASE")
        if not api_base:
            raise ConfigurationError(
                "api_base: an OpenAI-compatible provider needs the server's URL (including its "
                "version path, e.g. http://localhost:8000/v1); pass api_base=... or set "
                "OPENAI_COMPATIBLE_API_BASE"
            )
        api_key = options.api_key or os.environ.get("OPENAI_COMPATIBLE_API_KEY")
        body, content_type, endpoint = encoded_body(request)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        headers = request_headers(headers, options.extra_headers)
        return PreparedRequest(
            url=f"{api_base.rstrip('/')}/{endpoint}",
            headers=headers,
            body=body,
            secrets=(api_key,) if api_key else (),
        )
