"""Reading an ``/images/edits`` multipart body as it streams in, into the SDK's parameters.

The body is fed chunk by chunk to python-multipart's streaming parser; only the parts' contents
are kept (so memory per request stays near the size of its images), and the size limit is
enforced on the bytes received so far: an oversized upload is refused with 413 as soon as it
crosses the limit, never buffered whole. :func:`form_params` then turns the parts into the exact
keyword arguments of :func:`tracking.aimage_edit`, so a proxied call takes the SDK's path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ProxyError

__all__ = ["ClientDisconnected", "FormPart", "form_params", "read_multipart", "too_large"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: Text fields read as integers / booleans; every other known text field is a string.
_INT_FIELDS = frozenset({"n", "output_compression", "partial_images"})
_BOOL_FIELDS = frozenset({"stream", "drop_params"})
_TEXT_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "size",
        "quality",
        "background",
        "output_format",
        "input_fidelity",
        "response_format",
        "user",
    }
)
_IMAGE_FIELDS = ("image", "image[]")
_MAX_PARTS = 64  # more parts than any real edit has: a cheap guard against part floods
_FEED = 256 * 1024  # bytes handed to the multipart parser at once


class ClientDisconnected(Exception):
    """The client went away before its body was complete; nothing is answered."""


@dataclass(slots=True)
class FormPart:
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    data: bytearray = field(default_factory=bytearray)


def too_large(limit: int) -> ProxyError:
    megabytes = limit / (1024 * 1024)
    return ProxyError(
        413,
        f"request body too large: the limit is {megabytes:g} MB (general_settings."
        "max_request_size_mb)",
        code="request_too_large",
        reason="size",
    )


def _bad_form(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, param=param, code="invalid_multipart")


class _PartCollector:
    """python-multipart callbacks that keep each part's headers and bytes."""

    def __init__(self) -> None:
        self.parts: list[FormPart] = []
        self.current = FormPart()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.finished = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= _MAX_PARTS:
            raise _bad_form(f"too many form parts (at most {_MAX_PARTS})")
        self.current = FormPart()
        self.headers = {}

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.current.data += memoryview(data)[start:end]  # one copy, not two

    def on_part_end(self) -> None:
        self.parts.append(self.current)

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition, options = parse_options_header(self.headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise _bad_form("every multipart part needs Content-Disposition: form-data; name=...")
        self.current.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self.current.filename = options[b"filename"].decode("utf-8", "replace")
        content_type = self.headers.get(b"content-type")
        if content_type:
            self.current.content_type = content_type.decode("latin-1").strip()

    def on_end(self) -> None:
        self.finished = True


async def read_multipart(receive: Receive, content_type: str, limit: int) -> list[FormPart]:
    """Parse the request body from ``receive`` as it arrives, refusing it past ``limit`` bytes."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise ProxyError(
            400,
            "expected a multipart/form-data body (as the openai client and curl -F send)",
            code="invalid_content_type",
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise _bad_form("the multipart/form-data content type has no boundary")
    collector = _PartCollector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:
        raise _bad_form(f"malformed multipart body: {exc}") from None
    received = 0
    more = True
    # The server hands the body over in socket-sized chunks; each parser.write has a fixed
    # Python cost, so chunks are fed in slices of up to _FEED bytes (memory stays bounded).
    pending: list[bytes] = []
    pending_size = 0
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        if chunk:
            pending.append(chunk)
            pending_size += len(chunk)
        if pending and (pending_size >= _FEED or not more):
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            pending_size = 0
            try:
                parser.write(data)
            except FormParserError as exc:
                raise _bad_form(f"malformed multipart body: {exc}") from None
    try:
        parser.finalize()
    except FormParserError as exc:
        raise _bad_form(f"malformed multipart body: {exc}") from None
    if not collector.finished:
        raise _bad_form("the multipart body ended before its closing boundary")
    return collector.parts


def form_params(parts: list[FormPart]) -> dict[str, Any]:
    """The keyword arguments of ``tracking.aimage_edit`` that the form's parts spell."""
    # image and prompt are always present, so a missing one is the SDK's clear 400, not a TypeError.
    params: dict[str, Any] = {"image": None, "prompt": None}
    extra_body: dict[str, str] = {}
    images: list[tuple[str | None, bytes, str | None]] = []
    several = False
    seen: set[str] = set()
    for part in parts:
        name = part.name
        if part.filename is not None or name in (*_IMAGE_FIELDS, "mask"):
            if name in _IMAGE_FIELDS:
                several = several or name == "image[]" or bool(images)
                images.append(_file(part))
            elif name == "mask":
                if "mask" in params:
                    raise _bad_form("mask: only one mask may be given", "mask")
                params["mask"] = _file(part)
            else:
                raise _bad_form(f"{name}: file uploads are only accepted for image and mask", name)
            continue
        if name in seen:
            raise _bad_form(f"{name}: given more than once", name)
        seen.add(name)
        text = _text(part)
        if name in _INT_FIELDS:
            params[name] = _integer(name, text)
        elif name in _BOOL_FIELDS:
            params[name] = _boolean(name, text)
        elif name in _TEXT_FIELDS:
            params[name] = text
        else:
            # Parameters this version does not know are sent upstream as they came.
            extra_body[name] = text
    if images:
        params["image"] = images if several else images[0]
    if extra_body:
        params["extra_body"] = extra_body
    return params


def _file(part: FormPart) -> tuple[str | None, bytes, str | None]:
    content_type = part.content_type
    # Clients label uploads loosely (application/octet-stream); the SDK sniffs the real type.
    if content_type is not None and not content_type.startswith("image/"):
        content_type = None
    return (part.filename or None, bytes(part.data), content_type)


def _text(part: FormPart) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_form(f"{part.name}: not valid UTF-8 text", part.name) from None


def _integer(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ProxyError(
            400, f"{name}: expected an integer, got {text[:40]!r}", param=name, code="type"
        ) from None


def _boolean(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ProxyError(400, f"{name}: expected true or false", param=name, code="type")
