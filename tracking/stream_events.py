"""The typed events of a streamed image call, as OpenAI names and shapes them.

OpenAI's ``images.edit`` with ``stream=True`` answers Server-Sent Events: zero or more
``image_edit.partial_image`` events, then one ``image_edit.completed`` event carrying the final
image and the call's ``usage`` (OpenAI's API reference, "Image edit streaming events", and the
``openai`` package's ``ImageEditPartialImageEvent`` / ``ImageEditCompletedEvent``, read
2026-12-03). ``images.generate`` streams the same two events named
``image_generation.partial_image`` and ``image_generation.completed`` (the package's
``ImageGenPartialImageEvent`` / ``ImageGenCompletedEvent``); one class serves each pair, its
``type`` the name the upstream used. Each class here is a frozen dataclass whose ``type`` is
OpenAI's event name and whose fields are OpenAI's; ``to_dict()`` gives back the upstream's
JSON exactly, and ``data`` keeps its bytes so the proxy relays them without encoding them
again.

:func:`parse_stream_event` turns one decoded SSE event into one of these. An ``error`` event (or
a payload with an ``error`` object), an image event whose ``b64_json`` is not base64 of an
image, and an image event of the other operation (``image_edit.*`` answering a generation, or
``image_generation.*`` an edit), raise :class:`~tracking.errors.APIResponseError`; events of
types this version does not know are skipped (None), so a new kind of upstream event does not
break the call.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import APIResponseError
from .images import encodes_image_or_svg
from .response import reported_usage, upstream_json
from .sse import ServerSentEvent

if TYPE_CHECKING:
    from .request import Operation

__all__ = [
    "COMPLETED",
    "GENERATION_COMPLETED",
    "GENERATION_PARTIAL_IMAGE",
    "PARTIAL_IMAGE",
    "ImageEditCompletedEvent",
    "ImageEditPartialImageEvent",
    "ImageEditStreamEvent",
    "ImageEditStreamUsage",
    "InputTokensDetails",
    "parse_stream_event",
]

PARTIAL_IMAGE = "image_edit.partial_image"
COMPLETED = "image_edit.completed"
#: The same events of a streamed generation.
GENERATION_PARTIAL_IMAGE = "image_generation.partial_image"
GENERATION_COMPLETED = "image_generation.completed"
_PARTIAL_KINDS = frozenset({PARTIAL_IMAGE, GENERATION_PARTIAL_IMAGE})
_COMPLETED_KINDS = frozenset({COMPLETED, GENERATION_COMPLETED})


@dataclass(frozen=True, slots=True)
class InputTokensDetails:
    image_tokens: int = 0
    text_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ImageEditStreamUsage:
    """The completed event's usage: it counts the partial images' output tokens too, and has no
    ``output_tokens_details``."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    total_tokens: int = 0


class _Raw:
    """What both event types share: the upstream's JSON and its bytes, kept beside the fields."""

    __slots__ = ()
    raw: dict[str, Any]
    data: bytes

    def to_dict(self) -> dict[str, Any]:
        """The upstream's JSON object for this event, exactly (a deep copy)."""
        return copy.deepcopy(self.raw)

    model_dump = to_dict  # the name the openai package's pydantic models use


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ImageEditPartialImageEvent(_Raw):
    """A partial image, sent while the final one is being made."""

    type: Literal["image_edit.partial_image", "image_generation.partial_image"] = (
        "image_edit.partial_image"
    )
    b64_json: str
    partial_image_index: int
    background: str | None = None
    created_at: int | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    data: bytes = field(default=b"", compare=False)

    def __repr__(self) -> str:
        return (
            f"ImageEditPartialImageEvent(partial_image_index={self.partial_image_index}, "
            f"size={self.size!r}, quality={self.quality!r}, "
            f"b64_json=<{len(self.b64_json)} base64 chars>)"
        )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ImageEditCompletedEvent(_Raw):
    """The final image, and the call's usage (partial images included)."""

    type: Literal["image_edit.completed", "image_generation.completed"] = "image_edit.completed"
    b64_json: str
    background: str | None = None
    created_at: int | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    usage: ImageEditStreamUsage | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    data: bytes = field(default=b"", compare=False)

    def __repr__(self) -> str:
        return (
            f"ImageEditCompletedEvent(size={self.size!r}, quality={self.quality!r}, "
            f"usage={self.usage!r}, b64_json=<{len(self.b64_json)} base64 chars>)"
        )


