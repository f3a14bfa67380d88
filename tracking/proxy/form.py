"""Reading an ``/images/edits`` multipart body as it streams in, into the SDK's parameters.

The body is collected as it streams in, with the size limit enforced on the bytes received so
far: an oversized upload is refused with 413 as soon as it crosses the limit, never buffered
past it, and it must all arrive within a deadline (``general_settings.request_read_timeout``),
else 408: a client trickling bytes cannot hold a connection and its buffers open for ever. The
complete body is then split at its boundary with ``bytes.find`` (python-multipart's
byte-level state machine cost several times more CPU per request), each part's content
copied once into its own ``bytes``, so memory per request stays near a small multiple of the
size of its images. :func:`form_params` then turns the parts into the exact
keyword arguments of :func:`tracking.aimage_edit`, so a proxied call takes the SDK's path.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from .client_metadata import take_metadata
from .errors import ProxyError
from .limits import bounded_text, end_user_id, mebibytes

__all__ = [
    "BOOL_FIELDS",
    "INT_FIELDS",
    "TEXT_FIELDS",
    "ClientDisconnected",
    "FormPart",
    "form_params",
    "read_body",
    "read_multipart",
    "too_large",
]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: Text fields read as integers / booleans; every other known text field is a string.
INT_FIELDS = frozenset({"n", "output_compression", "partial_images"})
BOOL_FIELDS = frozenset({"stream", "drop_params"})
TEXT_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "size",
        "quality",
        "background",
        "output_format",
        "input_fidelity",
        "moderation",
        "response_format",
        "user",
        "safety_identifier",
    }
)
_IMAGE_FIELDS = ("image", "image[]")
#: The file parts given at most once each: the ``mask``, and the ``markup`` drawn over the first
#: image (GPT Image 2.5 and 2.6)
_SINGLE_FILES = ("mask", "markup")
_MAX_PARTS = 64  # more parts than any real edit has: a cheap guard against part floods
_MAX_BOUNDARY = 200  # RFC 2046 allows 70 characters; anything far longer is not a client
_MAX_CACHED_HEADER = 512  # header values longer than this are parsed each time, never cached
_CACHED_HEADERS = 1024


class ClientDisconnected(Exception):
    """The client went away before its body was complete; nothing is answered."""


@dataclass(slots=True)
class FormPart:
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    data: bytes = b""


def too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"request body too large: the limit is {mebibytes(limit)} (general_settings."
        "max_request_size_mb)",
        code="request_too_large",
        reason="size",
    )


def _bad_form(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, param=param, code="invalid_multipart")


def _options(value: bytes | str | None) -> tuple[bytes, dict[bytes, bytes]]:
    """``parse_options_header``, remembered for the short header values that repeat.

    Every request carries the same few Content-Type and Content-Disposition values (the field
    names, the client's boundary and file name), and parsing them cost about 5% of the proxy's
    CPU per request. Long values are parsed every time, so a client cannot fill the cache with
    big ones. Callers must not modify the returned dict (it may be shared).
    """
    if value is not None and len(value) <= _MAX_CACHED_HEADER:
        return _cached_options(value)
    return _parse_options(value)


def _parse_options(value: bytes | str | None) -> tuple[bytes, dict[bytes, bytes]]:
    from python_multipart.multipart import parse_options_header

    return parse_options_header(value)


_cached_options = functools.lru_cache(maxsize=_CACHED_HEADERS)(_parse_options)


def _disposition(value: bytes | None) -> tuple[str, str | None]:
    """A part's field name and file name from its (short) Content-Disposition value."""
    disposition, options = _parse_options(value)
    if disposition != b"form-data" or b"name" not in options:
        raise _bad_form("every multipart part needs Content-Disposition: form-data; name=...")
    try:
        name = options[b"name"].decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_form("a multipart part's field name is not valid UTF-8", "field name") from None
    if not name:  # control characters are refused with the field's other checks (form_params)
        raise _bad_form("a multipart part's field name is empty", "field name")
    filename = options.get(b"filename")  # only a label: an undecodable byte is replaced
    return name, None if filename is None else filename.decode("utf-8", "replace")


def _part_headers(block: bytes) -> tuple[str, str | None, str | None]:
    """A part's field name, file name and content type from its header lines."""
    headers: dict[bytes, bytes] = {}
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            raise _bad_form("malformed multipart body: a part header line without a colon")
        headers[name.strip().lower()] = value.strip()
    field, filename = _disposition(headers.get(b"content-disposition"))
    content_type = headers.get(b"content-type")
    return field, filename, content_type.decode("latin-1") if content_type else None


#: Every request's parts carry the same few header blocks (each field's name; the image's
#: name, file name and type): each distinct short block is parsed once. A refused block raises
#: each time (an exception is not cached).
_cached_part_headers = functools.lru_cache(maxsize=_CACHED_HEADERS)(_part_headers)


def _part(headers_block: bytes, content: bytes) -> FormPart:
    """One part from its header lines and its content."""
    if len(headers_block) <= _MAX_CACHED_HEADER:
        field, filename, content_type = _cached_part_headers(headers_block)
    else:
        field, filename, content_type = _part_headers(headers_block)
    return FormPart(field, filename, content_type, content)


def parse_multipart(body: bytes, boundary: bytes) -> list[FormPart]:
    """The parts of a complete multipart/form-data body (RFC 7578 over RFC 2046's syntax).

    Delimiters are found with ``bytes.find``, so a part's content is never walked in Python
    and is copied once, into its own ``bytes``.
    """
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        position = len(delimiter)
    else:  # a preamble before the first delimiter is allowed (and ignored)
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            raise _bad_form("malformed multipart body: no part delimited by the boundary")
        position = found + 2 + len(delimiter)
    separator = b"\r\n" + delimiter
    view = memoryview(body)
    parts: list[FormPart] = []
    while True:
        if body.startswith(b"--", position):
            return parts  # the close delimiter; what follows is an epilogue
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise _bad_form("the multipart body ended before its closing boundary")
        headers_start = line_end + 2
        if body.startswith(b"\r\n", headers_start):  # a part without headers
            headers_end, content_start = headers_start, headers_start + 2
        else:
            headers_end = body.find(b"\r\n\r\n", headers_start)
            if headers_end < 0:
                raise _bad_form("the multipart body ended before its closing boundary")
            content_start = headers_end + 4
        content_end = body.find(separator, content_start)
        if content_end < 0:
            raise _bad_form("the multipart body ended before its closing boundary")
        if len(parts) >= _MAX_PARTS:
            raise _bad_form(f"too many form parts (at most {_MAX_PARTS})")
        parts.append(_part(body[headers_start:headers_end], bytes(view[content_start:content_end])))
        position = content_end + len(separator)


async def read_multipart(
    receive: Receive,
    content_type: str,
    limit: int,
    within: float | None = None,
    received: Callable[[int], None] | None = None,
) -> list[FormPart]:
    """Read the request body from ``receive`` as it arrives, refusing it past ``limit`` bytes or
    when it has not all arrived ``within`` that many seconds, then split it into its parts.
    ``received`` is told the bytes read so far after each chunk (it may refuse by raising)."""
    kind, options = _options(content_type)
    if kind != b"multipart/form-data":
        raise ProxyError(
            400,
            "expected a multipart/form-data body (as the openai client and curl -F send) or "
            "OpenAI's application/json edit body (images as image_url or file_id references)",
            code="invalid_content_type",
        )
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > _MAX_BOUNDARY:
        raise _bad_form("the multipart/form-data content type has no usable boundary")
    return parse_multipart(await read_body(receive, limit, within, received), boundary)


async def read_body(
    receive: Receive,
    limit: int,
    within: float | None = None,
    received: Callable[[int], None] | None = None,
    too_big: Callable[[int], ProxyError] = too_large,
) -> bytes:
    """The whole request body, refused past ``limit`` bytes (413) or when it has not all
    arrived ``within`` that many seconds (408); ``received`` as for :func:`read_multipart`."""
    if within is None or _all_arrived(receive):  # reading cannot wait: no timer to arm
        return await _collect(receive, limit, received, too_big)
    try:
        # One timer for the whole body, not one per chunk: cheap at proxy rates.
        async with asyncio.timeout(within):
            body = await _collect(receive, limit, received, too_big)
    except TimeoutError:
        raise body_timeout(within) from None
    return body


def _all_arrived(receive: Receive) -> bool:
    """Whether the whole body is buffered already, so reading it cannot wait: uvicorn's request
    cycle (``receive``'s object) says so when the message is complete and not yet read. Then no
    deadline is armed (``asyncio.timeout`` costs about 27,000 instructions on Python 3.11, 0.8%
    of a proxied edit). Under another ASGI server: False, and the deadline is armed."""
    cycle: Any = getattr(receive, "__self__", None)
    if getattr(cycle, "more_body", None) is not False:
        return False
    event = getattr(cycle, "message_event", None)
    return isinstance(event, asyncio.Event) and event.is_set()


def body_timeout(within: float | None) -> ProxyError:
    """The 408 for a request body that did not all arrive ``within`` seconds."""
    return ProxyError(
        408,
        f"the request body did not arrive within {within:g} s "
        "(general_settings.request_read_timeout)",
        code="request_timeout",
        # The rest of the body is not waited for: the connection is closed after the answer.
        headers={"connection": "close"},
        reason="body_timeout",
        retry=True,  # a slow upload may go through on a better try
    )


async def _collect(
    receive: Receive,
    limit: int,
    report: Callable[[int], None] | None = None,
    too_big: Callable[[int], ProxyError] = too_large,
) -> bytes:
    chunks: list[bytes] = []
    received = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        received += len(chunk)
        if received > limit:
            raise too_big(limit)  # counted as it streams in: never buffered past the limit
        if report is not None:
            report(received)
        if chunk:
            chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def form_params(parts: list[FormPart]) -> dict[str, Any]:
    """The keyword arguments of ``tracking.aimage_edit`` that the form's parts spell."""
    # image and prompt are always present, so a missing one is the SDK's clear 400, not a TypeError.
    params: dict[str, Any] = {"image": None, "prompt": None}
    extra_body: dict[str, Any] = {}
    images: list[tuple[str | None, bytes, str | None]] = []
    several = False
    seen: set[str] = set()
    for part in parts:
        name = part.name
        if part.filename is not None or name in (*_IMAGE_FIELDS, *_SINGLE_FILES):
            if name in _IMAGE_FIELDS:
                several = several or name == "image[]" or bool(images)
                images.append(_file(part))
            elif name in _SINGLE_FILES:
                if name in params:
                    raise _bad_form(f"{name}: only one {name} may be given", name)
                params[name] = _file(part)
            else:
                raise _bad_form(
                    f"{name}: file uploads are only accepted for image, mask and markup", name
                )
            continue
        if name in seen and not name.endswith("[]"):  # a list's items repeat its name
            raise _bad_form(f"{name}: given more than once", name)
        seen.add(name)
        text = _text(part)
        if name in INT_FIELDS:
            params[name] = _integer(name, text)
        elif name in BOOL_FIELDS:
            params[name] = _boolean(name, text)
        elif name == "user":  # the one end-user id rule; an empty one names nobody
            if (user := end_user_id(text)) is not None:
                params["user"] = user
        elif name == "prompt":  # never stored (only its length is): the SDK bounds it
            params[name] = text
        elif name in TEXT_FIELDS:  # short words that the ledger records
            params[name] = bounded_text(text, name)
        else:
            # Parameters this version does not know are sent upstream as they came (a name
            # with a control character is no parameter: refused here, never sent and retried);
            # ``a[b][]`` names, as the official clients spell nested values, are read back
            # into them, and sent spelled the same way.
            _place(extra_body, bounded_text(name, "field name"), text)
    if images:
        params["image"] = images if several else images[0]
    if (metadata := take_metadata(extra_body)) is not None:
        params["metadata"] = metadata
    if extra_body:
        params["extra_body"] = extra_body
    return params


#: How many ``[...]`` a field name may have (the SDK sends at most as deep).
_MAX_BRACKETS = 7


def _place(extra_body: dict[str, Any], name: str, text: str) -> None:
    """Put one unknown field in ``extra_body``: ``a`` as a text, ``a[b]`` in a dict under
    ``a``, ``a[]`` (repeated) in a list; a name that conflicts with another is a 400."""
    base, bracket, rest = name.partition("[")
    segments = rest[:-1].split("][") if bracket and base and rest.endswith("]") else None
    if segments is None or any("[" in s or "]" in s for s in segments):
        segments = []  # not bracket form: a name like any other
        base = name
    if len(segments) > _MAX_BRACKETS:
        raise _bad_form(f"{name}: nested deeper than this proxy reads", name)
    if "" in segments[:-1]:
        raise _bad_form(f"{name}: a list of objects is not read by this proxy", name)
    node: dict[str, Any] = extra_body
    key = base
    for segment in segments:
        child = node.get(key)
        wanted = list if segment == "" else dict
        if child is None:
            child = node[key] = wanted()
        elif not isinstance(child, wanted):
            raise _bad_form(f"{name}: conflicts with another field naming {key!r}", name)
        if isinstance(child, list):
            child.append(text)
            return
        node, key = child, segment
    if key in node:
        raise _bad_form(f"{name}: given more than once", name)
    node[key] = text


def _file(part: FormPart) -> tuple[str | None, bytes, str | None]:
    content_type = part.content_type
    # Clients label uploads loosely (application/octet-stream); the SDK sniffs the real type.
    if content_type is not None and not content_type.startswith("image/"):
        content_type = None
    return (part.filename or None, part.data, content_type)


def _text(part: FormPart) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_form(f"{part.name}: not valid UTF-8 text", part.name) from None


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _integer(name: str, text: str) -> int:
    # ASCII digits only, as OpenAI reads them: Python's int() would take "1_0" (10 images
    # billed) or other scripts' digits.
    value = text.strip()
    try:
        if _INTEGER.fullmatch(value):
            return int(value)
    except ValueError:  # past Python's 4,300 digits
        pass
    raise ProxyError(
        400, f"{name}: expected an integer, got {text[:40]!r}", param=name, code="invalid_type"
    )


def _boolean(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ProxyError(400, f"{name}: expected true or false", param=name, code="invalid_type")
