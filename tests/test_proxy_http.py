"""The proxy as users meet it: ``tracking serve`` in a subprocess, called by the official
``openai`` client (sync and async) and by ``curl -F``, in front of the bundled fake upstream and
a deliberately failing one. One proxy serves the whole module; its calls go through the router
(load balancing, fallbacks, ``num_retries``), are priced (config prices included) and recorded
in its SQLite ledger before each answer leaves."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import API_KEY, make_png
from tests.proxy_support import (
    MASTER_KEY,
    PRETTY_BODY,
    ProxyProcess,
    TroubleUpstream,
    rss_bytes,
)
from tests.services import require_tool
from tracking.integrations.sql import create_ledger_engine, spend_logs
from tracking.testing import FakeOpenAI

LIMIT_MB = 8

SEED_SHAPED_CONFIG = """\
model_list:
  - model_name: gpt-image-1
    litellm_params:
      model: gpt-image-1
      api_key: os.environ/OPENAI_API_KEY
      api_base: {fake}
  # Two entries with one name, on two upstreams: the router balances them.
  - model_name: balanced
    litellm_params: {{model: gpt-image-1, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake}"}}
  - model_name: balanced
    litellm_params:
      {{model: gpt-image-1, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake_b}"}}
  - model_name: dall-e-2
    litellm_params:
      model: dall-e-2
      api_key: os.environ/OPENAI_API_KEY
      api_base: {fake}
  - model_name: limited
    litellm_params:
      model: gpt-image-1
      api_key: os.environ/OPENAI_API_KEY
      api_base: {fake}
      rpm: 2
  - model_name: lenient
    litellm_params:
      model: gpt-image-1
      api_key: os.environ/OPENAI_API_KEY
      api_base: {fake}
      drop_params: true
  - model_name: broken
    litellm_params: {{model: gpt-image-1, api_key: sk-x, api_base: "{status500}", max_retries: 0}}
  - model_name: busy
    litellm_params: {{model: gpt-image-1, api_key: sk-x, api_base: "{status429}", max_retries: 0}}
  - model_name: slow
    litellm_params:
      {{model: gpt-image-1, api_key: sk-x, api_base: "{slow}", timeout: 0.5, max_retries: 0}}
  - model_name: garbage
    litellm_params: {{model: gpt-image-1, api_key: sk-x, api_base: "{garbage}", max_retries: 0}}
  - model_name: pretty
    litellm_params: {{model: gpt-image-1, api_key: sk-x, api_base: "{pretty}", max_retries: 0}}
  - model_name: unreachable
    litellm_params:
      {{model: gpt-image-1, api_key: sk-x, api_base: "http://127.0.0.1:9/v1", max_retries: 0}}
  - model_name: wrong-key
    litellm_params:
      model: gpt-image-1
      api_key: sk-wrong-upstream-key-0123456789
      api_base: {fake}
      max_retries: 0
  # Two deployments refusing the proxy's key: a refused credential cools one down at once
  # (the only deployment of a group, like wrong-key, is never cooled down).
  - model_name: wrong-key-pair
    litellm_params:
      {{model: gpt-image-1, api_key: sk-wrong-upstream-key-0123456789, api_base: "{fake}",
       max_retries: 0}}
    model_info: {{id: wrong-key-a}}
  - model_name: wrong-key-pair
    litellm_params:
      {{model: gpt-image-1, api_key: sk-wrong-upstream-key-0123456789, api_base: "{fake}",
       max_retries: 0}}
    model_info: {{id: wrong-key-b}}
  - model_name: primary-down
    litellm_params: {{model: gpt-image-1, api_key: sk-x, api_base: "{status503}"}}
  # Prices from the config: a base model, LiteLLM's per-token fields, the prices: section.
  - model_name: azure-based
    litellm_params:
      {{model: azure/images-prod, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake_base}",
       api_version: 2025-04-01-preview}}
    model_info: {{base_model: gpt-image-1}}
  - model_name: azure-per-token
    litellm_params:
      {{model: azure/house-model, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake_base}",
       api_version: 2025-04-01-preview}}
    model_info: {{input_cost_per_token: 0.00001, output_cost_per_token: 0.00004}}
  - model_name: azure-params-priced  # LiteLLM's documented place too: litellm_params
    litellm_params:
      {{model: azure/params-model, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake_base}",
       api_version: 2025-04-01-preview, input_cost_per_token: 0.00001,
       input_cost_per_image_token: 0.00002, output_cost_per_image_token: 0.00004}}
  - model_name: azure-half
    litellm_params:
      {{model: azure/half-price, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake_base}",
       api_version: 2025-04-01-preview}}