ImageEditStreamEvent = ImageEditPartialImageEvent | ImageEditCompletedEvent


def _unusable(kind: str, payload: dict[str, Any], message: str) -> APIResponseError:
    """An event without a usable image; a completed one keeps the usage it reports, which the
    upstream billed all the same (pricing takes it as the call's cost)."""
    error = APIResponseError(message)
    if kind in _COMPLETED_KINDS:
        error.billed_usage = reported_usage(payload.get("usage"))
    return error


def parse_stream_event(
    sse: ServerSentEvent, operation: Operation | None = None
) -> ImageEditStreamEvent | None:
    """One decoded SSE event as a typed event; None for a type this version does not know, and
    for the ``data: [DONE]`` end marker OpenAI-compatible servers send after the last event.
    ``operation``: the call's; an image event of the other one is an upstream protocol error
    (None: either is taken)."""
    if sse.data.strip() == b"[DONE]":
        return None
    try:
        payload = upstream_json(sse.data)
    except ValueError:
        raise APIResponseError("the upstream streamed an event that is not JSON") from None
    if not isinstance(payload, dict):
        raise APIResponseError("the upstream streamed an event that is not a JSON object")
    kind = payload.get("type") or sse.event
    if kind is not None and not isinstance(kind, str):  # a list, an object: no type at all
        raise APIResponseError("the upstream streamed an event whose type is not a string")
    error = payload.get("error")
    if kind == "error" or isinstance(error, dict):
        details = error if isinstance(error, dict) else payload
        message = details.get("message")
        code = details.get("code")
        raise APIResponseError(
            f"the upstream stream failed: {message if isinstance(message, str) else 'error'}",
            code=code if isinstance(code, str) else None,
            upstream_message=message if isinstance(message, str) else None,
        )
    if kind not in _PARTIAL_KINDS and kind not in _COMPLETED_KINDS:
        return None
    generation = kind.startswith("image_generation.")
    if operation is not None and generation != (operation == "image_generation"):
        asked = "a generation" if operation == "image_generation" else "an edit"
        raise _unusable(kind, payload, f"the upstream streamed a {kind} event answering {asked}")
    b64 = payload.get("b64_json")
    if not isinstance(b64, str):
        raise _unusable(kind, payload, f"the upstream's {kind} event has no b64_json string")
    if not encodes_image_or_svg(b64):  # as plain answers: only the first characters decoded
        raise _unusable(
            kind, payload, f"the upstream's {kind} event's b64_json is not base64 of an image"
        )
    common: dict[str, Any] = {
        "b64_json": b64,
        "background": _str(payload.get("background")),
        "created_at": _int(payload.get("created_at")),
        "output_format": _str(payload.get("output_format")),
        "quality": _str(payload.get("quality")),
        "size": _str(payload.get("size")),
        "raw": payload,
        "data": sse.data,
    }
    if kind in _PARTIAL_KINDS:
        return ImageEditPartialImageEvent(
            type="image_generation.partial_image" if generation else "image_edit.partial_image",
            partial_image_index=_int(payload.get("partial_image_index")) or 0,
            **common,
        )
    return ImageEditCompletedEvent(
        type="image_generation.completed" if generation else "image_edit.completed",
        usage=_usage(payload.get("usage")),
        **common,
    )


def _usage(raw: Any) -> ImageEditStreamUsage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    return ImageEditStreamUsage(
        input_tokens=_int(raw.get("input_tokens")) or 0,
        input_tokens_details=InputTokensDetails(
            image_tokens=_int(details.get("image_tokens")) or 0,
            text_tokens=_int(details.get("text_tokens")) or 0,
        ),
        output_tokens=_int(raw.get("output_tokens")) or 0,
        total_tokens=_int(raw.get("total_tokens")) or 0,
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
