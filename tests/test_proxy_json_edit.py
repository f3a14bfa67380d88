"""OpenAI's JSON edit body (``Content-Type: application/json``) through the proxy.

OpenAI's images API takes an edit as JSON too: ``images``, a list of 1 to 16 ``{"image_url":
...}`` (an https URL or a base64 data: URL) or ``{"file_id": ...}``, an optional ``mask`` the
same way, ``prompt`` and the form's other fields as JSON values (API reference,
EditImageBodyJsonParam / ImageRefParam; docs/proxy.md, "JSON edits"). The proxy refused every
such body with 400 ``invalid_content_type``. Now a data: URL is decoded into the same call a
multipart upload makes (any provider: a Gemini deployment here), a URL or file id is passed on
unchanged to a deployment that speaks OpenAI's images API and refused by name for one that
needs the bytes, and every malformed body is a 400 naming what is wrong.

A ``tracking serve`` subprocess (SQLite ledger beside its config) in front of a fake OpenAI and a
fake Gemini upstream of this module's own; raw httpx posts, as curl sends them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.gemini_support import GEMINI_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess, ledger_row, write_config
from tracking.testing import FakeOpenAI
from tracking.testing.fake_gemini import FakeGemini

PNG = make_png(32, 32)
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
GEMINI = "gemini/gemini-3.1-flash-image"
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def _deployment(name: str, model: str, api_base: str, key: str = API_KEY) -> dict[str, Any]:
    params = {"model": model, "api_key": key, "api_base": api_base, "max_retries": 0}
    return {"model_name": name, "litellm_params": params}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeGemini]]:
    with FakeOpenAI(api_keys=[API_KEY]) as openai_fake, FakeGemini(api_keys=[GEMINI_KEY]) as gem:
        yield openai_fake, gem


@pytest.fixture(scope="module")
def proxy(
    upstreams: tuple[FakeOpenAI, FakeGemini], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    own, gemini = upstreams
    folder: Path = tmp_path_factory.mktemp("json-edit")
    document = {
        "model_list": [
            _deployment("gpt-image-2", "gpt-image-2", own.url),
            _deployment("compatible", "openai_compatible/gpt-image-2", own.url),
            _deployment("nano", GEMINI, gemini.url, GEMINI_KEY),
            # one group, two providers: a reference could reach the one needing bytes
            _deployment("mixed", "gpt-image-2", own.url),
            _deployment("mixed", GEMINI, gemini.url, GEMINI_KEY),
        ],
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"success_callback": ["sql"], "failure_callback": ["sql"]},
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{folder / 'ledger.db'}",
            "max_request_size_mb": 1,
        },
    }
    with ProxyProcess(write_config(folder / "config.yaml", document)) as process:
        yield process


def _post(proxy: ProxyProcess, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        content=content,
        headers={**AUTH, "content-type": "application/json", **headers},
        timeout=60,
    )


def _requests_counted(proxy: ProxyProcess, model: str) -> float:
    """``image_edit_requests_total`` of ``model``'s successful calls, from ``/metrics``."""
    text = httpx.get(f"{proxy.url}/metrics", headers=AUTH, timeout=30).text
    total = 0.0
    for line in text.splitlines():
        counted = line.startswith("image_edit_requests_total{") and 'status="success"' in line
        if counted and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _row_matches_answer(proxy: ProxyProcess, answer: httpx.Response) -> dict[str, Any]:
    row = ledger_row(proxy, answer.headers["x-tracking-request-id"])
    assert row["status"] == "success"
    assert Decimal(answer.headers["x-tracking-response-cost"]) == row["cost_usd"]
    return row


def test_image_urls_and_file_ids_go_upstream_unchanged_as_json_and_are_tracked(proxy, upstreams):
    own, _ = upstreams
    counted = _requests_counted(proxy, "gpt-image-2")
    body = {
        "model": "gpt-image-2",
        "prompt": "a hat on the cat",
        "images": [{"image_url": "https://example.com/cat.png"}, {"file_id": "file-abc123"}],
        "quality": "low",
        "size": "1024x1024",
        "user": "alice",
    }
    # parameters of the media type (charset) are read past
    answer = _post(proxy, body, **{"content-type": "application/json; charset=utf-8"})
    assert answer.status_code == 200, answer.text
    sent = own.requests[-1]
    assert sent.json_body and sent.fields["quality"] == "low" and sent.fields["user"] == "alice"
    assert sent.references == [
        ("image[]", "image_url", "https://example.com/cat.png"),
        ("image[]", "file_id", "file-abc123"),
    ]
    row = _row_matches_answer(proxy, answer)
    assert row["end_user"] == "alice" and row["model"] == "gpt-image-2"
    assert row["cost_usd"] > 0 and row["cost_source"] == "usage"
    assert _requests_counted(proxy, "gpt-image-2") == counted + 1

    # the same edit as a multipart upload of two images costs the same: the upstream's usage
    form = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers=AUTH,
        data={k: v for k, v in body.items() if k != "images"},
        files=[("image[]", ("a.png", PNG, "image/png")), ("image[]", ("b.png", PNG, "image/png"))],
        timeout=60,
    )
    assert form.status_code == 200, form.text
    assert _row_matches_answer(proxy, form)["cost_usd"] == row["cost_usd"]


