"""The proxy's side of URL answers: which models need them, rewriting an answer, serving a URL.

See :mod:`.image_store` for the stores and the signed URLs. A public model name gets URL answers
from the proxy when every deployment behind it is of a family that returns base64 only (the GPT
image models, Gemini): for those, ``response_format=url`` is taken off the upstream request, the
call's ``metadata`` records ``"response_format": "url"`` (so the event and the ledger row say how
the answer was served), and the answer's ``b64_json`` items become ``url`` items. Models that
take ``response_format`` (xAI's, an OpenAI-compatible server's) get it passed through as sent;
their call's ``metadata`` records ``response_format`` all the same, from the answer
(:func:`upstream_answer_format`), so every row of a URL request says how it was answered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote

from ..config import ProxyConfig
from ..families import family_of
from ..images import sniff_content_type
from ..request import split_provider
from ..response import ImageResponse
from .account_store import read_store
from .errors import ProxyError
from .image_store import (
    STORED_PREFIX,
    ImageStore,
    Pieces,
    content_type,
    stored_url,
    valid_name,
)

__all__ = [
    "FALLBACK_HEADER",
    "NOTHING_ANSWERED",
    "UrlAnswer",
    "base64_only_models",
    "recorded_as_url",
    "serve_stored",
    "store_answer",
    "to_url_answer",
    "upstream_answer_format",
]

log = logging.getLogger("tracking.proxy")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_EXTENSIONS = {
    "png": "png",
    "jpeg": "jpeg",
    "jpg": "jpeg",
    "webp": "webp",
    "gif": "gif",
    "svg": "svg",
}
_SNIFFED = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/gif": "gif"}
#: An SVG is a document that may hold scripts: served as an image, never run on our origin.
_SVG_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; sandbox"),
]


def base64_only_models(config: ProxyConfig) -> frozenset[str]:
    """Public model names whose deployments all return base64 only."""
    names = set()
    for name in config.model_names():
        families = [family_of(split_provider(d.model)[1]) for d in config.deployments(name)]
        if families and all(f is not None and not f.takes_response_format for f in families):
            names.add(name)
    return frozenset(names)


#: Why an answer asked as URLs came back as base64: the ``x-tracking-url-fallback`` header
#: and the call's ``metadata["url_fallback"]`` (its ``response_format`` is then ``b64_json``).
STORE_FAILED = "store_failed"  #: the store refused or could not be reached (full disk, outage)
UNDECODABLE = "undecodable_image"  #: an image of the upstream's answer is not valid base64
FALLBACK_HEADER = "x-tracking-url-fallback"
#: A call cancelled while its images were being stored (the proxy shutting down) answered
#: nothing: its row's ``metadata`` says so (``CallControl.finish_cancelled``), never ``url``.
CANCELLED = "cancelled"
NOTHING_ANSWERED = MappingProxyType({"response_format": "none", "url_fallback": CANCELLED})


@dataclass(slots=True)
class UrlAnswer:
    """One call's URL answer. :meth:`finish` (the call's ``CallControl.finish``) stores its
    images before the call's event is made, so its ledger row says how it was answered: with
    URLs, or as base64 and why (``response_format: b64_json``, ``url_fallback``), or, cancelled
    meanwhile, with nothing (:data:`NOTHING_ANSWERED`, the call's ``finish_cancelled``)."""

    store: ImageStore
    base: str
    #: the answer to send (None until finished: the upstream's, as base64)
    body: bytes | None = None
    stored: int = 0  #: bytes stored
    fallback: str | None = None  #: why the answer is base64 (None: it is URLs)

    def finish(self, response: ImageResponse, request_id: str) -> dict[str, Any]:
        """Store the answer's images (:func:`store_answer`: any failure of it is the answer as
        base64 with :data:`STORE_FAILED`, logged once, never the call's own failure)."""
        self.body, self.stored, self.fallback = store_answer(
            self.store, response.json_bytes(), request_id, self.base
        )
        if self.fallback is None:
            return {"response_format": "url"}
        return {"response_format": "b64_json", "url_fallback": self.fallback}


def recorded_as_url(params: dict[str, Any]) -> None:
    """Record ``"response_format": "url"`` in a URL request's metadata, as it was asked (a
    failed call's row keeps it; a finished one's says how the answer went out). How the answer
    went out is the proxy's to record, never the caller's: a request's own ``url_fallback``
    would contradict the row, so it is left out."""
    metadata = {k: v for k, v in (params.get("metadata") or {}).items() if k != "url_fallback"}
    params["metadata"] = {**metadata, "response_format": "url"}


def upstream_answer_format(response: ImageResponse, request_id: str) -> dict[str, Any]:
    """A URL request's answer made by its upstream (xAI's, an OpenAI-compatible server's), as
    its row records it (the call's ``CallControl.finish``): ``url`` when its images are URLs,
    ``b64_json`` when the upstream answered base64 all the same. Its images are not stored:
    the URLs are the upstream's."""
    items = response.data
    as_urls = bool(items) and all(item.url and not item.b64_json for item in items)
    return {"response_format": "url" if as_urls else "b64_json"}


async def to_url_answer(
    store: ImageStore, body: bytes, request_id: str, base: str
) -> tuple[bytes, int]:
    """:func:`store_answer` in a worker thread: the answer and the bytes stored."""
    answer, stored, _ = await asyncio.to_thread(store_answer, store, body, request_id, base)
    return answer, stored


def store_answer(
    store: ImageStore, body: bytes, request_id: str, base: str
) -> tuple[bytes, int, str | None]:
    """The answer with each ``b64_json`` image stored and replaced by its URL, the bytes stored,
    and None; or, for an answer that cannot be stored, the answer unchanged (base64: the image
    was paid for, so it is never dropped), 0 and why (:data:`STORE_FAILED`, :data:`UNDECODABLE`;
    a store failure is logged). A failure is anything the store raises while writing the images
    or minting their URLs: until 2026-12-06 a URL the store could not presign escaped, and the
    call went out as base64 with no fallback header while its row said ``url``. Blocking: run
    it off the event loop."""
    answer = json.loads(body)
    items = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        return body, 0, None
    extension = _EXTENSIONS.get(str(answer.get("output_format") or "png"), "png")
    images: list[tuple[int, str, bytes]] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
            try:
                data = base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError):
                return body, 0, UNDECODABLE
            # the bytes say what the image is: an answer may name no output_format (an older
            # model's), or one format for images of several (Gemini's first image's)
            kind = _SNIFFED.get(sniff_content_type(data), extension)
            images.append((index, f"{request_id}-{index}.{kind}", data))
    written = time.time()  # each URL's lifetime counts from here, before its image's write
    try:
        for _, name, data in images:
            store.put(name, data)
        urls = [stored_url(store, name, base, written) for _, name, _ in images]
    except Exception:
        log.warning(
            "image store: could not store the images of %s; answering base64",
            request_id,
            exc_info=True,
        )
        return body, 0, STORE_FAILED
    for (index, _, _), url in zip(images, urls, strict=True):
        item = dict(items[index])
        del item["b64_json"]
        item["url"] = url
        items[index] = item
    return json.dumps(answer).encode(), sum(len(data) for _, _, data in images), None