prices:
  azure/half-price: {{base_model: gpt-image-1, discount: "0.5"}}

router_settings:
  num_retries: 0
  fallbacks: [{{primary-down: [gpt-image-1]}}]

general_settings:
  master_key: os.environ/PROXY_MASTER_KEY
  max_request_size_mb: {limit}
"""


@pytest.fixture(scope="module")
def trouble() -> Iterator[TroubleUpstream]:
    with TroubleUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    fake: FakeOpenAI,
    fake_b: FakeOpenAI,
    trouble: TroubleUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("proxy")
    config = folder / "config.yaml"
    config.write_text(
        SEED_SHAPED_CONFIG.format(
            fake=fake.url,
            fake_b=fake_b.url,
            fake_base=fake.base_url,
            status500=trouble.url("status/500"),
            status503=trouble.url("status/503"),
            status429=trouble.url("status/429"),
            slow=trouble.url("slow/3"),
            garbage=trouble.url("garbage"),
            pretty=trouble.url("pretty"),
            limit=LIMIT_MB,
        )
    )
    env = {"OPENAI_API_KEY": API_KEY, "PROXY_MASTER_KEY": MASTER_KEY}
    with ProxyProcess(config, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for name, size in (("original_image", 96), ("portrait", 80), ("mask_image", 96)):
        paths[name] = folder / f"{name}.png"
        paths[name].write_bytes(make_png(size, size))
    return paths


@pytest.fixture
def client(proxy: ProxyProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.url, api_key=MASTER_KEY, max_retries=0) as c:
        yield c


def post_edit(
    proxy: ProxyProcess, fields: dict[str, str], *, key: str | None = MASTER_KEY, files=None
):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    files = files if files is not None else {"image": ("a.png", make_png(), "image/png")}
    return httpx.post(
        f"{proxy.url}/v1/images/edits", data=fields, files=files, headers=headers, timeout=30
    )


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# -- the seed's proxy section ----------------------------------------------------------------


def test_openai_client_sync_seed_example(client, proxy, fake, images):
    """The seed's OpenAI-SDK example, changed only in URL and key, gets the upstream's JSON."""
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1",
        image=images["original_image"],
        prompt="Add a red hat to the person in the image",
        n=1,
        size="1024x1024",
    )
    response = raw.parse()
    assert len(response.data) == 1 and response.data[0].b64_json
    assert response.usage is not None and response.usage.output_tokens == 1056
    assert raw.headers["x-tracking-request-id"]
    cost = raw.headers["x-tracking-response-cost"]
    assert cost == "unpriced" or Decimal(cost) >= 0
    # The body is the upstream's answer unchanged.
    assert json.loads(raw.http_response.content) == fake.state.responses[-1]
    sent = fake.requests[-1]
    assert sent.fields["prompt"] == "Add a red hat to the person in the image"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"  # the proxy's key, not the caller's


def test_the_upstream_body_is_passed_on_byte_for_byte(proxy):
    """Indentation, key order and unescaped non-ASCII text survive: no decode and re-encode."""
    response = post_edit(proxy, {"model": "pretty", "prompt": "a red hat"})
    assert response.status_code == 200, response.text
    assert response.content == PRETTY_BODY
    assert response.headers["content-length"] == str(len(PRETTY_BODY))
    assert Decimal(response.headers["x-tracking-response-cost"]) > 0


async def test_openai_client_async(proxy, fake, images):
    async with openai.AsyncOpenAI(base_url=proxy.url, api_key=MASTER_KEY, max_retries=0) as aclient:
        response = await aclient.images.edit(
            model="gpt-image-1",
            image=images["original_image"],
            prompt="Make the image look like a painting",
            n=2,
            size="1024x1536",
            user="user-123",
        )
    assert len(response.data) == 2
    assert response.size == "1024x1536"
    assert fake.requests[-1].fields["user"] == "user-123"


def test_several_images_and_mask_reach_the_upstream(client, fake, images):
    client.images.edit(
        model="gpt-image-1",
        image=[images["original_image"], images["portrait"]],
        mask=images["mask_image"],
        prompt="Combine them",
    )
    files = fake.requests[-1].files
    assert [name for name, *_ in files] == ["image[]", "image[]", "mask"]
    assert files[0][3] == images["original_image"].stat().st_size
    assert files[2][3] == images["mask_image"].stat().st_size


def test_every_form_field_is_forwarded(client, fake, images):
    client.images.edit(
        model="gpt-image-1",
        image=images["original_image"],
        prompt="fields",
        n=1,
        size="1024x1024",
        quality="low",
        background="transparent",
        output_format="webp",
        output_compression=50,
        input_fidelity="high",
        user="end-user-7",
        extra_body={"moderation": "low"},
    )
    fields = fake.requests[-1].fields
    assert fields == {
        "model": "gpt-image-1",
        "prompt": "fields",
        "n": "1",
        "size": "1024x1024",
        "quality": "low",
        "background": "transparent",
        "output_format": "webp",
        "output_compression": "50",
        "input_fidelity": "high",
        "user": "end-user-7",
        "moderation": "low",
    }


def test_curl_seed_example(proxy, fake, images):
    require_tool("curl", "curl")
    """The seed's curl example as written: gpt-image-1 returns base64 only, so the proxy asks
    without response_format and answers a URL it serves; without it, base64; dall-e-2 takes
    response_format itself and answers the upstream's own URLs."""

    def curl(*fields: str) -> tuple[int, dict]:
        command = [
            "curl", "-s", "-w", "\n%{http_code}", "-X", "POST", f"{proxy.url}/v1/images/edits",
            "-H", f"Authorization: Bearer {MASTER_KEY}",
            "-F", f"image=@{images['original_image']}",
            "-F", f"mask=@{images['mask_image']}",
            "-F", "prompt=Add a beautiful sunset in the background",
            "-F", "n=1",
            "-F", "size=1024x1024",
        ]  # fmt: skip
        for field in fields:
            command += ["-F", field]
        out = subprocess.run(command, capture_output=True, check=True, timeout=30).stdout.decode()
        body, _, status = out.rpartition("\n")
        return int(status), json.loads(body)

    status, body = curl("model=gpt-image-1", "response_format=url")
    assert status == 200 and "/v1/images/stored/" in body["data"][0]["url"]
    assert "response_format" not in fake.requests[-1].fields

    status, body = curl("model=gpt-image-1")
    assert status == 200 and body["data"][0]["b64_json"]
    assert [f[0] for f in fake.requests[-1].files] == ["image", "mask"]

    status, body = curl("model=dall-e-2", "response_format=url")
    assert status == 200 and body["data"][0]["url"].startswith("http://127.0.0.1:")

    status, body = curl("model=lenient", "response_format=url")  # drop_params: true
    assert status == 200 and "response_format" not in fake.requests[-1].fields


