"""URL answers: the seed's ``response_format="url"`` examples through the proxy, signed URLs that
expire, the sweep, the quota, and two proxies sharing an S3-compatible store (moto on loopback)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest

from tests.conftest import API_KEY, S3_ENV, make_png
from tests.proxy_support import ProxyProcess, write_config
from tests.services import require_tool
from tracking.config import parse_config
from tracking.ids import new_request_id
from tracking.proxy.app import create_app
from tracking.proxy.errors import ProxyError
from tracking.proxy.image_store import (
    LocalImageStore,
    UrlSigner,
    parse_store_settings,
)
from tracking.testing import FakeOpenAI

MASTER_KEY = "sk-master-url-answers-0123456789"


def _config(fake: FakeOpenAI, folder: Path, **general: object) -> dict:
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": name, "api_key": API_KEY, "api_base": fake.url},
            }
            for name in ("gpt-image-1", "gpt-image-2")
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{folder / 'ledger.db'}",
            **general,
        },
    }


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("url-proxy")
    config = write_config(folder / "config.yaml", _config(fake, folder))
    with ProxyProcess(config) as process:
        yield process


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("url-images")
    paths = {}
    for name in ("original_image", "mask_image"):
        paths[name] = folder / f"{name}.png"
        paths[name].write_bytes(make_png(96, 96))
    return paths


def _upstream_images(fake: FakeOpenAI) -> list[bytes]:
    return [base64.b64decode(item["b64_json"]) for item in fake.state.responses[-1]["data"]]


def test_the_seed_curl_example_with_response_format_url_works_as_written(proxy, fake, images):
    require_tool("curl", "curl")
    command = [
        "curl", "-s", "-X", "POST", f"{proxy.url}/v1/images/edits",
        "-H", f"Authorization: Bearer {MASTER_KEY}",
        "-F", "model=gpt-image-1",
        "-F", f"image=@{images['original_image']}",
        "-F", f"mask=@{images['mask_image']}",
        "-F", "prompt=Add a beautiful sunset in the background",
        "-F", "n=1",
        "-F", "size=1024x1024",
        "-F", "response_format=url",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, check=True, timeout=30).stdout
    body = json.loads(out)
    assert "response_format" not in fake.requests[-1].fields  # the upstream refuses it
    (item,) = body["data"]
    assert set(item) == {"url"}
    assert body["usage"]["output_tokens"] > 0  # the rest of the answer is the upstream's
    fetched = httpx.get(item["url"], timeout=10)  # no key: as OpenAI's image URLs
    assert fetched.status_code == 200
    assert fetched.content == _upstream_images(fake)[0]
    assert fetched.headers["content-type"] == "image/png"
    assert "max-age=" in fetched.headers["cache-control"]
    expires = int(parse_qs(urlsplit(item["url"]).query)["expires"][0])
    assert 3500 < expires - time.time() <= 3600


def test_the_openai_client_mask_example_with_two_url_images(proxy, fake, images):
    with (
        openai.OpenAI(base_url=proxy.url, api_key=MASTER_KEY, max_retries=0) as client,
        open(images["original_image"], "rb") as image,
        open(images["mask_image"], "rb") as mask,
    ):
        raw = client.images.with_raw_response.edit(
            model="gpt-image-1",
            image=image,
            mask=mask,
            prompt="Replace the background with a beach scene",
            n=2,
            size="1024x1024",
            response_format="url",
        )
    response = raw.parse()
    assert [d.b64_json for d in response.data or []] == [None, None]
    urls = [d.url for d in response.data or []]
    assert len(set(urls)) == 2
    expected = _upstream_images(fake)
    assert [httpx.get(url or "", timeout=10).content for url in urls] == expected
    # The ledger row records how the answer was served; the cost is the same as for base64.
    row = ledger_row(proxy.config.parent / "ledger.db", raw.headers["x-tracking-request-id"])
    assert row["metadata"]["response_format"] == "url"
    assert row["cost_usd"] == Decimal(raw.headers["x-tracking-response-cost"])


def ledger_row(database: Path, request_id: str) -> Any:
    """The ledger row of one call, from the proxy's SQLite ledger."""
    from tracking.integrations.sql import create_ledger_engine, spend_logs

    engine = create_ledger_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            query = spend_logs.select().where(spend_logs.c.request_id == request_id)
            return connection.execute(query).mappings().one()
    finally:
        engine.dispose()


def _minted(proxy, model: str = "gpt-image-2") -> str:
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "a hat", "response_format": "url"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["data"][0]["url"]
    return url