async def serve_stored(
    store: ImageStore,
    path: str,
    query: bytes,
    send: Send,
    *,
    head: bool = False,
    gone: Callable[[], bool] | None = None,
) -> None:
    """``GET {STORED_PREFIX}{name}?expires=...&signature=...``: the image, or 403/404 (503
    ``image_store_unavailable`` when the store cannot be read). ``head``: its headers alone,
    from its size (the image is not read). ``gone``: whether the client has hung up (no piece
    is read after it has)."""
    name = unquote(path[len(STORED_PREFIX) :])
    params = parse_qs(query.decode("latin-1"))
    expires, signature = (_one(params, "expires"), _one(params, "signature"))
    signer = store.signer
    if signer is None or not valid_name(name):
        raise ProxyError(404, "no such image", code="not_found")
    if not signer.valid(name, expires, signature, time.time()):
        raise ProxyError(
            403,
            "this image URL is expired or its signature does not match",
            code="invalid_signature",
        )
    # A store that cannot be read (a bucket gone, a network fault) is a 503, never a 500.
    unreadable = "the image store could not be read"
    if head:
        size = await read_store("image", unreadable, store.size, name)
        if size is None:
            raise ProxyError(404, _GONE, code="not_found")
        await send(_start(name, size, int(expires)))
        await send({"type": "http.response.body", "body": b""})
        return
    opened = await read_store("image", unreadable, store.open, name)
    if opened is None:
        raise ProxyError(404, _GONE, code="not_found")
    size, pieces = opened
    try:
        await _send_image(name, size, pieces, int(expires), send, gone or _present)
    finally:
        # still being read in a thread (a cancel): closing it may fail, and must not replace
        # the exception on its way out
        with contextlib.suppress(Exception):
            pieces.close()


_GONE = "no such image (expired images are deleted)"


def _present() -> bool:
    return False


def _one(params: dict[str, list[str]], name: str) -> str:
    """A query parameter given once; "" (refused) when absent or given twice: which of two
    values counts would be up to whoever reads the URL (a cache, a CDN)."""
    values = params.get(name, [])
    return values[0] if len(values) == 1 else ""


def _start(name: str, size: int, expires: int) -> dict[str, Any]:
    """The start of an image's answer (a GET's and a HEAD's)."""
    max_age = max(0, expires - int(time.time()))
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", content_type(name).encode()),
            (b"content-length", str(size).encode()),
            (b"cache-control", f"private, max-age={max_age}, immutable".encode()),
            # every image: bytes the proxy could not tell (stored under the answer's
            # output_format) are never guessed by a browser to be a page
            (b"x-content-type-options", b"nosniff"),
            *(_SVG_HEADERS if name.endswith(".svg") else []),
        ],
    }


async def _send_image(
    name: str,
    size: int,
    pieces: Pieces,
    expires: int,
    send: Send,
    gone: Callable[[], bool],
) -> None:
    """The image's answer, read and sent a piece at a time (bounded memory however large it is
    and however slowly the client reads); a read failing part-way cuts the answer short (its
    ``content-length`` tells the client), as nothing else can be answered once it has begun.
    Once the client has gone (``gone()``, or ``send`` raising as an ASGI server may), no
    further piece is read."""
    await send(_start(name, size, expires))
    while not gone():
        try:
            piece = await asyncio.to_thread(next, pieces, None)
        except Exception as exc:
            log.warning("image store: reading %s failed part-way: %s", name, type(exc).__name__)
            return
        if piece is None:
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        except OSError:  # the ASGI server's "the client is gone" (the spec's IOError)
            break
    log.debug("image store: the client of %s left; no more of it is read", name)