def test_an_openai_compatible_deployment_gets_the_references_too(proxy, upstreams):
    own, _ = upstreams
    mask = {"file_id": "file-mask"}
    body = {"model": "compatible", "prompt": "x", "images": [{"file_id": "file-1"}], "mask": mask}
    answer = _post(proxy, body)
    assert answer.status_code == 200, answer.text
    assert own.requests[-1].references == [
        ("image", "file_id", "file-1"),
        ("mask", "file_id", "file-mask"),
    ]


def test_a_data_url_is_decoded_into_the_same_upload_a_form_sends(proxy, upstreams):
    own, _ = upstreams
    answer = _post(
        proxy, {"model": "gpt-image-2", "prompt": "x", "images": [{"image_url": DATA_URL}]}
    )
    assert answer.status_code == 200, answer.text
    sent = own.requests[-1]
    assert not sent.json_body and sent.files == [("image", "image.png", "image/png", len(PNG))]
    _row_matches_answer(proxy, answer)


def test_a_data_url_edit_on_a_gemini_deployment_works_and_is_priced(proxy, upstreams):
    _, gemini = upstreams
    answer = _post(
        proxy,
        {"model": "nano", "prompt": "a hat", "images": [{"image_url": DATA_URL}], "user": "bo"},
    )
    assert answer.status_code == 200, answer.text
    assert base64.b64encode(PNG).decode() in json.dumps(gemini.requests[-1].body)
    row = _row_matches_answer(proxy, answer)
    assert row["cost_usd"] > 0 and row["end_user"] == "bo"


@pytest.mark.parametrize("model", ["nano", "mixed"])
@pytest.mark.parametrize(
    "reference", [{"image_url": "https://example.com/cat.png"}, {"file_id": "file-abc"}]
)
def test_a_reference_for_a_deployment_that_needs_the_bytes_is_refused_by_name(
    proxy, upstreams, model, reference
):
    own, gemini = upstreams
    before = (own.hits, gemini.hits)
    answer = _post(proxy, {"model": model, "prompt": "x", "images": [reference]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "image_reference_unsupported" and error["param"] == "images"
    assert GEMINI in error["message"] and "data: URL" in error["message"]
    assert (own.hits, gemini.hits) == before
    assert answer.headers["x-tracking-cost-source"] == "not-billed"


def test_the_sdk_refuses_a_reference_for_a_provider_that_needs_the_bytes(upstreams):
    from tracking.images import ImageReference

    _, gemini = upstreams
    before = gemini.hits
    with pytest.raises(tracking.UnsupportedParamsError) as caught:
        tracking.image_edit(
            image=[ImageReference.of(image_url="https://example.com/a.png")], prompt="x",
            model=GEMINI, api_key=GEMINI_KEY, api_base=gemini.url,
        )  # fmt: skip
    assert caught.value.param == "image" and "data: URL" in caught.value.message
    assert gemini.hits == before


_MANY = [{"file_id": f"file-{i}"} for i in range(17)]
_BASE = {"model": "gpt-image-2", "prompt": "x", "images": [{"image_url": DATA_URL}]}


def _with(**fields: Any) -> dict[str, Any]:
    """The base body with ``fields`` set (a None value removes the field)."""
    body = {**_BASE, **fields}
    return {k: v for k, v in body.items() if v is not None}


def _ref(**item: Any) -> dict[str, Any]:
    """The base body with one image reference ``item``."""
    return _with(images=[item])


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (_with(images=None), "images", "required"),
        (_with(images=[]), "images", "1 to 16"),
        (_with(images=_MANY), "images", "got 17"),
        (_with(images="https://e.com/a.png"), "images", "list"),
        (_with(images=["https://e.com/a.png"]), "images[0]", "object"),
        (_ref(image_url="https://e.com/a.png", file_id="file-1"), "images[0]", "exactly one"),
        (_ref(), "images[0]", "exactly one"),
        (_ref(url="https://e.com"), "images[0]", "'url'"),
        (_ref(file_id=7), "images[0]", "string"),
        (_ref(file_id="a\nb"), "images[0]", "file id"),
        (_ref(image_url="ftp://e.com/a.png"), "images[0]", "https://"),
        (_ref(image_url="javascript:alert(1)"), "images[0]", "https://"),
        (_ref(image_url="file:///etc/passwd"), "images[0]", "https://"),
        (_ref(image_url="data:image/png,abc"), "images[0]", "base64"),
        (_ref(image_url="data:image/png;base64,@@@@"), "images[0]", "malformed"),
        (_ref(image_url="data:image/png;base64,"), "images[0]", "no bytes"),
        (_ref(image_url="data:text/html;base64,PGI+"), "images[0]", "not an image"),
        (_with(mask="m.png"), "mask", "object"),
        (_with(foo=1), "foo", "not a parameter"),
        (_with(images=None, image=DATA_URL), "image", "'images'"),
        (_with(n="2"), "n", "integer"),
        (_with(stream="true"), "stream", "true or false"),
        (_with(prompt=5), "prompt", "string"),
        (_with(prompt=None), "prompt", "required"),
        # bytes that are no image: the SDK's own rule, as for an upload
        (_ref(image_url="data:image/png;base64,aGVsbG8="), "image", "recognised"),
    ],
)
def test_a_malformed_json_edit_is_a_400_naming_the_fault(proxy, upstreams, body, param, says):
    own, _ = upstreams
    before = own.hits
    answer = _post(proxy, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"], error["message"]
    assert own.hits == before


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'{"prompt": "x", "prompt": "y", "images": []}', b"\xff\xfe"],
)
def test_a_body_that_is_no_json_object_is_a_400(proxy, raw):
    answer = _post(proxy, raw)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_json"


