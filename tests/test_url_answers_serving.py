"""Serving a stored image without reading more of it than the client takes: a HEAD answers from
the image's size alone (on S3, a HeadObject: nothing downloaded), and a GET whose client has
hung up reads no further piece. The proxy's ASGI app is driven in-process, as an ASGI server
would drive it (uvicorn's disconnect flag, a send that raises, a disconnect message)."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import make_png
from tests.test_url_answers import _config
from tracking.config import parse_config
from tracking.ids import new_request_id
from tracking.proxy.app import ProxyApp, create_app
from tracking.proxy.image_store import CHUNK_BYTES, stored_url
from tracking.testing import FakeOpenAI

#: An image of many pieces: a GET that went on reading would send them all.
LARGE = os.urandom(12 * CHUNK_BYTES)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _app(fake: FakeOpenAI, folder: Path, **store: Any) -> ProxyApp:
    return create_app(parse_config(_config(fake, folder, image_store=store)))


def _stored(app: ProxyApp, image: bytes) -> str:
    """The path and query of a minted URL for ``image``, put in the app's store."""
    assert app.image_store is not None
    name = f"{new_request_id()}-0.png"
    app.image_store.put(name, image)
    parts = urlsplit(stored_url(app.image_store, name, "http://proxy.test", time.time()))
    return f"{parts.path}?{parts.query}"


class Cycle:
    """Uvicorn's request cycle as the app sees it: ``receive`` is its bound method, and its
    ``disconnected`` flag turns true when the connection is lost (its ``send`` then drops
    what it is given without raising)."""

    def __init__(self) -> None:
        self.disconnected = False
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.disconnected = True  # the client left after the first piece


async def _request(app: ProxyApp, method: str, url: str, receive: Any, send: Send) -> None:
    path, _, query = url.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [],
        "scheme": "http",
    }
    await app(scope, receive, send)


def _pieces(sent: list[dict[str, Any]]) -> list[bytes]:
    return [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]


async def test_a_head_answers_from_the_size_and_never_downloads_the_image(
    fake, tmp_path, s3_server, bucket
):
    app = _app(
        fake,
        tmp_path,
        type="s3",
        bucket=bucket,
        endpoint_url=s3_server,
        signing_secret="a-shared-secret-of-enough-length",
    )
    assert app.image_store is not None
    url = _stored(app, LARGE)
    operations: list[str] = []
    app.image_store.client.meta.events.register(  # type: ignore[attr-defined]
        "before-call.s3", lambda model, **_: operations.append(model.name)
    )
    cycle = Cycle()
    await _request(app, "HEAD", url, cycle.receive, cycle.send)
    start = cycle.sent[0]
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == str(len(LARGE)).encode()
    assert _pieces(cycle.sent) == []
    assert operations == ["HeadObject"]  # not GetObject: the image was never downloaded


async def test_a_head_of_a_swept_image_is_a_404_as_a_get(fake, tmp_path):
    app = _app(fake, tmp_path, path=str(tmp_path / "img"))
    url = _stored(app, make_png())
    for path in (tmp_path / "img").glob("*.png"):
        path.unlink()
    cycle = Cycle()
    await _request(app, "HEAD", url, cycle.receive, cycle.send)
    assert cycle.sent[0]["status"] == 404


@pytest.mark.parametrize("store", ["local", "s3"])
async def test_a_get_whose_client_left_reads_no_further_piece(fake, tmp_path, store, request):
    if store == "s3":
        settings: dict[str, Any] = {
            "type": "s3",
            "bucket": request.getfixturevalue("bucket"),
            "endpoint_url": request.getfixturevalue("s3_server"),
            "signing_secret": "a-shared-secret-of-enough-length",
        }
    else:
        settings = {"path": str(tmp_path / "img")}
    app = _app(fake, tmp_path, **settings)
    url = _stored(app, LARGE)
    cycle = Cycle()  # uvicorn: the flag is set after the first piece, and send never raises
    await _request(app, "GET", url, cycle.receive, cycle.send)
    assert cycle.sent[0]["status"] == 200
    assert _pieces(cycle.sent) == [LARGE[:CHUNK_BYTES]]


async def test_a_get_whose_send_raises_stops_quietly(fake, tmp_path):
    """An ASGI server whose ``send`` raises once the client is gone (the spec's IOError): no
    further piece is read, and no error answer is tried on the closed connection."""
    app = _app(fake, tmp_path, path=str(tmp_path / "img"))
    url = _stored(app, LARGE)
    sent: list[dict[str, Any]] = []
    cycle = Cycle()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and _pieces(sent):
            raise OSError("the client is gone")
        sent.append(message)

    await _request(app, "GET", url, cycle.receive, send)
    assert sent[0]["status"] == 200
    assert _pieces(sent) == [LARGE[:CHUNK_BYTES]]
    assert len(sent) == 2  # nothing after the first piece, not an error answer either


async def test_a_get_whose_client_sent_a_disconnect_message_reads_nothing(fake, tmp_path):
    """Another ASGI server: the request's body, then ``http.disconnect`` (the client left
    before its answer began)."""
    app = _app(fake, tmp_path, path=str(tmp_path / "img"))
    url = _stored(app, LARGE)
    messages = iter(
        [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await _request(app, "GET", url, receive, send)
    assert _pieces(sent) == []
