"""Stored images as a hostile or unlucky client meets them: the headers every image is served
with, URLs written another way than minted, and a sweep that must never delete an image whose
URL still works (a slow store, S3's whole-second times, a store's clock a little behind)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import S3_ENV, make_png
from tracking.errors import ConfigurationError
from tracking.ids import new_request_id
from tracking.proxy.errors import ProxyError
from tracking.proxy.image_store import (
    S3_ATTEMPTS,
    LocalImageStore,
    S3ImageStore,
    parse_store_settings,
)
from tracking.proxy.url_answers import serve_stored, to_url_answer

TTL = 60


def _local(folder: Path) -> LocalImageStore:
    return LocalImageStore(
        parse_store_settings({"path": str(folder), "url_ttl_seconds": TTL}, None)
    )


async def _urls(store: Any, *images: bytes, output_format: str = "png") -> list[str]:
    answer = {
        "created": 1,
        "output_format": output_format,
        "data": [{"b64_json": base64.b64encode(image).decode()} for image in images],
    }
    body, _ = await to_url_answer(
        store, json.dumps(answer).encode(), new_request_id(), "http://proxy.test"
    )
    return [item["url"] for item in json.loads(body)["data"]]


async def _get(store: Any, url: str) -> tuple[dict[str, str], bytes]:
    parts = urlsplit(url)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await serve_stored(store, parts.path, parts.query.encode(), send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    ("image", "output_format"),
    [
        (make_png(), "png"),
        # bytes that are no image the proxy knows: stored under the answer's output_format, so
        # served as image/png; without nosniff a browser may guess them to be a page
        (b"<html><script>alert(document.domain)</script></html>", "png"),
    ],
)
async def test_every_stored_image_is_served_with_nosniff(tmp_path, image, output_format):
    store = _local(tmp_path)
    (url,) = await _urls(store, image, output_format=output_format)
    headers, body = await _get(store, url)
    assert body == image
    assert headers["content-type"] == "image/png"
    assert headers["x-content-type-options"] == "nosniff"


async def test_an_expiry_or_signature_written_otherwise_than_minted_is_refused(tmp_path):
    store = _local(tmp_path)
    (url,) = await _urls(store, make_png())
    expires = parse_qs(urlsplit(url).query)["expires"][0]
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    for tampered in (
        *(url.replace(f"expires={expires}", f"expires={e}") for e in ("0" + expires, "+1")),
        # a second value: which one counts is up to whoever reads the URL (a cache, a CDN)
        f"{url}&expires=1",
        f"{url}&expires={int(expires) + 3600}",
        f"{url}&signature={'0' * len(signature)}",
    ):
        with pytest.raises(ProxyError) as caught:
            await _get(store, tampered)
        assert caught.value.status == 403, tampered
        assert caught.value.code == "invalid_signature"


async def test_a_sweep_never_deletes_an_image_whose_url_still_works(tmp_path):
    store = _local(tmp_path)
    urls = await _urls(store, make_png(), make_png(32, 32))
    expires = int(parse_qs(urlsplit(urls[0]).query)["expires"][0])
    # The writes finished a second before the instant the URLs' lifetime counts from (storing
    # several images, or one on a slow disk, takes time; the URLs are minted after them).
    written = expires - TTL - 1
    for path in tmp_path.iterdir():
        if not path.name.startswith("."):
            os.utime(path, (written, written))
    assert store.sweep(float(expires)) == 0  # the URLs work until then
    for url in urls:
        headers, body = await _get(store, url)
        assert body and headers["content-type"] == "image/png"
    assert store.sweep(float(expires) + 3600) == 2  # long expired: deleted


def test_an_s3_sweep_keeps_an_image_a_few_seconds_past_the_lifetime_by_the_stores_clock(
    s3_server, bucket
):
    settings = {
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": s3_server,
        "url_ttl_seconds": TTL,
        "signing_secret": "a-shared-secret-of-enough-length",
    }
    store = S3ImageStore(parse_store_settings(settings, None))
    name = f"{new_request_id()}-0.png"
    store.put(name, b"a" * 10)
    # S3 dates an object in whole seconds by its own clock, which may be behind the proxy's:
    # an image just past its lifetime by that date may still have a URL that works.
    assert store.sweep(time.time() + TTL + 2) == 0
    assert store.get(name) == b"a" * 10
    assert store.sweep(time.time() + TTL + 3600) == 1


async def _messages(store: Any, url: str) -> list[Any]:
    parts = urlsplit(url)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await serve_stored(store, parts.path, parts.query.encode(), send)
    return sent


#: An image of 3 MiB: a 4096x4096 PNG can be tens of MiB, and a URL needs no key to be fetched.
LARGE = os.urandom(3 * 1024 * 1024)


def _in_bounded_pieces(sent: list[Any]) -> None:
    start, *bodies = sent
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(LARGE)).encode()
    assert b"".join(m["body"] for m in bodies) == LARGE
    # never the whole image in one piece: each GET holds at most a piece of it at a time
    assert len(bodies) > 1 and max(len(m["body"]) for m in bodies) <= 1024 * 1024
    assert [m.get("more_body", False) for m in bodies] == [True] * (len(bodies) - 1) + [False]


async def test_a_large_local_image_is_served_in_bounded_pieces(tmp_path):
    store = _local(tmp_path)
    (url,) = await _urls(store, LARGE)
    _in_bounded_pieces(await _messages(store, url))


async def test_a_large_s3_image_is_served_in_bounded_pieces(s3_server, bucket):
    settings = {
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": s3_server,
        "signing_secret": "a-shared-secret-of-enough-length",
    }
    store = S3ImageStore(parse_store_settings(settings, None))
    (url,) = await _urls(store, LARGE)
    _in_bounded_pieces(await _messages(store, url))


@pytest.fixture
def black_hole() -> Iterator[tuple[str, list[socket.socket]]]:
    """An S3 endpoint in an outage: it takes connections on loopback and never answers. Yields
    its URL and the connections it took (each an attempt)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)
    taken: list[socket.socket] = []
    done = threading.Event()

    def take() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                taken.append(listener.accept()[0])

    taker = threading.Thread(target=take, name="black-hole")
    taker.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", taken
    finally:
        done.set()
        taker.join(10)
        for connection in taken:
            connection.close()
        listener.close()