def test_also_served_without_v1(proxy, fake):
    before = len(fake.requests)
    response = httpx.post(
        f"{proxy.url}/images/edits",
        data={"model": "gpt-image-1", "prompt": "short path"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert len(fake.requests) == before + 1


# -- routing, ledger, prices ---------------------------------------------------------------------


def ledger_rows(proxy: ProxyProcess, request_ids: list[str]) -> dict[str, dict]:
    """The proxy's ledger rows (./tracking.db beside its config) for these request ids."""
    engine = create_ledger_engine(f"sqlite:///{proxy.config.parent / 'tracking.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                spend_logs.select().where(spend_logs.c.request_id.in_(request_ids))
            ).mappings()
            return {row["request_id"]: dict(row) for row in rows}
    finally:
        engine.dispose()


def test_several_deployments_of_one_model_share_the_load(proxy, fake, fake_b):
    before = (fake.hits, fake_b.hits)
    ids = []
    for _ in range(24):
        response = post_edit(proxy, {"model": "balanced", "prompt": "share"})
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-tracking-request-id"])
    a, b = fake.hits - before[0], fake_b.hits - before[1]
    assert a + b == 24
    assert a > 0 and b > 0, (a, b)  # simple-shuffle: both get some (each 1 in 2**23 to miss)
    rows = ledger_rows(proxy, ids)
    assert {row["model"] for row in rows.values()} == {"balanced"}  # the name the caller asked
    assert len({row["deployment_id"] for row in rows.values()}) == 2


def test_fallback_answers_and_the_event_keeps_the_asked_model(proxy, trouble):
    before = trouble.hits
    response = post_edit(proxy, {"model": "primary-down", "prompt": "fall back"})
    assert response.status_code == 200, response.text
    assert trouble.hits == before + 1  # num_retries: 0, then the fallback group
    (row,) = ledger_rows(proxy, [response.headers["x-tracking-request-id"]]).values()
    assert row["model"] == "primary-down"
    assert row["model_group"] == "gpt-image-1"
    assert row["status"] == "success"


def test_every_answer_has_its_ledger_row_before_it_leaves(proxy):
    """Durable mode: the row is committed when the response arrives; costs match exactly."""
    answers = [post_edit(proxy, {"model": "gpt-image-1", "prompt": f"row {i}"}) for i in range(5)]
    failed = post_edit(proxy, {"model": "broken", "prompt": "x"})
    ids = [a.headers["x-tracking-request-id"] for a in [*answers, failed]]
    rows = ledger_rows(proxy, ids)
    assert set(rows) == set(ids)
    for answer in answers:
        row = rows[answer.headers["x-tracking-request-id"]]
        assert row["status"] == "success"
        assert row["cost_usd"] == Decimal(answer.headers["x-tracking-response-cost"])
    assert rows[failed.headers["x-tracking-request-id"]]["status"] == "failure"


def _cost(response: httpx.Response) -> Decimal:
    assert response.status_code == 200, response.text
    return Decimal(response.headers["x-tracking-response-cost"])


def test_config_prices_base_model_per_token_and_prices_section(proxy, fake):
    fields = {"prompt": "price me", "size": "1024x1024", "quality": "low"}
    reference = _cost(post_edit(proxy, {**fields, "model": "gpt-image-1"}))
    assert reference > 0
    assert _cost(post_edit(proxy, {**fields, "model": "azure-based"})) == reference
    assert _cost(post_edit(proxy, {**fields, "model": "azure-half"})) == reference / 2
    per_token = post_edit(proxy, {**fields, "model": "azure-per-token"})
    usage = per_token.json()["usage"]
    expected = Decimal(usage["input_tokens"]) * Decimal("0.00001") + Decimal(
        usage["output_tokens"]
    ) * Decimal("0.00004")
    assert _cost(per_token) == expected
    in_params = post_edit(proxy, {**fields, "model": "azure-params-priced"})
    usage = in_params.json()["usage"]
    details = usage["input_tokens_details"]
    assert details["image_tokens"] > 0 and details["text_tokens"] > 0
    assert _cost(in_params) == (
        Decimal(details["text_tokens"]) * Decimal("0.00001")
        + Decimal(details["image_tokens"]) * Decimal("0.00002")
        + Decimal(usage["output_tokens"]) * Decimal("0.00004")
    )


# -- errors, each with its status and OpenAI's shape --------------------------------------------


def test_400_validation_errors(proxy, client, images):
    assert_openai_error(post_edit(proxy, {"model": "gpt-image-1", "prompt": "x", "n": "11"}), 400)
    error = assert_openai_error(
        post_edit(proxy, {"model": "gpt-image-1", "prompt": "x", "n": "two"}), 400, "invalid_type"
    )
    assert error["param"] == "n"
    error = assert_openai_error(post_edit(proxy, {"model": "gpt-image-1"}), 400)
    assert error["param"] == "prompt"
    error = assert_openai_error(post_edit(proxy, {"prompt": "x"}), 400)
    assert error["param"] == "model"
    error = assert_openai_error(
        post_edit(
            proxy,
            {"model": "gpt-image-1", "prompt": "x"},
            files={"mask": ("m.png", make_png(), "image/png")},
        ),
        400,
    )
    assert error["param"] == "image"
    not_multipart = httpx.post(
        f"{proxy.url}/v1/images/edits",
        content=b'{"model": "gpt-image-1", "prompt": "x"}',
        headers={"Authorization": f"Bearer {MASTER_KEY}", "content-type": "text/plain"},
    )
    assert_openai_error(not_multipart, 400, "invalid_content_type")
    # OpenAI's JSON edit body is read (tests/test_proxy_json_edit.py): without images, a 400
    no_images = httpx.post(
        f"{proxy.url}/v1/images/edits",
        json={"model": "gpt-image-1", "prompt": "x"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert assert_openai_error(no_images, 400)["param"] == "images"
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model="gpt-image-1", image=images["original_image"], prompt="x", n=0)
    assert caught.value.status_code == 400


def test_invalid_parameter_is_a_400_naming_it_before_any_upstream_call(proxy, fake):
    before = fake.hits
    error = assert_openai_error(
        post_edit(proxy, {"model": "gpt-image-1", "prompt": "x", "size": "huge"}), 400
    )
    assert error["param"] == "size"
    assert "got 'huge'" in error["message"]
    assert fake.hits == before


def test_upstream_400_passes_through(proxy, fake):
    fake.inject(status=400, message="Your request was rejected by the upstream.")
    try:
        error = assert_openai_error(post_edit(proxy, {"model": "gpt-image-1", "prompt": "x"}), 400)
    finally:
        fake.clear_faults()
    assert "rejected by the upstream" in error["message"]
    assert "127.0.0.1" not in error["message"]  # the upstream's address stays private


def test_401_missing_or_wrong_key(proxy):
    error = assert_openai_error(
        post_edit(proxy, {"model": "gpt-image-1", "prompt": "x"}, key=None), 401
    )
    assert error["code"] == "missing_api_key"
    wrong = "sk-not-the-master-key-999"
    response = post_edit(proxy, {"model": "gpt-image-1", "prompt": "x"}, key=wrong)
    assert_openai_error(response, 401, "invalid_api_key")
    assert wrong not in response.text
    with (
        openai.OpenAI(base_url=proxy.url, api_key=wrong, max_retries=0) as bad_client,
        pytest.raises(openai.AuthenticationError),
    ):
        bad_client.models.list()


def test_404_unknown_model_and_route(proxy):
    error = assert_openai_error(
        post_edit(proxy, {"model": "gpt-image-99", "prompt": "x"}), 404, "model_not_found"
    )
    assert error["param"] == "model"
    response = httpx.get(f"{proxy.url}/v1/nothing-here")
    assert_openai_error(response, 404)


def test_413_declared_too_large_is_refused_before_reading(proxy):
    """A Content-Length over the limit gets 413 without a byte of the body being sent."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /v1/images/edits HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {MASTER_KEY}\r\n"
                "Content-Type: multipart/form-data; boundary=abc\r\n"
                f"Content-Length: {(LIMIT_MB + 1) * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        received = b""
        while b"}}" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 413")
    assert '"code": "request_too_large"' in answer


def test_413_streamed_upload_without_memory_growth(proxy):
    """A 160 MB chunked upload (no Content-Length) is cut off at the limit while it streams in;
    the proxy's memory does not grow by anything like the upload's size."""
    total = 160 * 1024 * 1024
    chunk = b"\0" * (1024 * 1024)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body():
        yield head
        for _ in range(total // len(chunk)):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    before = rss_bytes(proxy.pid)
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        content=body(),
        headers={
            "Authorization": f"Bearer {MASTER_KEY}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        timeout=30,
    )
    grown = rss_bytes(proxy.pid) - before
    assert_openai_error(response, 413, "request_too_large")
    assert grown < 64 * 1024 * 1024, f"the proxy grew by {grown / 1e6:.0f} MB"


def test_429_rate_limits(proxy):
    fields = {"model": "limited", "prompt": "x"}
    statuses = []
    # rpm: 2 counts calendar minutes: a minute may turn between calls, so allow two more.
    for _ in range(5):
        response = post_edit(proxy, fields)
        statuses.append(response.status_code)
        if response.status_code != 200:
            break
    assert statuses[:2] == [200, 200] and statuses[-1] == 429, statuses
    error = assert_openai_error(response, 429, "rate_limit_exceeded")
    assert error["type"] == "requests"  # OpenAI's type for a rate limit
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-should-retry"] == "true"  # no deployment free yet: wait and retry
    # The upstream's own 429 passes through as 429.
    assert_openai_error(post_edit(proxy, {"model": "busy", "prompt": "x"}), 429)


def test_502_and_504_upstream_failures(proxy, trouble):
    for model in ("broken", "garbage", "unreachable", "wrong-key"):
        error = assert_openai_error(post_edit(proxy, {"model": model, "prompt": "x"}), 502)
        assert error["type"] == "server_error"
        assert "sk-" not in error["message"]
    assert_openai_error(post_edit(proxy, {"model": "slow", "prompt": "x"}), 504, "upstream_timeout")


# -- health, models, metrics ---------------------------------------------------------------


def test_health_and_models(proxy, client):
    assert httpx.get(f"{proxy.url}/health/liveliness").json() == {"status": "alive"}
    readiness = httpx.get(f"{proxy.url}/health/readiness")
    assert readiness.status_code == 200
    assert readiness.json() == {"status": "ready", "database": "connected"}
    assert [m.id for m in client.models.list()] == [
        "gpt-image-1",
        "balanced",
        "dall-e-2",
        "limited",
        "lenient",
        "broken",
        "busy",
        "slow",
        "garbage",
        "pretty",
        "unreachable",
        "wrong-key",
        "wrong-key-pair",
        "primary-down",
        "azure-based",
        "azure-per-token",
        "azure-params-priced",
        "azure-half",
    ]
    assert httpx.get(f"{proxy.url}/v1/models").status_code == 401


def _rejections(proxy: ProxyProcess) -> dict[str, float]:
    text = httpx.get(f"{proxy.url}/metrics").text
    counts = {}
    for line in text.splitlines():
        if line.startswith("image_edit_proxy_rejections_total{"):
            labels, _, value = line.rpartition(" ")
            counts[labels.split('"')[1]] = float(value)
    return counts


def test_metrics_count_rejections(proxy):
    before = _rejections(proxy)
    post_edit(proxy, {"model": "gpt-image-1", "prompt": "x"}, key="sk-bad-key-for-metrics")
    post_edit(proxy, {"model": "gpt-image-1", "prompt": "x"}, key=None)
    after = _rejections(proxy)
    assert after["auth"] == before["auth"] + 2


def _metric(proxy: ProxyProcess, prefix: str) -> float:
    """The value of the exposition line starting with ``prefix`` (0 when absent)."""
    for line in httpx.get(f"{proxy.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_metrics_count_size_and_rate_rejections(proxy):
    before = _rejections(proxy)
    body = b"x" * ((LIMIT_MB + 1) * 1024 * 1024)
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        content=body,
        headers={
            "Authorization": f"Bearer {MASTER_KEY}",
            "Content-Type": "multipart/form-data; boundary=abc",
        },
        timeout=30,
    )
    assert response.status_code == 413
    rate = [post_edit(proxy, {"model": "limited", "prompt": "x"}) for _ in range(4)]
    limited = sum(r.status_code == 429 for r in rate)
    assert limited >= 1
    after = _rejections(proxy)
    assert after["size"] == before["size"] + 1
    assert after["rate"] >= before["rate"] + limited


def test_calls_and_cooldowns_reach_the_prometheus_integration(proxy):
    ok = (
        'image_edit_requests_total{error_type="",model="gpt-image-1",operation="image_edit",'
        'provider="openai",'
    )
    before = _metric(proxy, ok)
    assert post_edit(proxy, {"model": "gpt-image-1", "prompt": "count me"}).status_code == 200
    assert _metric(proxy, ok) == before + 1
    # The upstream refusing the proxy's own key cools that deployment down at once, when the
    # group has another; the only deployment of a group keeps answering the upstream's refusal.
    cooldowns = 'image_edit_deployment_cooldowns_total{deployment="'
    assert post_edit(proxy, {"model": "wrong-key-pair", "prompt": "x"}).status_code in (429, 502)
    text = httpx.get(f"{proxy.url}/metrics").text
    assert any(
        line.startswith(cooldowns)
        and 'model="wrong-key-pair"' in line
        and not line.endswith(" 0.0")
        for line in text.splitlines()
    ), text
    for _ in range(3):
        error = assert_openai_error(post_edit(proxy, {"model": "wrong-key", "prompt": "x"}), 502)
        assert error["code"] == "upstream_authentication_error"
    # its counter stays at the 0 it started with (watch_deployments)
    assert not any(
        line.startswith(cooldowns) and 'model="wrong-key"' in line and not line.endswith(" 0.0")
        for line in text.splitlines()
    ), text


def test_error_answers_carry_the_request_id_of_their_event(proxy):
    for model, status in (("broken", 502), ("gpt-image-1", 400)):
        fields = {"model": model, "prompt": "x"}
        if status == 400:
            fields["size"] = "huge"
        response = post_edit(proxy, fields)
        assert_openai_error(response, status)
        request_id = response.headers["x-tracking-request-id"]
        (row,) = ledger_rows(proxy, [request_id]).values()
        assert row["status"] == "failure"
