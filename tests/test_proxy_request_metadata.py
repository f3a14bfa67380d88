"""A request's own ``metadata`` (LiteLLM's request metadata) and nested ``extra_body`` values.

The official clients spell ``extra_body={"metadata": {"tags": ["a"]}}`` in an edit's form as
``metadata[tags][]`` fields, and any nested value alike; the proxy refused a repeated
``name[]`` as "given more than once" and forwarded ``metadata`` upstream, where OpenAI refuses
an unknown parameter, so the tags were never recorded. Now the proxy records a request's
metadata with the call (never forwarded) and sends other nested values upstream spelled as they
came; the SDK spells nested ``extra_body`` values the same way instead of as a Python repr.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

import tracking
from tests.accounts_support import accounts_config, bearer, generate, ledger_env
from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.testing import FakeOpenAI

PNG = make_png(16, 16)


@pytest.fixture(scope="module")
def served(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    folder = tmp_path_factory.mktemp("request-metadata")
    database = folder / "ledger.db"
    url = f"sqlite:///{database}"
    config = accounts_config(folder, fake.url, url, models=("gpt-image-2",))
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process, database


def _row(database: Path, request_id: str) -> tuple[list[str], dict]:
    with sqlite3.connect(database) as db:
        tags, metadata = db.execute(
            "SELECT tags, metadata FROM spend_logs WHERE request_id = ?", (request_id,)
        ).fetchone()
    return json.loads(tags), json.loads(metadata)


def _sent(fake: FakeOpenAI) -> list[tuple[str, str]]:
    return [(k, v) for k, v in fake.requests[-1].form if k not in ("model", "prompt")]


def test_the_sdk_spells_nested_extra_body_as_the_official_clients_do(fake):
    tracking.image_edit(
        image=PNG, prompt="a hat", model="gpt-image-2", api_base=fake.url, api_key=API_KEY,
        extra_body={"foo": ["x", "y"], "bar": {"k": "v", "on": True}},
    )  # fmt: skip
    assert _sent(fake) == [("foo[]", "x"), ("foo[]", "y"), ("bar[k]", "v"), ("bar[on]", "true")]


@pytest.mark.parametrize(
    ("extra_body", "rule"),
    [
        ({"a": {"b\n": "x"}}, "format"),  # a nested key no form field can be named by
        ({"a": [[[[[[[[["deep"]]]]]]]]]}, "max_depth"),
    ],
)
def test_nested_extra_body_no_form_can_carry_is_refused_before_sending(fake, extra_body, rule):
    before = len(fake.requests)
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_edit(
            image=PNG, prompt="a hat", model="gpt-image-2", api_base=fake.url, api_key=API_KEY,
            extra_body=extra_body,
        )  # fmt: skip
    assert caught.value.param == "extra_body" and caught.value.rule == rule
    assert len(fake.requests) == before


def test_the_official_clients_metadata_is_recorded_and_not_sent_upstream(served, fake):
    proxy, database = served
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY) as client:
        raw = client.images.with_raw_response.edit(
            model="gpt-image-2", image=("a.png", PNG, "image/png"), prompt="a hat",
            extra_body={"metadata": {"tags": ["a", "b"], "project": "p"}, "foo": ["x", "y"]},
        )  # fmt: skip
    assert raw.http_response.status_code == 200
    # the other nested value goes upstream as it came; the metadata does not
    assert [pair for pair in _sent(fake) if pair[0].startswith(("foo", "metadata"))] == [
        ("foo[]", "x"),
        ("foo[]", "y"),
    ]
    tags, metadata = _row(database, raw.headers["x-tracking-request-id"])
    assert tags == ["a", "b"] and metadata["project"] == "p"


def test_a_metadata_field_holding_json_is_recorded_as_curl_sends_it(served, fake):
    proxy, database = served
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers=bearer(MASTER_KEY),
        data={"model": "gpt-image-2", "prompt": "a hat", "metadata": '{"tags": ["c"]}'},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert "metadata" not in fake.requests[-1].fields
    tags, _ = _row(database, response.headers["x-tracking-request-id"])
    assert tags == ["c"]


@pytest.mark.parametrize(
    ("body", "recorded"),
    [
        ({}, ["team-a", "exp 7"]),
        ({"metadata": '{"tags": ["own", "team-a"]}'}, ["own", "team-a", "exp 7"]),
    ],
)
def test_litellm_s_tags_header_adds_to_the_recorded_tags(served, fake, body, recorded):
    """LiteLLM's ``x-litellm-tags: a,b`` (spend tags): recorded after the body's own, each once,
    stripped, empty ones left out; read nowhere before, so its calls had no tags."""
    proxy, database = served
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers={**bearer(MASTER_KEY), "x-litellm-tags": "team-a,,exp 7 , team-a"},
        data={"model": "gpt-image-2", "prompt": "a hat", **body},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert "metadata" not in fake.requests[-1].fields
    tags, _ = _row(database, response.headers["x-tracking-request-id"])
    assert tags == recorded


@pytest.mark.parametrize(
    ("lines", "recorded"),
    [  # UTF-8 was read as ISO-8859-1 (``Ã©quipe``: /spend/tags?tags=équipe found nothing)
        ([("x-litellm-tags", "équipe,画像".encode())], ["équipe", "画像"]),
        # two lines (a front proxy's, the client's) are one list: the last alone was recorded
        ([("x-litellm-tags", b"gw"), ("x-litellm-tags", b"app")], ["gw", "app"]),
    ],
)
def test_litellm_s_tags_header_is_read_as_sent(served, lines, recorded):
    proxy, database = served
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers=[*bearer(MASTER_KEY).items(), *lines],
        data={"model": "gpt-image-2", "prompt": "a hat"},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    tags, _ = _row(database, response.headers["x-tracking-request-id"])
    assert tags == recorded


def test_a_generations_metadata_is_recorded(served, fake):
    proxy, database = served
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY) as client:
        raw = client.images.with_raw_response.generate(
            model="gpt-image-2", prompt="a hat", extra_body={"metadata": {"tags": ["g"]}}
        )
    assert raw.http_response.status_code == 200
    tags, _ = _row(database, raw.headers["x-tracking-request-id"])
    assert tags == ["g"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"metadata[user_api_key_hash]": "0" * 64}, "metadata.user_api_key_hash"),
        ({"metadata": "[1, 2]"}, "metadata"),  # not an object
        ({"metadata": "{not json"}, "metadata"),
        ({"foo[]": "x", "foo[k]": "y"}, "foo[k]"),  # a list and a dict under one name
    ],
)
def test_metadata_or_nested_fields_that_cannot_be_read_are_a_400(served, fields, param):
    proxy, _ = served
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers=bearer(MASTER_KEY),
        data={"model": "gpt-image-2", "prompt": "a hat", **fields},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("fields", "headers"),
    [
        ({"metadata": '{"tags": ["own", 7]}'}, {}),
        ({"metadata": '{"tags": ["own", 7]}'}, {"x-litellm-tags": "team-a"}),
    ],
    ids=["body", "body-and-header"],
)
def test_an_edits_tag_that_is_no_string_is_a_400_naming_it(served, fake, fields, headers):
    """LiteLLM's tags are strings: a JSON metadata's ``7`` was recorded as ``"7"``. Tags from
    ``x-litellm-tags`` (always text) go after the body's, so the place named is the body's."""
    error = _refused_edit(served, fake, fields, headers)
    assert (error["param"], error["code"], error["type"]) == (
        "metadata.tags",
        "invalid_type",
        "invalid_request_error",
    )
    assert error["message"].startswith("metadata.tags[1]: each tag must be a string, got int 7")


def _refused_edit(served, fake, fields: dict[str, str], headers: dict[str, str]) -> dict:
    """The error of an edit refused with a 400 before anything was sent upstream."""
    proxy, _ = served
    before = len(fake.requests)
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers={**bearer(MASTER_KEY), **headers},
        data={"model": "gpt-image-2", "prompt": "a hat", **fields},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert len(fake.requests) == before  # nothing was sent
    return response.json()["error"]


def test_a_generations_tag_that_is_no_string_is_a_400_naming_it(served, fake):
    proxy, _ = served
    before = len(fake.requests)
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0)
    with client, pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(
            model="gpt-image-2", prompt="a hat", extra_body={"metadata": {"tags": [1, 2]}}
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "metadata.tags" and error["code"] == "invalid_type"
    assert error["message"].startswith("metadata.tags[0]: each tag must be a string, got int 1")
    assert len(fake.requests) == before


@pytest.mark.parametrize(
    ("fields", "headers", "named"),
    [
        ({"metadata[tags][]": "x" * 5000}, {}, "metadata.tags[0]: at most 256 characters"),
        ({"metadata": json.dumps({"tags": ["a", "x" * 5000]})}, {}, "metadata.tags[1]: at most"),
        ({}, {"x-litellm-tags": "a," + "x" * 5000}, "metadata.tags[1]: at most 256 characters"),
        ({}, {"x-litellm-tags": ",".join(f"t{n}" for n in range(65))}, "metadata.tags: at most 64"),
        (
            {"metadata": json.dumps({"tags": [f"b{n}" for n in range(40)]})},
            {"x-litellm-tags": ",".join(f"h{n}" for n in range(40))},
            "metadata.tags: at most 64 tags, got 80",
        ),
    ],
    ids=["form-field", "json-field", "header", "header-many", "body-and-header-many"],
)
def test_tags_past_their_bounds_are_a_400_naming_them(served, fake, fields, headers, named):
    """A 5,000-character tag was stored in the ledger, from a form field or the header alike."""
    error = _refused_edit(served, fake, fields, headers)
    assert (error["param"], error["type"]) == ("metadata.tags", "invalid_request_error")
    assert error["message"].startswith(named)


def test_tags_that_are_strings_from_the_body_and_the_header_are_recorded_as_given(served):
    """The header's tags and the body's are both text: each recorded once, body first."""
    proxy, database = served
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers={**bearer(MASTER_KEY), "x-litellm-tags": "7,b"},
        data={"model": "gpt-image-2", "prompt": "a hat", "metadata": '{"tags": ["7", "a"]}'},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    tags, _ = _row(database, response.headers["x-tracking-request-id"])
    assert tags == ["7", "a", "b"]


def test_a_virtual_keys_request_cannot_name_its_team(served):
    proxy, _ = served
    with httpx.Client(timeout=30) as client:
        key = generate(client, proxy.url, key_alias="team-less")["key"]
        response = client.post(
            f"{proxy.url}/v1/images/edits",
            headers=bearer(key),
            data={"model": "gpt-image-2", "prompt": "a hat", "metadata[team]": "finance"},
            files={"image": ("a.png", PNG, "image/png")},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "metadata.team"