@pytest.mark.timeout(90)  # boto3's defaults (60 s per read, 5 attempts) held it for 5 minutes
async def test_an_s3_outage_answers_the_paid_image_as_base64_soon(black_hole, monkeypatch):
    """Within S3_ATTEMPTS attempts: boto3's ``max_attempts`` counts retries, not attempts, and
    made three of the two meant (33 s instead of 22 with an endpoint that never answers)."""
    endpoint, attempts = black_hole
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    settings = {
        "type": "s3",
        "bucket": "images",
        "endpoint_url": endpoint,
        "signing_secret": "a-shared-secret-of-enough-length",
    }
    store = S3ImageStore(parse_store_settings(settings, None))
    image = make_png()
    answer = {"created": 1, "data": [{"b64_json": base64.b64encode(image).decode()}]}
    body, stored = await to_url_answer(
        store, json.dumps(answer).encode(), new_request_id(), "http://proxy.test"
    )
    assert stored == 0
    assert json.loads(body) == answer  # the image was paid for: never dropped
    assert len(attempts) == S3_ATTEMPTS == 2


@pytest.mark.parametrize("where", ["a-file/images", "a-file"])
def test_an_unusable_image_folder_is_a_configuration_error_not_a_traceback(tmp_path, where):
    (tmp_path / "a-file").write_bytes(b"not a folder")
    settings = parse_store_settings({"path": str(tmp_path / where)}, None)
    with pytest.raises(ConfigurationError) as caught:
        LocalImageStore(settings)
    assert str(tmp_path / where) in str(caught.value)
    assert "general_settings.image_store.path" in str(caught.value)


def test_a_call_whose_images_cannot_be_stored_is_billed_recorded_and_answered_base64(
    fake, s3_server, tmp_path, monkeypatch
):
    """The bucket is gone: the call was paid for, so its ledger row keeps its cost and the
    client gets its image as base64 (never a 5xx, never the image lost)."""
    from tests.proxy_support import ProxyProcess, write_config
    from tests.test_url_answers import _config

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    store = {
        "type": "s3",
        "bucket": f"gone-{new_request_id()[-12:]}",
        "endpoint_url": s3_server,
        "signing_secret": "a-shared-secret-of-enough-length",
    }
    config = write_config(tmp_path / "config.yaml", _config(fake, tmp_path, image_store=store))
    with ProxyProcess(config, env=S3_ENV) as proxy:
        response, row = _asked_for_urls(proxy)
    assert response.headers["x-tracking-url-fallback"] == "store_failed"
    (item,) = response.json()["data"]
    assert "url" not in item
    assert base64.b64decode(item["b64_json"]) == base64.b64decode(
        fake.state.responses[-1]["data"][0]["b64_json"]
    )
    cost = Decimal(response.headers["x-tracking-response-cost"])
    assert cost > 0
    assert row["cost_usd"] == cost
    assert row["metadata"]["response_format"] == "b64_json"


