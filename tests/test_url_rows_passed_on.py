"""A URL request whose upstream makes the URLs itself records ``response_format`` as a URL
answer's row does.

The proxy answers a GPT image model's ``response_format=url`` with URLs of its own, and the
row's ``metadata`` says ``"response_format": "url"``. xAI takes ``response_format`` and answers
URLs itself, so the proxy passed the parameter on and recorded nothing: a query for the rows
answered as URLs (``metadata->>'response_format'``) missed every xAI one. The row now says how
the upstream's answer went out (``url``, or ``b64_json`` when an upstream answered base64 all
the same), and a request's own ``url_fallback`` is left out, as for a URL answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, UNPRICED_MODELS, make_png
from tests.proxy_support import ProxyProcess, ledger_row, write_config
from tracking.testing import FakeOpenAI
from tracking.testing.fake_xai import FakeXAI

XAI_KEY = "xai-test-key-0123456789"
PNG = make_png(64, 64)


@pytest.fixture(scope="module")
def xai() -> Iterator[FakeXAI]:
    with FakeXAI(api_keys=[XAI_KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(xai: FakeXAI, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory):
    folder: Path = tmp_path_factory.mktemp("url-rows")
    openai_params = {"api_key": API_KEY, "api_base": fake.url}
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": "grok",
                    "litellm_params": {
                        "model": "xai/grok-imagine-image",
                        "api_key": XAI_KEY,
                        "api_base": xai.url,
                    },
                },
                {"model_name": "gpt", "litellm_params": {"model": "gpt-image-2", **openai_params}},
                {  # a model of no known family: response_format is passed on as sent
                    "model_name": "compatible",
                    "litellm_params": {"model": f"openai/{UNPRICED_MODELS[0]}", **openai_params},
                },
            ],
            "litellm_settings": {"num_retries": 0},
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as process:
        yield process


def _edit(proxy: ProxyProcess, model: str, **fields: Any) -> tuple[httpx.Response, dict]:
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "a hat", **fields},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=60,
    )
    row = ledger_row(proxy, response.headers["x-tracking-request-id"])
    metadata = row["metadata"]
    return response, json.loads(metadata) if isinstance(metadata, str) else metadata or {}


def test_an_xai_url_answer_records_url_as_a_url_answer_of_the_proxy_does(proxy, xai):
    response, metadata = _edit(proxy, "grok", response_format="url")
    assert response.status_code == 200, response.text
    assert xai.requests[-1].body["response_format"] == "url"  # passed on: xAI makes the URLs
    (item,) = response.json()["data"]
    assert item["url"].startswith(f"http://{xai.host}:{xai.port}/")
    assert metadata["response_format"] == "url"
    answered, made_here = _edit(proxy, "gpt", response_format="url")  # the proxy's own
    assert answered.status_code == 200 and made_here["response_format"] == "url"


def test_a_requests_own_url_fallback_never_reaches_an_xai_url_row(proxy):
    response, metadata = _edit(
        proxy, "grok", response_format="url", metadata='{"url_fallback": "mine", "k": "v"}'
    )
    assert response.status_code == 200, response.text
    assert metadata == {"k": "v", "response_format": "url"}


def test_an_xai_base64_answer_records_no_response_format(proxy):
    """As a GPT image model's: only a URL request's row says how it was answered."""
    response, metadata = _edit(proxy, "grok")
    assert response.status_code == 200, response.text
    assert "b64_json" in response.json()["data"][0]
    assert "response_format" not in metadata


def test_a_failed_xai_url_request_records_what_was_asked(proxy):
    """As a URL answer's failed row: the request's ``url``, no answer went out."""
    response, metadata = _edit(proxy, "grok", response_format="url", size="5000x1000")
    assert response.status_code == 400, response.text
    assert metadata["response_format"] == "url"


def test_an_upstream_answering_base64_to_a_url_request_is_recorded_so(proxy, fake):
    """An OpenAI-compatible server that ignores ``response_format=url``: its images went out
    as base64, and the row says so rather than ``url``."""
    response, metadata = _edit(proxy, "compatible", response_format="url")
    assert response.status_code == 200, response.text
    assert fake.requests[-1].fields["response_format"] == "url"  # passed on as sent
    assert "b64_json" in response.json()["data"][0]
    assert metadata["response_format"] == "b64_json"