def test_a_json_body_past_the_size_limit_is_refused_while_read(proxy, upstreams):
    own, _ = upstreams
    before = own.hits
    big = "data:image/png;base64," + "A" * (1536 * 1024)  # past max_request_size_mb: 1
    body = json.dumps({"model": "gpt-image-2", "prompt": "x", "images": [{"image_url": big}]})
    declared = _post(proxy, body.encode())
    assert declared.status_code == 413, declared.text

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it streams in
        data = body.encode()
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    streamed = httpx.post(
        f"{proxy.url}/v1/images/edits",
        content=chunks(),
        headers={**AUTH, "content-type": "application/json"},
        timeout=60,
    )
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"]["code"] == "request_too_large"
    assert own.hits == before


def test_the_openapi_document_lists_the_json_body(proxy):
    document = httpx.get(f"{proxy.url}/openapi.json", timeout=30).json()
    content = document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    schema = content["application/json"]["schema"]
    assert schema["required"] == ["images", "prompt"]
    assert schema["properties"]["images"]["maxItems"] == 16


def test_the_sdk_sends_references_in_openai_s_json_body(upstreams):
    from tracking.images import ImageReference

    own, _ = upstreams
    response = tracking.image_edit(
        image=[ImageReference.of(image_url="https://example.com/a.png"), PNG], prompt="x",
        model="gpt-image-2", quality="low", api_key=API_KEY, api_base=own.url,
    )  # fmt: skip
    assert response.cost_usd is not None and response.cost_usd > 0
    sent = own.requests[-1]
    assert sent.json_body and sent.fields["quality"] == "low"
    # the reference unchanged, the bytes as a data: URL of their own type
    assert sent.references == [
        ("image[]", "image_url", "https://example.com/a.png"),
        ("image[]", "image_url", DATA_URL[:40]),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x", "images": [{"image_url": "https://e.com/a.png", "file_id": "file-1"}]},
        {"prompt": "x", "images": []},
        {"prompt": "x", "images": [{"file_id": "file-1"}] * 17},
        {"images": [{"file_id": "file-1"}]},
        {"prompt": "x", "images": [{"file_id": "file-1"}], "n": "1"},
    ],
)
def test_the_fake_upstream_refuses_what_openai_s_reference_refuses(upstreams, body):
    own, _ = upstreams
    answer = httpx.post(
        f"{own.url}/images/edits",
        json={"model": "gpt-image-2", **body},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 400 and answer.json()["error"]["message"]


def test_the_fake_upstream_takes_openai_s_json_edit_body(upstreams):
    own, _ = upstreams
    answer = httpx.post(
        f"{own.url}/images/edits",
        json={
            "model": "gpt-image-2", "prompt": "x", "quality": "low", "size": "1024x1024",
            "images": [{"image_url": DATA_URL}, {"file_id": "file-1"}], "n": 1, "stream": False,
        },
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    assert usage["input_tokens_details"]["image_tokens"] > 0 and usage["output_tokens"] > 0
    assert own.requests[-1].references == [
        ("image[]", "image_url", DATA_URL[:40]),
        ("image[]", "file_id", "file-1"),
    ]


def test_a_budget_hold_counts_a_referenced_image_as_an_uploaded_one():
    """The hold's estimate counts input images, not their size: images of unknown size (URLs,
    file ids) are held exactly as the same number of uploads, never less."""
    from tracking.pricing.estimate import estimate_max_cost
    from tracking.proxy.edit_body import json_edit_params

    def held(*images: dict[str, str]) -> Decimal | None:
        body = {"model": "gpt-image-2", "prompt": "a hat", "quality": "high", "images": images}
        return estimate_max_cost("gpt-image-2", json_edit_params(json.dumps(body).encode()))

    uploaded = held({"image_url": DATA_URL}, {"image_url": DATA_URL})
    assert uploaded is not None and uploaded > held({"image_url": DATA_URL})  # per image
    assert held({"image_url": "https://e.com/a.png"}, {"file_id": "file-1"}) == uploaded