def test_a_forwarded_proto_other_than_http_or_https_never_makes_the_url(fake, tmp_path):
    from tests.proxy_support import ProxyProcess, write_config
    from tests.test_url_answers import MASTER_KEY, _config

    config = write_config(tmp_path / "config.yaml", _config(fake, tmp_path))
    urls = {}
    with ProxyProcess(config) as proxy:
        for proto in ("https", "javascript:alert(document.cookie)//", "ftp"):
            response = httpx.post(
                f"{proxy.url}/v1/images/edits",
                data={"model": "gpt-image-1", "prompt": "a hat", "response_format": "url"},
                files={"image": ("a.png", make_png(), "image/png")},
                headers={"Authorization": f"Bearer {MASTER_KEY}", "X-Forwarded-Proto": proto},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            urls[proto] = response.json()["data"][0]["url"]
    assert urls["https"].startswith("https://")  # a load balancer's own header is followed
    for proto in ("javascript:alert(document.cookie)//", "ftp"):
        assert urls[proto].startswith(f"{proxy.url}/v1/images/stored/"), urls[proto]


def test_a_url_answer_that_could_not_be_stored_says_so_in_a_header_and_its_ledger_row(
    fake, tmp_path
):
    """The store's folder became a file (a write error): the client is told why its answer is
    base64, and the ledger row records what was answered, not what was asked."""
    from tests.proxy_support import ProxyProcess, write_config
    from tests.test_url_answers import _config

    folder = tmp_path / "img"
    store = {"path": str(folder)}
    config = write_config(tmp_path / "config.yaml", _config(fake, tmp_path, image_store=store))
    with ProxyProcess(config) as proxy:
        (folder / ".signing-secret").unlink()
        folder.rmdir()
        folder.write_bytes(b"not a folder")  # every write now fails
        response, row = _asked_for_urls(proxy)
        assert "b64_json" in response.json()["data"][0]
        assert response.headers["x-tracking-url-fallback"] == "store_failed"
        assert row["metadata"]["response_format"] == "b64_json"
        assert row["metadata"]["url_fallback"] == "store_failed"
        assert row["cost_usd"] == Decimal(response.headers["x-tracking-response-cost"])
        # a URL answer that was stored says so, with no fallback header (nor the caller's own)
        folder.unlink()
        response, row = _asked_for_urls(proxy, metadata='{"url_fallback": "forged", "a": 1}')
        assert "url" in response.json()["data"][0]
        assert "x-tracking-url-fallback" not in response.headers
        assert row["metadata"]["response_format"] == "url"
        assert "url_fallback" not in row["metadata"]
        assert row["metadata"]["a"] == 1


def _asked_for_urls(proxy: Any, **fields: str) -> tuple[httpx.Response, Any]:
    """A URL answer asked of ``proxy`` (a 200) and its ledger row."""
    from tests.test_url_answers import MASTER_KEY, ledger_row

    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "gpt-image-1", "prompt": "a hat", "response_format": "url", **fields},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    row = ledger_row(proxy.config.parent / "ledger.db", response.headers["x-tracking-request-id"])
    return response, row


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        # os.environ/ references resolve to strings: "false" was read as true
        ({"type": "s3", "bucket": "b", "presign": "false"}, "presign"),
        ({"presign": "no"}, "presign"),
        ({"path": 7}, "path"),
        ({"type": "s3", "bucket": "b", "presign": True, "endpoint_url": 9000}, "endpoint_url"),
        ({"type": "s3", "bucket": "b", "presign": True, "region": ["eu"]}, "region"),
        ({"type": "s3", "bucket": "b", "presign": True, "prefix": {"a": 1}}, "prefix"),
        # URLs are made by adding the path to it: these made broken or foreign URLs
        ({"external_base_url": "https://images.example.com?x=1"}, "external_base_url"),
        ({"external_base_url": "https://images.example.com#top"}, "external_base_url"),
        ({"external_base_url": "httpimages.example.com"}, "external_base_url"),
        ({"external_base_url": "https://"}, "external_base_url"),
        ({"external_base_url": "https://images.example.com:port"}, "external_base_url"),
        ({"external_base_url": "https://images.example .com"}, "external_base_url"),
    ],
)
def test_a_mistyped_image_store_setting_is_a_configuration_error(tmp_path, settings, key):
    with pytest.raises(ConfigurationError, match=rf"general_settings\.image_store\.{key}:"):
        parse_store_settings({"path": str(tmp_path), **settings}, None)


def test_settings_written_as_documented_are_accepted(tmp_path):
    settings = parse_store_settings(
        {
            "path": str(tmp_path),
            "external_base_url": "https://images.example.com:8443/proxy/",
            "presign": False,
            "endpoint_url": None,
        },
        None,
    )
    assert settings.external_base_url == "https://images.example.com:8443/proxy"
    assert settings.presign is False


