"""What the proxy answers a compressed body, a body over its size limit, and an Azure client.

* A body sent with ``Content-Encoding: gzip`` (or any coding but ``identity``) was read as it
  came and refused as "not valid JSON" or a broken form: now 415
  ``unsupported_content_encoding``, naming the coding, before a byte of it is read.
* The 413 said "64 MB" of a limit set in MiB (``max_request_size_mb``): it now says MiB.
* An ``AzureOpenAI`` client pointed at the proxy posts to
  ``/openai/deployments/{deployment}/images/edits`` (and ``/images/generations``) with an
  ``api-key`` header and an ``api-version`` query: LiteLLM's proxy serves these routes (its
  image endpoints, "azure compatible endpoint"), the path's deployment as the model; so does
  this one now, where it answered 404.

A ``tracking serve`` subprocess (SQLite ledger beside its config) in front of a fake OpenAI; the
official ``openai`` package's ``AzureOpenAI`` client, and raw httpx posts.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import make_png
from tests.proxy_support import (
    MASTER_KEY,
    ProxyProcess,
    ledger_row,
    one_deployment_config,
    write_config,
)
from tracking.testing import FakeOpenAI

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
API_VERSION = "2025-04-01-preview"


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("encoding-azure")
    general = {"master_key": MASTER_KEY, "max_request_size_mb": 1}
    general["database_url"] = f"sqlite:///{folder / 'ledger.db'}"
    document = one_deployment_config(fake.url, model_name="gpt-image-2", general_settings=general)
    same = document["model_list"][0]["litellm_params"]  # a second name for the same upstream
    document["model_list"].append({"model_name": "my-images", "litellm_params": same})
    with ProxyProcess(write_config(folder / "config.yaml", document)) as process:
        yield process


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def _generation_body() -> bytes:
    return json.dumps({"model": "gpt-image-2", "prompt": "a red hat", "quality": "low"}).encode()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "identity, gzip"])
def test_an_encoded_body_is_refused_naming_its_coding(
    proxy: ProxyProcess, fake: FakeOpenAI, coding: str
) -> None:
    hits = fake.hits
    response = httpx.post(
        f"{proxy.url}/v1/images/generations",
        content=gzip.compress(_generation_body()),
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": coding},
        timeout=30,
    )
    error = _error(response, 415, "unsupported_content_encoding")
    assert error["param"] == "content-encoding"
    named = coding.split(", ")[-1]
    assert f"Content-Encoding '{named}' is not supported" in error["message"]
    assert fake.hits == hits  # nothing was sent on


def test_an_encoded_edit_form_is_refused_and_an_identity_one_served(proxy: ProxyProcess) -> None:
    form = httpx.Request(
        "POST",
        "http://x/",
        data={"model": "gpt-image-2", "prompt": "a red hat", "quality": "low"},
        files={"image": ("a.png", make_png(), "image/png")},
    )
    body = form.read()
    headers = {**AUTH, "Content-Type": form.headers["content-type"]}
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        content=gzip.compress(body),
        headers={**headers, "Content-Encoding": "gzip"},
        timeout=30,
    )
    _error(response, 415, "unsupported_content_encoding")
    served = httpx.post(  # identity: not encoded, served as any body
        f"{proxy.url}/v1/images/edits",
        content=body,
        headers={**headers, "Content-Encoding": "identity"},
        timeout=30,
    )
    assert served.status_code == 200, served.text


def test_the_413_names_the_limit_in_mib(proxy: ProxyProcess) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/images/generations",
        content=b" " * (1024 * 1024 + 1),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    error = _error(response, 413, "request_too_large")
    assert "the limit is 1 MiB (general_settings.max_request_size_mb)" in error["message"]


def _azure(proxy: ProxyProcess, **options: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=proxy.url,
        api_key=MASTER_KEY,  # sent as the api-key header
        api_version=API_VERSION,
        max_retries=0,
        **options,
    )


def test_an_azure_client_edits_and_generates_through_the_proxy(proxy: ProxyProcess) -> None:
    with _azure(proxy) as client:
        edit = client.images.with_raw_response.edit(
            model="gpt-image-2", image=("a.png", make_png(), "image/png"), prompt="a red hat"
        )
        generation = client.images.with_raw_response.generate(
            model="gpt-image-2", prompt="a red hat", quality="low"
        )
    assert edit.parse().data and generation.parse().data
    for answer, call_type in ((edit, "aimage_edit"), (generation, "aimage_generation")):
        row = ledger_row(proxy, answer.headers["x-request-id"])
        assert (row["model"], row["call_type"], row["status"]) == (
            "gpt-image-2",
            call_type,
            "success",
        )
        assert Decimal(str(row["cost_usd"])) > 0
    # the fake takes only the deployment's key: the caller's api-key header was not sent on


def test_the_path_deployment_is_the_model(proxy: ProxyProcess) -> None:
    # the client's deployment names the model, whatever the body's ``model`` says (LiteLLM's way)
    with _azure(proxy, azure_deployment="my-images") as client:
        answer = client.images.with_raw_response.generate(
            model="gpt-image-2", prompt="a red hat", quality="low"
        )
    assert ledger_row(proxy, answer.headers["x-request-id"])["model"] == "my-images"


def test_an_unknown_deployment_is_a_404_naming_it(proxy: ProxyProcess) -> None:
    response = httpx.post(
        f"{proxy.url}/openai/deployments/nope/images/generations?api-version={API_VERSION}",
        content=_generation_body(),
        headers={"api-key": MASTER_KEY, "Content-Type": "application/json"},
        timeout=30,
    )
    error = _error(response, 404, "model_not_found")
    assert "'nope'" in error["message"]
    response = httpx.post(
        f"{proxy.url}/openai/deployments/gpt-image-2/images/variations",
        content=_generation_body(),
        headers={"api-key": MASTER_KEY, "Content-Type": "application/json"},
        timeout=30,
    )
    _error(response, 404, "unknown_url")


def test_the_azure_routes_are_described(proxy: ProxyProcess) -> None:
    paths = httpx.get(f"{proxy.url}/openapi.json", timeout=30).json()["paths"]
    for operation in ("edits", "generations"):
        described = paths[f"/openai/deployments/{{deployment}}/images/{operation}"]["post"]
        assert [p["name"] for p in described["parameters"]] == ["deployment", "api-version"]
