"""Text no request can carry, and numbers only Python would read, refused at the edge.

A JSON ``"\\ud800"`` escape decodes to a lone UTF-16 surrogate: no upstream, database or log takes
it. Before these checks a generation with such a ``user`` was served and billed, its ledger row
refused (so the key's budget never saw the spend), and management endpoints answered 500. Form
integers were read by Python's ``int()``, so ``n=1_0`` generated (and billed) 10 images. Each is
now an OpenAI-shaped 400 naming the field, and nothing reaches the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import tracking
from tracking.testing import FakeOpenAI

from .conftest import API_KEY, make_png
from .proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
LONE = "\\ud800"  # as JSON text: the escape itself, which json.loads decodes to U+D800


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    config = write_config(
        tmp_path_factory.mktemp("hostile-text") / "config.yaml",
        one_deployment_config(
            upstream.url, model_name="gpt-image-2", general_settings={"master_key": MASTER_KEY}
        ),
    )
    with ProxyProcess(config) as running:
        yield running


def _refused(response: httpx.Response, param: str) -> dict[str, object]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["param"] == param, error
    return error


@pytest.mark.parametrize(
    ("field", "param"),
    [
        ("user", "user"),
        ("safety_identifier", "safety_identifier"),
        ("prompt", "prompt"),
        ("style_hint", "style_hint"),  # a key this version does not know: still not sent
    ],
)
def test_a_lone_surrogate_in_a_generation_is_a_400_never_sent(proxy, upstream, field, param):
    fields = {"model": "gpt-image-2", "prompt": "a hat", "size": "1024x1024", "quality": "low"}
    body = ", ".join(f'"{k}": "{v}"' for k, v in fields.items() if k != field)
    before = upstream.hits
    response = httpx.post(
        f"{proxy.url}/v1/images/generations",
        content=f'{{{body}, "{field}": "a{LONE}b"}}'.encode(),
        headers={**AUTH, "content-type": "application/json"},
        timeout=30,
    )
    error = _refused(response, param)
    assert "surrogate" in str(error["message"])
    assert upstream.hits == before


@pytest.mark.parametrize(
    ("path", "document", "param"),
    [
        ("/key/generate", f'{{"key_alias": "{LONE}"}}', "key_alias"),
        ("/key/generate", f'{{"team": "t{LONE}"}}', "team"),
        ("/customer/new", f'{{"user_id": "{LONE}"}}', "user_id"),
    ],
)
def test_a_lone_surrogate_in_a_management_call_is_a_400_not_a_500(proxy, path, document, param):
    response = httpx.post(
        f"{proxy.url}{path}",
        content=document.encode(),
        headers={**AUTH, "content-type": "application/json"},
        timeout=30,
    )
    _refused(response, param)


@pytest.mark.parametrize("value", ["1_0", "\u0663", "\uff12", "0x2", "2.0"])
def test_form_integers_are_ascii_digits_only(proxy, upstream, value):
    before = upstream.hits
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "gpt-image-2", "prompt": "a hat", "n": value},
        files={"image": ("photo.png", make_png(), "image/png")},
        headers=AUTH,
        timeout=30,
    )
    assert _refused(response, "n")["code"] == "invalid_type"
    assert upstream.hits == before


def test_signed_and_padded_integers_still_read(proxy):
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "gpt-image-2", "prompt": "a hat", "n": " +1 ", "quality": "low"},
        files={"image": ("photo.png", make_png(), "image/png")},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1


@pytest.mark.parametrize("param", ["user", "safety_identifier", "prompt", "size"])
def test_the_sdk_refuses_a_lone_surrogate_before_sending(upstream, param):
    params = {"prompt": "a hat", "size": "1024x1024", param: "a\ud800b"}
    before = upstream.hits
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_generation(
            model="gpt-image-2", api_base=upstream.url, api_key=API_KEY, **params
        )
    assert caught.value.param == param and "surrogate" in str(caught.value)
    assert upstream.hits == before


def _raw_form(*parts: bytes) -> bytes:
    return b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"


_MODEL = b'Content-Disposition: form-data; name="model"\r\n\r\ngpt-image-2'
_PROMPT = b'Content-Disposition: form-data; name="prompt"\r\n\r\na hat'


def _image_part(filename: bytes = b"a.png") -> bytes:
    return (
        b'Content-Disposition: form-data; name="image"; filename="' + filename + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + make_png()
    )


def _post_raw(proxy: ProxyProcess, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        content=body,
        headers={**AUTH, "content-type": "multipart/form-data; boundary=b"},
        timeout=30,
    )


@pytest.mark.parametrize(
    "name", [b"fo\x00o", b"\xff\xfe", b""], ids=["control-character", "not-utf-8", "empty"]
)
def test_a_form_field_whose_name_is_not_text_is_refused(proxy, upstream, name):
    # Before, an undecodable name was forwarded as U+FFFD and an empty one as name="".
    body = _raw_form(
        _MODEL,
        _PROMPT,
        b'Content-Disposition: form-data; name="' + name + b'"\r\n\r\n1',
        _image_part(),
    )
    before = upstream.hits
    _refused(_post_raw(proxy, body), "field name")
    assert upstream.hits == before


def test_a_nul_in_an_uploads_filename_is_escaped_not_retried_into_a_502(proxy, upstream):
    # The NUL went upstream raw: the upstream refused the part's header with a 500, the proxy
    # tried three times and answered 502. A file name is a label: it goes escaped.
    before = len(upstream.requests)
    response = _post_raw(proxy, _raw_form(_MODEL, _PROMPT, _image_part(b"a\x00b\x01.png")))
    assert response.status_code == 200, response.text
    (sent,) = upstream.requests[before:]
    assert [file[1] for file in sent.files] == ["a%00b%01.png"]


def test_url_answers_cannot_be_streamed(proxy, upstream):
    # The stream carried b64_json while the call's metadata said response_format=url.
    before = upstream.hits
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={
            "model": "gpt-image-2",
            "prompt": "a hat",
            "stream": "true",
            "response_format": "url",
        },
        files={"image": ("photo.png", make_png(), "image/png")},
        headers=AUTH,
        timeout=30,
    )
    assert _refused(response, "response_format")["code"] == "unsupported_parameter"
    assert upstream.hits == before


@pytest.mark.parametrize(
    ("path", "document", "param"),
    [
        ("/key/generate", {"key": "sk-chosen-by-the-caller-0001"}, "key"),
        ("/key/generate", {"max_budget": 5, "tpm_limit": 1000}, "tpm_limit"),
        (
            "/key/generate",
            {"budget_duration": "30d", "max_parallel_requests": 2},
            "budget_duration",
        ),
        (
            "/customer/new",
            {"user_id": "u-unknown-field", "budget_duration": "1d"},
            "budget_duration",
        ),
        ("/customer/update", {"user_id": "u-unknown-field", "rpm_limit": 5}, "rpm_limit"),
        ("/key/update", {"key_hash": "0" * 64, "tpm_limit": 5}, "tpm_limit"),
        ("/key/regenerate", {"key_hash": "0" * 64, "soft_budget": 5}, "soft_budget"),
    ],
)
def test_a_management_field_this_proxy_does_not_implement_is_refused_not_dropped(
    proxy, path, document, param
):
    # A LiteLLM field this proxy does not implement was dropped without a word: a key asked
    # with tpm_limit was made without any limit.
    response = httpx.post(f"{proxy.url}{path}", json=document, headers=AUTH, timeout=30)
    error = _refused(response, param)
    assert error["code"] == "unsupported_field" and param in str(error["message"])
    if path == "/key/generate":  # nothing was made
        listed = httpx.get(f"{proxy.url}/key/list", headers=AUTH, timeout=30).json()
        assert listed["total_count"] == 0


def test_the_openapi_bodies_list_exactly_the_fields_the_routes_take():
    from tracking.proxy.management_routes import END_USER_FIELDS, KEY_FIELDS
    from tracking.proxy.openapi import OPERATIONS

    for path, fields in [("/key/generate", KEY_FIELDS), ("/customer/new", END_USER_FIELDS)]:
        schema = OPERATIONS[path]["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == fields and schema["additionalProperties"] is False
