"""A client that stops reading a stream cannot hold the call: the proxy closes it.

A client that keeps its connection open but reads nothing made the proxy's write of the next event
wait for ever: the call never ended, so its upstream connection, the key's parallel slot and the
budget reservation stayed held and its ledger row was never written, until the client hung up.
Now an event the client does not take within ``request_read_timeout`` ends the stream (its row
``stream_closed``, estimated, or a success if the completed event was in hand) and the
connection is closed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tracking.testing.app_thread import AppThread

#: Far more than the socket buffers between the proxy and the client hold (random: incompressible).
BIG = base64.b64encode(make_png(8, 8) + os.urandom(12_000_000)).decode()
USAGE = {"input_tokens": 50, "output_tokens": 272, "total_tokens": 322}


async def _answer(request: web.Request) -> web.StreamResponse:
    await request.read()
    answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await answer.prepare(request)
    # the first event is written whole into the connection's buffer; the second waits for
    # the client to take it, and it never does
    for index, kind in enumerate(("partial_image", "partial_image", "completed")):
        event = {"type": f"image_edit.{kind}", "b64_json": BIG, "partial_image_index": index}
        if kind == "completed":
            event["usage"] = USAGE
        await answer.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    await answer.write_eof()
    return answer


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("stalled-client")
    app = web.Application()
    app.router.add_post("/v1/images/edits", _answer)
    upstream = AppThread(app, name="big-events", shutdown_timeout=0.1)
    deployment = {
        "model": "gpt-image-2",
        "api_key": API_KEY,
        "api_base": f"http://127.0.0.1:{upstream.start()}/v1",
        "max_retries": 0,
    }
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [{"model_name": "gpt-image-2", "litellm_params": deployment}],
            "general_settings": {
                "master_key": MASTER_KEY,
                "database_url": f"sqlite:///{folder / 'ledger.db'}",
                "request_read_timeout": 1,
            },
        },
    )
    try:
        with ProxyProcess(config) as process:
            yield process
    finally:
        upstream.stop()


def _rows(proxy: ProxyProcess) -> list[Any]:
    path = Path(proxy.config.parent / "ledger.db")
    if not path.exists():
        return []
    with sqlite3.connect(path) as connection:
        try:
            query = "select status, error_type, cost_source from spend_logs"
            return connection.execute(query).fetchall()
        except sqlite3.OperationalError:  # the table is made with the first row
            return []


def test_a_client_that_stops_reading_has_its_stream_closed_and_its_row_written(proxy):
    request = httpx.Request(
        "POST",
        f"{proxy.url}/v1/images/edits",
        data={"model": "gpt-image-2", "prompt": "a hat", "stream": "true", "partial_images": "2"},
        files={"image": ("photo.png", make_png(16, 16), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Host": "proxy"},
    )
    body = request.read()
    head = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read past the start
    host, port = proxy.url.removeprefix("http://").split(":")
    client.connect((host, int(port)))
    try:
        client.sendall(f"POST /v1/images/edits HTTP/1.1\r\n{head}\r\n".encode() + body)
        assert client.recv(12) == b"HTTP/1.1 200"
        deadline = time.monotonic() + 60
        while not _rows(proxy) and time.monotonic() < deadline:
            time.sleep(0.2)
        # written while the client still holds its connection, reading nothing
        assert _rows(proxy) == [("failure", "stream_closed", "estimate")]
    finally:
        client.close()
