"""A request's own ``metadata``, as LiteLLM's proxy takes it: recorded with the call, not sent.

A client names what a call is for in ``metadata`` (LiteLLM's request metadata: ``tags``, a
project, a trace id). In an edit's form it comes as ``metadata[key]`` / ``metadata[tags][]``
fields (what the official clients send for ``extra_body={"metadata": {...}}``) or as one
``metadata`` field holding a JSON object (``curl -F 'metadata={"tags": ["a"]}'``); in a
generation's JSON body as an object. It becomes the call's metadata (so its ``tags`` and the
rest are in the event and the ledger row, within the SDK's bounds) and is never forwarded
upstream, where OpenAI would refuse an unknown parameter.

Keys the proxy sets from the caller's key are refused here (400): ``user_api_key_*`` would
attribute spend to another key, and a virtual key's ``team`` is its own (see
:meth:`tracking.proxy.accounts.Accounts.admit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .auth import header_text, header_values
from .errors import ProxyError

__all__ = ["RESERVED_PREFIX", "TAGS_HEADER", "take_metadata", "take_tags_header"]

#: Metadata keys the proxy fills in from the caller's virtual key.
RESERVED_PREFIX = "user_api_key_"
#: LiteLLM's header of spend tags, comma-separated (docs.litellm.ai/docs/proxy/request_headers,
#: read 2026-12-07: "tags to use for tag-based routing OR spend-tracking").
TAGS_HEADER = "x-litellm-tags"


def take_tags_header(headers: Mapping[str, str], params: dict[str, Any]) -> None:
    """Add the tags of LiteLLM's ``x-litellm-tags`` header (``a,b``: each stripped, empty ones
    left out) to the call's ``metadata.tags``, after the body's own, each once: they are
    recorded as the body's are (the event's ``tags``, the ledger row). Tag-based routing, the
    header's other use in LiteLLM, is not done here. A body whose ``tags`` are no list keeps
    them, for :func:`tracking.request.metadata_tags` to refuse."""
    # UTF-8 tags as such (``ñ``, not ``Ã±``); the header sent twice: the tags of both lines
    given = ",".join(filter(None, map(header_text, header_values(headers, TAGS_HEADER))))
    tags = [tag.strip() for tag in given.split(",") if tag.strip()]
    if not tags:
        return
    metadata = params.get("metadata")
    if not isinstance(metadata, dict):
        metadata = params["metadata"] = {}
    own = metadata.get("tags")
    if own is None:
        metadata["tags"] = list(dict.fromkeys(tags))
    elif isinstance(own, list):
        metadata["tags"] = list(dict.fromkeys([*own, *tags]))


def _not_an_object() -> ProxyError:
    return ProxyError(
        400,
        "metadata: expected a JSON object (or metadata[key] form fields)",
        param="metadata",
        code="invalid_value",
    )


def take_metadata(extra_body: dict[str, Any]) -> dict[str, Any] | None:
    """Remove ``metadata`` from what would go upstream and return it as the call's own."""
    value = extra_body.pop("metadata", None)
    if isinstance(value, str):
        from .json_io import load_json_object  # (it reads the form module, which reads this)

        try:
            value = load_json_object(value.encode("utf-8"))
        except ProxyError as error:
            if error.param is None:
                raise _not_an_object() from None
            raise ProxyError(
                400,
                f"metadata.{error.message}",
                param=f"metadata.{error.param}",
                code=error.code,
            ) from None
        except UnicodeEncodeError:
            raise _not_an_object() from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _not_an_object()
    for key in value:
        if key.startswith(RESERVED_PREFIX):
            raise ProxyError(
                400,
                f"metadata.{key}: set by the proxy from the caller's key, never by a request",
                param=f"metadata.{key}",
                code="invalid_value",
            )
    return value or None