def test_a_tampered_or_expired_url_is_refused_never_served(proxy):
    url = _minted(proxy)
    served = httpx.get(url, timeout=10)
    assert served.status_code == 200
    head = httpx.head(url, timeout=10)  # HEAD as GET, without the body
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(served.content))
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    name = parts.path.rsplit("/", 1)[-1]
    signature, expires = query["signature"][0], query["expires"][0]
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    forged = "0" * len(signature)
    later = int(expires) + 3600
    for bad in (
        f"{base}?expires={expires}&signature={forged}",  # another signature
        f"{base}?expires={later}&signature={signature}",  # a longer life
        f"{base}?signature={signature}",  # no expiry
        f"{base}?expires=%C2%B2&signature={signature}",  # "²": a digit int() refused (a 500)
        f"{base}?expires={expires}&signature=%C3%A9",  # non-ASCII: compare_digest raised (a 500)
    ):
        answer = httpx.get(bad, timeout=10)
        assert answer.status_code == 403, bad
        assert answer.json()["error"]["code"] == "invalid_signature"
    # Correctly signed with the store's own secret, but expired: still refused.
    secret = (proxy.config.parent / "images" / ".signing-secret").read_bytes()
    past = int(time.time()) - 1
    expired = f"{base}?expires={past}&signature={UrlSigner(secret).signature(name, past)}"
    assert httpx.get(expired, timeout=10).status_code == 403
    # A name the proxy never minted is not served, signature or not.
    other = base.rsplit("/", 1)[0] + "/..%2Fledger.db"
    assert httpx.get(f"{other}?expires={expires}&signature={signature}").status_code == 404


def test_the_sweep_deletes_expired_files_and_frees_the_quota(tmp_path):
    settings = parse_store_settings({"path": str(tmp_path), "url_ttl_seconds": 60}, None)
    store = LocalImageStore(settings)
    older, newer = f"{new_request_id()}-0.png", f"{new_request_id()}-1.webp"
    store.put(older, b"x" * 100)
    store.put(newer, b"y" * 50)
    old = time.time() - 120
    os.utime(tmp_path / older, (old, old))
    assert store.sweep(time.time()) == 1
    assert store.get(older) is None
    assert store.get(newer) == b"y" * 50
    assert store._used == 50
    assert (tmp_path / ".signing-secret").exists()  # the secret is not an image: never swept


def test_a_full_store_refuses_url_answers_before_any_upstream_call(fake, tmp_path):
    config = parse_config(
        _config(fake, tmp_path, image_store={"path": str(tmp_path / "img"), "max_bytes": 10})
    )
    app = create_app(config)
    assert app.image_store is not None
    app.image_store.put(f"{new_request_id()}-0.png", b"z" * 10)
    before = fake.hits
    with pytest.raises(ProxyError) as caught:
        app._url_answer({"response_format": "url", "prompt": "p"}, "gpt-image-2")
    assert caught.value.status == 507 and caught.value.code == "image_store_full"
    assert fake.hits == before
    # b64_json answers are unaffected by the quota.
    assert app._url_answer({"response_format": "b64_json"}, "gpt-image-2") is False


def test_an_s3_store_needs_a_shared_secret_unless_it_presigns():
    from tracking.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="signing_secret"):
        parse_store_settings({"type": "s3", "bucket": "images"}, None)
    assert parse_store_settings({"type": "s3", "bucket": "b", "presign": True}, None).presign


# -- S3-compatible storage shared by two instances ------------------------------------------------


def test_two_proxies_sharing_an_s3_store_serve_each_others_urls(
    fake, s3_server, tmp_path, monkeypatch
):
    import boto3

    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="proxy-images")
    store = {
        "type": "s3",
        "bucket": "proxy-images",
        "prefix": "edits/",
        "endpoint_url": s3_server,
        "signing_secret": "a-shared-secret-of-enough-length",
    }
    proxies = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config = write_config(folder / "config.yaml", _config(fake, folder, image_store=store))
        proxies.append(ProxyProcess(config, env=S3_ENV).start())
    try:
        a, b = proxies
        from_a, from_b = _minted(a), _minted(b)
        upstream = _upstream_images(fake)[0]
        for url, other in ((from_a, b), (from_b, a)):
            served_by_other = url.replace(urlsplit(url).netloc, f"127.0.0.1:{other.port}")
            answer = httpx.get(served_by_other, timeout=10)
            assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
        assert httpx.get(from_b, timeout=10).content == upstream
        keys = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(
            Bucket="proxy-images", Prefix="edits/"
        )
        assert len(keys["Contents"]) == 2
    finally:
        for process in proxies:
            process.stop()