@pytest.fixture
def slow_s3(s3_server: str) -> Iterator[str]:
    """The S3 server behind a loopback relay that holds each of its answers back for 1.1 s (a
    store slow to acknowledge writes): storing two images takes over two seconds."""
    import threading

    target = urlsplit(s3_server)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                time.sleep(delay)
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    opened = [listener]

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                opened.append(client)
                server = socket.create_connection((target.hostname, target.port))
                opened.append(server)
                for source, sink, delay in ((client, server, 0.0), (server, client, 1.1)):
                    threading.Thread(target=pipe, args=(source, sink, delay), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for each in opened:
            each.close()


@pytest.mark.parametrize("presign", [False, True], ids=["signed", "presigned"])
async def test_a_url_minted_after_a_slow_write_never_outlives_its_image(slow_s3, bucket, presign):
    """A URL's lifetime counted from its minting, after every image of the answer was written:
    with a store slow enough (minutes, retrying) its first image was swept while its URL still
    worked. It now counts from when the write began, which the object's own date is not before."""
    settings = {
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": slow_s3,
        "url_ttl_seconds": TTL,
        "signing_secret": "a-shared-secret-of-enough-length",
        "presign": presign,
    }
    store = S3ImageStore(parse_store_settings(settings, None))
    urls = await _urls(store, make_png(), make_png(32, 32))
    listed = store.client.list_objects_v2(Bucket=bucket)["Contents"]
    store.client.close()
    written = {item["Key"]: item["LastModified"].timestamp() for item in listed}
    for url in urls:
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        query = parse_qs(urlsplit(url).query)
        # a presigned URL (signature version 4) expires its lifetime after its signing time,
        # the presigner's own reading of the clock: a second later, maybe
        expires = (
            int(_signed_at(query)) + int(query["X-Amz-Expires"][0]) - 1
            if presign
            else int(query["expires"][0])
        )
        assert expires <= written[name] + TTL, name  # the sweep's margin is left whole


def _signed_at(query: dict[str, list[str]]) -> float:
    """A signature version 4 URL's signing time (``X-Amz-Date``) as a Unix time."""
    return (
        datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    )


async def test_a_presigned_url_is_signed_with_signature_version_4(s3_server, bucket):
    """botocore presigns with signature version 2 unless told otherwise, which S3 refuses in
    most regions and for every bucket made since 2020-06-24: until 2026-12-07 every presigned URL
    was one (``AWSAccessKeyId``, ``Signature``, ``Expires``)."""
    settings = {
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": s3_server,
        "region": "eu-west-1",
        "presign": True,
        "url_ttl_seconds": TTL,
    }
    store = S3ImageStore(parse_store_settings(settings, None))
    (url,) = await _urls(store, make_png())
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "/eu-west-1/s3/aws4_request" in query["X-Amz-Credential"][0]
    assert "AWSAccessKeyId" not in query and "Signature" not in query
    assert 1 <= int(query["X-Amz-Expires"][0]) <= TTL
    fetched = httpx.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == make_png()


def test_a_chain_of_load_balancers_forwarded_proto_makes_https_urls(fake, tmp_path):
    """``X-Forwarded-Proto: https, http`` (each proxy of a chain adds its own): the first is
    the scheme the client used; the whole value was taken as unknown and the URL made http."""
    from tests.test_url_answers import _config
    from tracking.config import parse_config
    from tracking.proxy.app import create_app

    app = create_app(parse_config(_config(fake, tmp_path)))
    for proto, expected in [
        ("https, http", "https"),
        ("HTTPS,http", "https"),
        ("ftp, https", "http"),
    ]:
        headers = {"x-forwarded-proto": proto, "host": "images.example.com"}
        assert app._url_base(headers, "http") == f"{expected}://images.example.com"


async def test_a_presigned_svg_is_never_opened_as_a_page_on_the_buckets_origin(s3_server, bucket):
    """A presigned URL is the bucket's own: an SVG (a 2.6 model's, which a prompt may fill with
    script) was served inline there, where the proxy's CSP sandbox does not reach."""
    settings = {"type": "s3", "bucket": bucket, "endpoint_url": s3_server, "presign": True}
    store = S3ImageStore(parse_store_settings(settings, None))
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    png_url, svg_url = await _urls(store, make_png(), svg, output_format="svg")
    fetched = httpx.get(svg_url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == svg
    assert fetched.headers["content-disposition"] == "attachment"
    assert "content-disposition" not in httpx.get(png_url, timeout=10).headers  # shown as is
