"""Limits that keep a hostile client from holding the proxy: a body trickled in slowly
(slowloris) is cut off with a 408 once ``general_settings.request_read_timeout`` runs out, and
headers trickled in slowly get their connection closed, while other clients keep being served;
a declared or streamed oversized body is a 413."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import make_png
from .proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config

READ_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def proxy(fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    config = write_config(
        tmp_path_factory.mktemp("limits") / "config.yaml",
        one_deployment_config(
            fake.url,
            general_settings={
                "master_key": MASTER_KEY,
                "request_read_timeout": READ_TIMEOUT,
                "max_request_size_mb": 1,
            },
        ),
    )
    with ProxyProcess(config) as running:
        yield running


def _slow_client(
    port: int,
    seconds: float,
    path: bytes = b"/v1/images/edits",
    head: bytes = b"Content-Type: multipart/form-data; boundary=b\r\n"
    b"Content-Length: 100000\r\n\r\n--b\r\n",
) -> tuple[float, bytes]:
    """Declares a body (a 100 kB multipart one by default), then sends one byte every 0.2 s.
    Returns how long the proxy let it go on and what it answered."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.2)
        sock.sendall(
            b"POST " + path + b" HTTP/1.1\r\nHost: proxy\r\n"
            b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\n" + head
        )
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < seconds:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b"x")
                except OSError:
                    break  # the proxy closed the connection
                continue
            if not chunk:
                break
            answer += chunk
        return time.monotonic() - started, answer


def _slow_headers(port: int, seconds: float, *, after_a_request: bool = False) -> float:
    """Sends a header line one byte every 0.2 s (optionally after a complete request on the
    same kept-alive connection); returns how long the proxy kept the connection open."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if after_a_request:
            sock.settimeout(30)  # the answer's wait is not what is measured (loaded: > 0.2 s)
            sock.sendall(b"GET /health/liveliness HTTP/1.1\r\nHost: proxy\r\n\r\n")
            assert b"200 OK" in sock.recv(65536)
        sock.settimeout(0.2)
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: proxy\r\nX-Slow: ")
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                if sock.recv(65536) == b"":
                    break  # closed by the proxy
            except TimeoutError:
                try:
                    sock.sendall(b"a")
                except OSError:
                    break
            except OSError:
                break
        return time.monotonic() - started


def test_slowly_trickled_headers_get_the_connection_closed(proxy) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        slow = [
            pool.submit(_slow_headers, proxy.port, 15.0, after_a_request=i % 2 == 1)
            for i in range(6)
        ]
        time.sleep(0.3)
        assert _good_edit(proxy.url).status_code == 200
        held = [s.result() for s in slow]
    assert max(held) < READ_TIMEOUT + 5, f"slow header senders held {held}"


def _good_edit(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/images/edits",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        data={"model": "gpt-image-1", "prompt": "a hat"},
        files={"image": ("a.png", make_png(), "image/png")},
        timeout=30,
    )


def test_a_slow_body_is_cut_off_with_a_408_and_others_are_served(proxy) -> None:
    with ThreadPoolExecutor(max_workers=12) as pool:
        slow = [pool.submit(_slow_client, proxy.port, 15.0) for _ in range(8)]
        time.sleep(0.3)
        # While eight slow clients trickle, ordinary calls go through at once.
        good = [pool.submit(_good_edit, proxy.url) for _ in range(4)]
        assert all(g.result().status_code == 200 for g in good)
        results = [s.result() for s in slow]
    for held, answer in results:
        assert held < READ_TIMEOUT + 5, f"a slow client held its connection {held:.1f} s"
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"code": "request_timeout"' in body


@pytest.mark.parametrize("path", [b"/key/generate", b"/customer/new", b"/key/update"])
def test_a_slow_management_body_is_cut_off_with_a_408_too(proxy, path) -> None:
    # The management endpoints read their JSON bodies without the deadline: a body that never
    # finished held the connection for as long as the client liked.
    held, answer = _slow_client(
        proxy.port,
        15.0,
        path,
        b'Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"a',
    )
    assert held < READ_TIMEOUT + 5, f"a slow client held its connection {held:.1f} s"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code": "request_timeout"' in body


def test_a_body_over_the_limit_is_a_413_whether_declared_or_streamed(proxy) -> None:
    headers = {
        "authorization": f"Bearer {MASTER_KEY}",
        "content-type": "multipart/form-data; boundary=b",
    }
    big = b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n' + b"x" * 2**21
    declared = httpx.post(f"{proxy.url}/v1/images/edits", content=big, headers=headers)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield big

    streamed = httpx.post(f"{proxy.url}/v1/images/edits", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "request_too_large"


MALFORMED_REQUESTS = [
    b"POST /v1/images/edits HTTP/1.1\r\nHost: p\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/images/edits HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST /v1/images/edits HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n",
    b"FROB /v1/models HTTP/1.1\r\nHost: p\r\n\r\n",
    b"GET /v1/models?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: p\r\n\r\n",
]


def _raw_answer(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # the proxy closes the connection after a 400
            answer += chunk
        return answer


@pytest.mark.parametrize("request_bytes", MALFORMED_REQUESTS, ids=lambda r: r[:40].decode())
def test_malformed_http_framing_gets_an_openai_shaped_400(proxy, request_bytes) -> None:
    answer = _raw_answer(proxy.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request", answer[:300]
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    assert headers["content-type"] == "application/json"
    assert headers["x-should-retry"] == "false" and headers["x-request-id"]
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http_request"
    assert httpx.get(f"{proxy.url}/health/liveliness").status_code == 200  # still serving
