"""OpenAI's ``POST {api_base}/images/edits`` (multipart out) and
``POST {api_base}/images/generations`` (JSON out): bearer auth, JSON in.

An edit whose images (or mask, or markup) include an
:class:`~tracking.images.ImageReference` (an ``https://`` URL or a ``file_id`` a client sent in
OpenAI's JSON edit body) goes to ``images/edits`` as that JSON body instead of multipart: the
references unchanged, any image held as bytes as a ``data:`` URL. The upstream fetches the
URLs; nothing here does."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..multipart import encode_multipart
from ..request import openai_api_base
from .base import (
    EDITS_AND_GENERATIONS,
    OpenAIAnswers,
    PreparedRequest,
    api_key_for,
    request_headers,
)

if TYPE_CHECKING:
    from ..images import ImageFile
    from ..request import CallOptions, ImageEditRequest

__all__ = ["OpenAIProvider", "encoded_body", "multipart_files"]


def multipart_files(request: ImageEditRequest) -> list[tuple[str, ImageFile]]:
    """The file parts as the official client names them: ``image``, or ``image[]`` for several,
    then ``markup`` and ``mask`` when given."""
    name = "image" if len(request.images) == 1 else "image[]"
    files = [(name, image) for image in request.images]
    if request.markup is not None:
        files.append(("markup", request.markup))
    if request.mask is not None:
        files.append(("mask", request.mask))
    return files


def encoded_body(request: ImageEditRequest) -> tuple[bytes, str, str]:
    """The body in OpenAI's shape for the request's operation, its content type, and the
    endpoint it goes to (``images/edits`` or ``images/generations``)."""
    if request.operation == "image_generation":
        body = json.dumps(request.json_body(), separators=(",", ":")).encode()
        return body, "application/json", "images/generations"
    if request.references:
        body = json.dumps(request.edit_json_body(), separators=(",", ":")).encode()
        return body, "application/json", "images/edits"
    form, content_type = encode_multipart(request.form_fields(), multipart_files(request))
    return form, content_type, "images/edits"


class OpenAIProvider(OpenAIAnswers):
    name = "openai"
    key_variables = ("OPENAI_API_KEY",)
    operations = EDITS_AND_GENERATIONS
    #: it sends image references (URLs, file ids) on, in OpenAI's JSON edit body
    takes_image_references = True

    def api_base(self, options: CallOptions) -> str:
        return openai_api_base(options.api_base).rstrip("/")

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest:
        api_key = api_key_for(options, "OpenAI API", *self.key_variables)
        body, content_type, endpoint = encoded_body(request)
        headers = request_headers(
            {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
            options.extra_headers,
        )
        return PreparedRequest(
            url=f"{self.api_base(options)}/{endpoint}",
            headers=headers,
            body=body,
            secrets=(api_key,),
        )
