"""The proxy speaks the official clients' protocol: the ``openai`` client at its default settings
(two retries of its own) against ``tracking serve`` behaves as it does against OpenAI.

One proxy (SQLite ledger, master key, CORS for one origin) in front of the session's fake
upstream and a failing one serves the module. What is checked: retries do not multiply (every
answer says ``x-should-retry``), a client that hangs up stops the proxy's retries,
``safety_identifier`` is the end user (ledger, budgets, blocks), ``x-request-id`` is the ledger's
id, error codes are OpenAI's, refusals are counted under their own label, and the HTTP details
(405 with ``Allow``, trailing slashes, CORS, ``/openapi.json`` and ``/docs``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.accounts_support import bearer, ledger_env
from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, TroubleUpstream, write_config
from tracking.integrations.sql import create_ledger_engine, spend_logs
from tracking.proxy.openapi import OPERATIONS
from tracking.testing import FakeOpenAI

ORIGIN = "https://app.example"
PNG = make_png(32, 32)


def _deployment(name: str, api_base: str, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": "gpt-image-1", "api_key": API_KEY, "api_base": api_base}
        | params,
    }


@pytest.fixture(scope="module")
def trouble() -> Iterator[TroubleUpstream]:
    with TroubleUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    fake: FakeOpenAI, trouble: TroubleUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("protocol")
    url = f"sqlite:///{folder / 'ledger.db'}"
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                _deployment("gpt-image-1", fake.url, max_retries=0),
                {
                    "model_name": "dall-e-2",
                    "litellm_params": {
                        "model": "dall-e-2",
                        "api_key": API_KEY,
                        "api_base": fake.url,
                    },
                },
                _deployment("always-500", trouble.url("status/500")),
                _deployment("always-429", trouble.url("status/429")),
                _deployment("hang-up", trouble.url("status/503")),
            ],
            # The proxy's own retries: three attempts per call, with backoff between them.
            "router_settings": {"num_retries": 2},
            "litellm_settings": {"success_callback": ["sql"], "failure_callback": ["sql"]},
            "general_settings": {
                "master_key": MASTER_KEY,
                "database_url": url,
                "auto_migrate": True,
                "cors_allow_origins": [ORIGIN],
            },
        },
    )
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


@pytest.fixture
def client(proxy: ProxyProcess) -> Iterator[openai.OpenAI]:
    """The official client at its default settings (``max_retries=2``), as users run it."""
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY) as c:
        yield c


def _ledger(proxy: ProxyProcess) -> list[dict[str, Any]]:
    engine = create_ledger_engine(f"sqlite:///{proxy.config.parent / 'ledger.db'}")
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(spend_logs.select()).mappings()]
    finally:
        engine.dispose()


def _row(proxy: ProxyProcess, request_id: str) -> dict[str, Any]:
    rows = [row for row in _ledger(proxy) if row["request_id"] == request_id]
    assert len(rows) == 1, f"no ledger row {request_id}"
    return rows[0]


def _edit(proxy: ProxyProcess, fields: dict[str, str], files: Any = None, key: str = MASTER_KEY):
    data = {"model": "gpt-image-1", "prompt": "make it blue", **fields}
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers=bearer(key),
        data=data,
        files=files if files is not None else {"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )


def _rejections(proxy: ProxyProcess) -> dict[str, float]:
    counts = {}
    for line in httpx.get(f"{proxy.url}/metrics").text.splitlines():
        if line.startswith("image_edit_proxy_rejections_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


def _customer(proxy: ProxyProcess, **fields: Any) -> None:
    response = httpx.post(f"{proxy.url}/customer/new", headers=bearer(MASTER_KEY), json=fields)
    assert response.status_code == 200, response.text


# -- one retry budget per client call ---------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "error_class"),
    [("always-500", openai.InternalServerError), ("always-429", openai.RateLimitError)],
)
def test_an_upstream_that_always_fails_sees_only_the_proxys_own_attempts(
    proxy, trouble, client, model, error_class
):
    before = trouble.hits
    with pytest.raises(error_class) as caught:
        client.images.edit(model=model, image=("a.png", PNG, "image/png"), prompt="x")
    answer = caught.value.response
    assert answer.headers["x-should-retry"] == "false"
    row = _row(proxy, caught.value.request_id)
    # Three attempts by the proxy; the client's two retries would have made nine.
    assert row["attempts"] == 3
    assert trouble.hits - before == 3


def test_a_budget_refusal_is_not_retried_by_the_client(proxy, client):
    _customer(proxy, user_id="thrifty", max_budget="0", budget_period="total")
    before = _rejections(proxy).get("budget", 0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.edit(
            model="gpt-image-1",
            image=("a.png", PNG, "image/png"),
            prompt="x",
            safety_identifier="thrifty",
        )
    assert caught.value.code == "budget_exceeded"
    assert caught.value.type == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert _rejections(proxy)["budget"] == before + 1  # one request: the client did not retry


def test_a_refusal_a_wait_fixes_says_retry_after(proxy):
    # No route: a 404 is final; a 405 too. Only waits that help say true (see the parallel-limit
    # and rpm tests); here: every refusal says something.
    for response in (
        httpx.get(f"{proxy.url}/nowhere"),
        httpx.get(f"{proxy.url}/v1/images/edits"),
        _edit(proxy, {"model": "nope"}),
    ):
        assert response.headers["x-should-retry"] == "false"


def test_a_client_that_hangs_up_stops_the_proxys_retries(proxy, trouble):
    before = trouble.hits
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{proxy.url}/v1/images/edits",
            headers=bearer(MASTER_KEY),
            data={"model": "hang-up", "prompt": "x"},
            files={"image": ("a.png", PNG, "image/png")},
            timeout=httpx.Timeout(10, read=0.3),
        )
    # Without the hang-up the proxy would make 3 attempts over about 1.5 s of backoff.
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:
        rows = [r for r in _ledger(proxy) if r["model"] == "hang-up"]
        time.sleep(0.1)
    assert len(rows) == 1, "the abandoned call still gets its ledger row"
    assert rows[0]["status"] == "failure"
    assert rows[0]["attempts"] <= 2
    time.sleep(2)  # no attempt starts later either
    assert trouble.hits - before == rows[0]["attempts"]


# -- end users: safety_identifier -------------------------------------------------------------


def test_safety_identifier_is_the_end_user_in_the_ledger(proxy, client):
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1",
        image=("a.png", PNG, "image/png"),
        prompt="x",
        safety_identifier="si-alice",
    )
    assert _row(proxy, raw.request_id)["end_user"] == "si-alice"

    # Both sent: safety_identifier wins (as at OpenAI); the other is kept in the metadata.
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1",
        image=("a.png", PNG, "image/png"),
        prompt="x",
        safety_identifier="si-bob",
        user="user-bob",
    )
    row = _row(proxy, raw.request_id)
    assert row["end_user"] == "si-bob"
    metadata = row["metadata"]
    assert (json.loads(metadata) if isinstance(metadata, str) else metadata)["user"] == "user-bob"


def test_safety_identifier_is_budgeted_and_blockable(proxy, client):
    _customer(proxy, user_id="si-blocked", blocked=True)
    before = _rejections(proxy)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.images.edit(
            model="gpt-image-1",
            image=("a.png", PNG, "image/png"),
            prompt="x",
            safety_identifier="si-blocked",
        )
    assert caught.value.code == "end_user_blocked"
    assert caught.value.param == "safety_identifier"
    assert _rejections(proxy)["blocked"] == before.get("blocked", 0) + 1

    _customer(proxy, user_id="si-capped", max_budget="0", budget_period="daily")
    response = _edit(proxy, {"safety_identifier": "si-capped"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "budget_exceeded"


# -- request ids ------------------------------------------------------------------------------


def test_x_request_id_is_the_ledger_rows_id(proxy, client, fake):
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1", image=("a.png", PNG, "image/png"), prompt="x"
    )
    request_id = raw.headers["x-request-id"]
    assert raw.request_id == request_id == raw.headers["x-tracking-request-id"]
    row = _row(proxy, request_id)
    assert raw.headers["x-upstream-request-id"] == row["upstream_request_id"]
    assert raw.headers["x-upstream-request-id"].startswith("req_fake_")
    assert raw.parse()._request_id == request_id

    with pytest.raises(openai.InternalServerError) as caught:
        client.images.edit(model="always-500", image=("a.png", PNG, "image/png"), prompt="x")
    assert _row(proxy, caught.value.request_id)["status"] == "failure"


def test_every_answer_has_an_x_request_id(proxy):
    answers = [
        httpx.get(f"{proxy.url}/health/liveliness"),
        httpx.get(f"{proxy.url}/v1/models", headers=bearer(MASTER_KEY)),
        httpx.get(f"{proxy.url}/v1/models"),  # 401
        httpx.get(f"{proxy.url}/nowhere"),  # 404
        httpx.get(f"{proxy.url}/metrics"),
        httpx.get(f"{proxy.url}/openapi.json"),
        _edit(proxy, {"n": "0"}),  # 400 before any call
    ]
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert all(len(i) == 36 for i in ids) and len(set(ids)) == len(ids)


# -- OpenAI's error vocabulary ------------------------------------------------------------------

PIXELS = make_png(64, 32)


@pytest.mark.parametrize(
    ("fields", "files", "param", "code"),
    [
        ({"prompt": ""}, None, "prompt", "missing_required_parameter"),
        ({}, {"mask": ("m.png", PNG, "image/png")}, "image", "missing_required_parameter"),
        ({"n": "11"}, None, "n", "integer_above_max_value"),
        ({"n": "0"}, None, "n", "integer_below_min_value"),
        ({"n": "two"}, None, "n", "invalid_type"),
        ({"output_compression": "101", "output_format": "jpeg"}, None, "output_compression",
         "integer_above_max_value"),
        ({"quality": "ultra"}, None, "quality", "invalid_value"),
        ({"size": "999x999"}, None, "size", "invalid_value"),
        ({"model": "dall-e-2", "size": "256x256", "background": "opaque"}, None, "background",
         "unsupported_parameter"),
        ({"prompt": "x" * 32_001}, None, "prompt", "string_above_max_length"),
        ({}, {"image": ("a.txt", b"not an image at all", "text/plain")}, "image",
         "invalid_image_format"),
        ({}, [("image[]", ("a.png", PNG, "image/png"))] * 17, "image", "array_above_max_length"),
        ({"model": "dall-e-2", "size": "256x256"}, {"image": ("a.png", PIXELS, "image/png")},
         "image", "invalid_image"),
        ({"background": "transparent", "output_format": "jpeg"}, None, "background",
         "invalid_value"),
    ],
)  # fmt: skip
def test_validation_error_codes_are_openais(proxy, fields, files, param, code):
    response = _edit(proxy, fields, files)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert response.headers["x-should-retry"] == "false"


def test_the_openai_client_reads_the_code(proxy, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model="gpt-image-1", image=("a.png", PNG, "image/png"), prompt="x", n=0)
    assert caught.value.code == "integer_below_min_value" and caught.value.param == "n"
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.edit(model="gpt-nope", image=("a.png", PNG, "image/png"), prompt="x")
    assert missing.value.code == "model_not_found"


def test_the_upstreams_own_type_and_code_pass_through(proxy, fake):
    fake.inject(status=400, type="image_generation_user_error", code="moderation_blocked")
    response = _edit(proxy, {})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("image_generation_user_error", "moderation_blocked")
    assert response.headers["x-should-retry"] == "false"


# -- rejections under their own label -------------------------------------------------------------


def test_each_refusal_is_counted_under_its_own_reason(proxy):
    key = httpx.post(
        f"{proxy.url}/key/generate", headers=bearer(MASTER_KEY), json={"models": ["dall-e-2"]}
    ).json()["key"]
    before = _rejections(proxy)
    assert _edit(proxy, {}, key=key).status_code == 403  # gpt-image-1 is not the key's
    assert _edit(proxy, {"model": "nope"}).status_code == 404
    assert _edit(proxy, {"n": "two"}).status_code == 400
    assert _edit(proxy, {}, key="sk-wrong").status_code == 401
    after = _rejections(proxy)
    for reason in ("model_not_allowed", "unknown_model", "validation", "auth"):
        assert after[reason] == before.get(reason, 0) + 1, reason


# -- HTTP details ---------------------------------------------------------------------------


def test_405_names_the_allowed_methods(proxy):
    response = httpx.get(f"{proxy.url}/v1/images/edits")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert httpx.delete(f"{proxy.url}/v1/models").headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path",
    [
        "/health/liveliness",
        "/health/liveness",
        "/health/readiness",
        "/health",
        "/metrics",
        "/v1/models",
        "/v1/models/gpt-image-1",
        "/openapi.json",
        "/docs",
    ],
)
def test_head_answers_wherever_get_does(proxy, path):
    got = httpx.get(f"{proxy.url}{path}", headers=bearer(MASTER_KEY))
    head = httpx.head(f"{proxy.url}{path}", headers=bearer(MASTER_KEY))
    assert got.status_code == 200 and head.status_code == 200, (path, head.headers)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # its counters move between the two requests
        assert head.headers["content-length"] == str(len(got.content))
    # Refusals too: the same status and headers, no body.
    refused = httpx.head(f"{proxy.url}/v1/models", headers=bearer("sk-wrong"))
    assert refused.status_code == 401 and refused.content == b""
    assert refused.headers["x-should-retry"] == "false"


def test_head_on_a_post_only_path_is_a_405(proxy):
    response = httpx.head(f"{proxy.url}/v1/images/edits")
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_trailing_slashes_are_accepted(proxy):
    response = httpx.post(
        f"{proxy.url}/v1/images/edits/",
        headers=bearer(MASTER_KEY),
        data={"model": "gpt-image-1", "prompt": "x"},
        files={"image": ("a.png", PNG, "image/png")},
    )
    assert response.status_code == 200, response.text
    assert httpx.get(f"{proxy.url}/v1/models/", headers=bearer(MASTER_KEY)).status_code == 200
    assert httpx.get(f"{proxy.url}/health/liveliness/").status_code == 200


def test_cors_answers_the_configured_origin_only(proxy):
    preflight = httpx.options(
        f"{proxy.url}/v1/images/edits",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    answer = httpx.get(f"{proxy.url}/v1/models", headers={**bearer(MASTER_KEY), "origin": ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in answer.headers["access-control-expose-headers"]

    other = httpx.options(
        f"{proxy.url}/v1/images/edits",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert other.status_code == 405 and "access-control-allow-origin" not in other.headers


def test_openapi_document_describes_every_route(proxy):
    document = httpx.get(f"{proxy.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    for path in (
        "/v1/images/edits",
        "/images/edits",
        "/v1/models",
        "/key/generate",
        "/customer/info",
        "/spend/logs",
        "/health/readiness",
        "/metrics",
        "/docs",
    ):
        assert path in paths, path
    assert set(paths) <= set(OPERATIONS), set(paths) - set(OPERATIONS)  # all described
    edit = paths["/v1/images/edits"]["post"]
    form = edit["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"image", "prompt", "safety_identifier", "user"} <= set(form["properties"])

    page = httpx.get(f"{proxy.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "POST /v1/images/edits" in page.text
    assert "<script" not in page.text and "https://" not in page.text  # nothing fetched


def test_openapi_document_names_the_routes_with_a_name_in_their_path_and_every_query_read(proxy):
    """/openapi.json describes every route the proxy serves (docs/proxy-protocol.md): the two
    whose path holds a name, ``client.models.retrieve``'s and the URL answers' stored images,
    were missing, and so were query parameters routes read (the spend totals' dates, the key
    list's filters)."""
    paths = httpx.get(f"{proxy.url}/openapi.json").json()["paths"]

    def parameters(path: str) -> dict[str, str]:
        return {p["name"]: p["in"] for p in paths[path]["get"].get("parameters", [])}

    for path in ("/v1/models/{model}", "/models/{model}"):
        assert parameters(path) == {"model": "path"}, path
    stored = "/v1/images/stored/{name}"
    assert parameters(stored) == {"name": "path", "expires": "query", "signature": "query"}
    assert paths[stored]["get"]["security"] == []  # the URL's signature is its credential
    for path in ("/global/spend", "/global/spend/keys", "/global/spend/teams"):
        assert {"start_date", "end_date"} <= set(parameters(path)), path
    assert {"key_alias", "team_id"} <= set(parameters("/key/list"))
    # what the document names is served: the model route with a model the config lists
    model = httpx.get(f"{proxy.url}/v1/models/dall-e-2", headers=bearer(MASTER_KEY))
    assert model.status_code == 200 and model.json()["id"] == "dall-e-2"


#: The query parameters the routes read as whole numbers from 1 to a maximum, and a route of each.
WHOLE_NUMBERS = {
    "/spend/logs": ("page", "page_size"),
    "/spend/keys": ("page", "page_size"),
    "/key/list": ("page", "size"),
    "/global/spend/keys": ("limit",),
    "/global/spend/teams": ("limit",),
    "/global/spend/tags": ("limit",),
    "/spend/tags": ("limit",),
}


def test_openapi_types_each_query_parameter_as_its_route_reads_it(proxy):
    """Every query parameter was typed a string: the whole numbers, dates and the boolean the
    routes parse are typed so, with the bounds the routes apply (the maximum is served, one more
    is a 400 naming it)."""
    paths = httpx.get(f"{proxy.url}/openapi.json").json()["paths"]
    schemas = {
        (path, p["name"]): p["schema"]
        for path, item in paths.items()
        for p in item.get("get", {}).get("parameters", [])
        if p["in"] == "query"
    }
    for path, names in WHOLE_NUMBERS.items():
        for name in names:
            schema = schemas[path, name]
            assert (schema["type"], schema["minimum"]) == ("integer", 1), (path, name)
            highest = schema["maximum"]
            for value, refused in ((highest, False), (highest + 1, True), (0, True)):
                answer = httpx.get(
                    f"{proxy.url}{path}", params={name: value}, headers=bearer(MASTER_KEY)
                )
                assert (answer.status_code == 400) is refused, (path, name, value, answer.text)
                if refused:
                    assert answer.json()["error"]["param"] == name
    dated = [key for key in schemas if key[1] in ("start_date", "end_date")]
    assert len(dated) >= 10
    for key in dated:
        formats = {choice["format"] for choice in schemas[key]["anyOf"]}
        assert (schemas[key]["type"], formats) == ("string", {"date", "date-time"}), key
    assert schemas["/key/list", "return_full_object"]["type"] == "boolean"
    stored = "/v1/images/stored/{name}"
    assert schemas[stored, "expires"]["type"] == "integer"
    assert schemas[stored, "signature"]["pattern"] == "^[0-9a-f]{64}$"
    untyped = {name for (_, name), schema in schemas.items() if schema["type"] == "string"}
    assert untyped == {
        "key_hash", "key", "end_user_id", "api_key_hash", "user", "key_alias", "team_id",
        "group_by", "signature", "start_date", "end_date", "api_key", "request_id",
        "customer_id", "tags", "litellm_model_id", "model_group",
    }  # fmt: skip


def test_openapi_fuzz_run_finds_no_server_error(proxy, tmp_path: Path):
    """schemathesis, property-based, against the running proxy with the master key: every
    generated request gets an answer below 500. Bounded: a few examples per operation and
    half a minute in all, from a fixed seed (it found two 500s: a budget and an integer too large
    for the database)."""
    import subprocess
    import sys

    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{proxy.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--header", f"Authorization: Bearer {MASTER_KEY}",
        "--max-examples", "10", "--seed", "1", "--workers", "1",
        "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "20", "--max-time", "30",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    output = result.stdout
    failures = output.find("FAILURES")
    assert result.returncode == 0, output[max(0, failures) :][:8000] + result.stderr[-2000:]


# -- the official Node client ---------------------------------------------------------------------

NODE_SCRIPT = """
import OpenAI, { toFile } from 'openai';
const [base, key, pngB64] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key });  // default: maxRetries 2
const image = () => toFile(Buffer.from(pngB64, 'base64'), 'a.png', { type: 'image/png' });
const failure = async (params) => {
  try {
    await client.images.edit({ image: await image(), prompt: 'x', ...params });
    return null;
  } catch (e) {
    return { status: e.status, code: e.code, type: e.type, param: e.param,
             requestID: e.requestID, retry: e.headers?.get('x-should-retry') };
  }
};
const { response, request_id } = await client.images
  .edit({ model: 'gpt-image-1', image: await image(), prompt: 'x', safety_identifier: 'node-si' })
  .withResponse();
console.log(JSON.stringify({
  ok: { request_id, header: response.headers.get('x-request-id') },
  always500: await failure({ model: 'always-500' }),
  always429: await failure({ model: 'always-429' }),
  budget: await failure({ model: 'gpt-image-1', safety_identifier: 'node-thrifty' }),
  validation: await failure({ model: 'gpt-image-1', n: 0 }),
}));
"""


@pytest.fixture(scope="module")
def node_openai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose script imports the official ``openai`` Node package (version 6), which
    ``.ci/run`` installs beside this virtualenv before the tests run (no test fetches anything):
    ``npm install --prefix .venv/node openai@6``."""
    from tests.services import require_tool, unavailable

    require_tool("node", "nodejs")
    modules = Path(sys.prefix) / "node" / "node_modules"
    if not (modules / "openai" / "package.json").is_file():
        wanted = f"npm install --prefix {modules.parent} openai@6"
        unavailable(f"the openai Node package is not installed: {wanted}")
    folder = tmp_path_factory.mktemp("node-openai")
    (folder / "package.json").write_text('{"private": true, "type": "module"}')
    (folder / "node_modules").symlink_to(modules, target_is_directory=True)
    (folder / "calls.mjs").write_text(NODE_SCRIPT)
    return folder


def test_the_official_node_client_retries_reads_ids_and_codes_as_against_openai(
    proxy, trouble, node_openai
):
    import base64
    import subprocess

    _customer(proxy, user_id="node-thrifty", max_budget="0", budget_period="total")
    hits, rejected = trouble.hits, _rejections(proxy).get("budget", 0)
    run = subprocess.run(
        ["node", "calls.mjs", proxy.url, MASTER_KEY, base64.b64encode(PNG).decode()],
        cwd=node_openai,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)

    assert out["ok"]["request_id"] == out["ok"]["header"]
    assert _row(proxy, out["ok"]["request_id"])["end_user"] == "node-si"
    for name in ("always500", "always429"):
        assert out[name]["retry"] == "false"
        assert _row(proxy, out[name]["requestID"])["attempts"] == 3
    assert trouble.hits - hits == 6  # the proxy's 3 attempts per call, never the client's 9
    assert (out["budget"]["status"], out["budget"]["code"]) == (429, "budget_exceeded")
    assert _rejections(proxy)["budget"] == rejected + 1  # not retried
    assert (out["validation"]["code"], out["validation"]["param"]) == (
        "integer_below_min_value",
        "n",
    )
