"""A URL answer's images are reached through the request's ``Host`` (without
``external_base_url``): a Host that is no host and port (empty, a path, a query, a fragment, a
user name, a space, a port past 65535) is refused before the upstream is called. Until
2026-12-07 it went into every URL of the answer as sent (``http:///v1/...``,
``http://evil.test/x?#/v1/...``): the images were paid for and their URLs could not be opened,
or led to another host."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import make_png
from tests.proxy_support import ProxyProcess, write_config
from tests.test_url_answers import MASTER_KEY, _config
from tracking.config import parse_config
from tracking.proxy.app import create_app
from tracking.proxy.errors import ProxyError
from tracking.testing import FakeOpenAI

HOSTILE = [
    "",
    "evil.test/path?q=1#",
    "user@evil.test",
    "ex ample.test",
    "proxy.test:99999",
    "proxy.test:abc",
    'proxy.test"><script>',
]
GOOD = ["proxy.test", "proxy.test:4000", "127.0.0.1:4000", "[::1]:4000", "my_service:8080"]


@pytest.mark.parametrize("host", HOSTILE)
def test_a_host_that_is_no_host_and_port_makes_no_url(fake: FakeOpenAI, tmp_path, host):
    app = create_app(parse_config(_config(fake, tmp_path)))
    with pytest.raises(ProxyError) as caught:
        app._url_base({"host": host}, "http")
    assert caught.value.status == 400
    assert caught.value.code == "invalid_host"
    assert caught.value.param == "response_format"
    assert "external_base_url" in str(caught.value)


@pytest.mark.parametrize("host", GOOD)
def test_a_host_and_port_make_the_url(fake: FakeOpenAI, tmp_path, host):
    app = create_app(parse_config(_config(fake, tmp_path)))
    assert app._url_base({"host": host}, "http") == f"http://{host}"


def test_external_base_url_needs_no_host(fake: FakeOpenAI, tmp_path):
    store = {"external_base_url": "https://images.example.com"}
    app = create_app(parse_config(_config(fake, tmp_path, image_store=store)))
    assert app._url_base({"host": ""}, "http") == "https://images.example.com"


def _ask_urls(proxy: ProxyProcess, prompt: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "gpt-image-2", "prompt": prompt, "response_format": "url"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}", **headers},
        timeout=60,
    )


def test_a_hostile_host_is_refused_before_the_upstream_is_called(fake: FakeOpenAI, tmp_path):
    config = write_config(tmp_path / "config.yaml", _config(fake, tmp_path))
    prompt = f"a hat {uuid.uuid4()}"
    with ProxyProcess(config) as proxy:
        refused = _ask_urls(proxy, prompt, Host="evil.test/x?q=1#")
        answered = _ask_urls(proxy, "a hat")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_host"
    assert error["type"] == "invalid_request_error"
    assert not [r for r in fake.requests if r.fields.get("prompt") == prompt]  # never sent
    assert answered.status_code == 200, answered.text
    assert answered.json()["data"][0]["url"].startswith(f"{proxy.url}/v1/images/stored/")
