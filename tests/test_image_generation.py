"""Image generations on the one pipeline: the SDK, the router, the ledger and the proxy.

Every call goes over loopback to the fake OpenAI upstream (which checks a generation's JSON body
with its own rules) and, for the proxy, through a real ``tracking serve`` subprocess driven by
the official ``openai`` client. Costs are worked out by hand in each test from the fake's token
counts (documented in :mod:`tracking.testing.fake_openai`) and the packaged gpt-image-2 prices:
$5 per 1M input text tokens, $8 per 1M input image tokens, $30 per 1M output image tokens.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import API_KEY, make_png
from tests.minute_support import in_one_minute
from tests.proxy_support import ProxyProcess, ledger_row, write_config
from tracking.integrations.sql import query_spend, spend_command, spend_logs
from tracking.request import parse_call
from tracking.testing import FakeOpenAI
from tracking.testing.fake_openai import OUTPUT_TOKENS_2, PARTIAL_IMAGE_OUTPUT_TOKENS

MILLION = Decimal(1_000_000)
PROMPT = "a red fox on snow"  # 17 characters: ceil(17 / 4) = 5 input text tokens at the fake
TEXT_TOKENS = math.ceil(len(PROMPT) / 4)
MASTER_KEY = "sk-master-generations-0123456789"


def events_of(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The events of the calls made from now on (a plain success and failure callback)."""
    seen: list[Any] = []

    def keep(kwargs: dict[str, Any], *rest: Any) -> None:
        seen.append(kwargs["tracking_event"])

    monkeypatch.setattr(tracking, "success_callback", [keep])
    monkeypatch.setattr(tracking, "failure_callback", [keep])
    return seen


# -- the SDK ------------------------------------------------------------------------------------


def test_image_generation_sends_openai_json_and_is_priced_by_hand(fake, upstream, monkeypatch):
    events = events_of(monkeypatch)
    response = tracking.image_generation(
        prompt=PROMPT,
        model="gpt-image-2",
        size="1024x1024",
        quality="low",
        moderation="low",
        user="alice",
        **upstream,
    )
    assert tracking.flush(10)
    received = fake.requests[-1]
    assert received.path == "/v1/images/generations" and received.files == []
    assert received.headers["Content-Type"] == "application/json"
    assert received.fields == {
        "model": "gpt-image-2",
        "prompt": PROMPT,
        "size": "1024x1024",
        "quality": "low",
        "moderation": "low",
        "user": "alice",
    }
    # 5 text tokens at $5 and 200 output tokens (low, 1024x1024) at $30 per 1M tokens:
    # (5 * 5 + 200 * 30) / 1,000,000 = 6,025 / 1,000,000 = $0.006025; no input image tokens.
    assert OUTPUT_TOKENS_2["low"]["1024x1024"] == 200
    assert response.usage is not None and response.usage.input_image_tokens == 0
    assert response.cost_usd == Decimal("0.006025")
    (event,) = events
    assert event.call_type == "image_generation" and event.operation == "image_generation"
    assert event.input_images == 0 and event.input_bytes == 0 and not event.has_mask
    assert event.end_user == "alice" and event.cost_usd == Decimal("0.006025")


def test_aimage_generation_with_n_and_a_size_is_priced_by_hand(fake, upstream, monkeypatch):
    events = events_of(monkeypatch)
    response = asyncio.run(
        tracking.aimage_generation(
            prompt=PROMPT, model="gpt-image-2", n=2, size="1024x1536", quality="medium", **upstream
        )
    )
    assert tracking.flush(10)
    assert response.images_returned == 2
    # Two medium 1024x1536 images of 1,367 output tokens each: 2,734 tokens.
    # (5 * 5 + 2,734 * 30) / 1,000,000 = (25 + 82,020) / 1,000,000 = $0.082045
    assert OUTPUT_TOKENS_2["medium"]["1024x1536"] == 1367
    assert response.cost_usd == Decimal("0.082045")
    assert events[0].call_type == "aimage_generation" and events[0].n == 2


def test_a_streamed_generation_counts_its_partial_images(fake, upstream, monkeypatch):
    events = events_of(monkeypatch)
    with tracking.image_generation(
        prompt=PROMPT,
        model="gpt-image-2",
        size="1024x1024",
        quality="low",
        stream=True,
        partial_images=2,
        **upstream,
    ) as stream:
        types = [item.type for item in stream]
    assert types == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert tracking.flush(10)
    # 200 output tokens plus 100 per partial image: 400; (5 * 5 + 400 * 30) / 1M = $0.012025
    assert PARTIAL_IMAGE_OUTPUT_TOKENS == 100
    assert stream.cost_usd == Decimal("0.012025")
    (event,) = events
    assert event.call_type == "image_generation" and event.status == "success"


def test_an_edit_of_the_same_prompt_pays_for_its_input_image(fake, upstream):
    response = tracking.image_edit(
        image=make_png(), prompt=PROMPT, model="gpt-image-2", size="1024x1024", quality="low",
        **upstream,
    )  # fmt: skip
    # The fake counts 323 input image tokens per image:
    # (5 * 5 + 323 * 8 + 200 * 30) / 1M = (25 + 2,584 + 6,000) / 1M = $0.008609
    assert fake.requests[-1].path == "/v1/images/edits"
    assert response.cost_usd == Decimal("0.008609")


def test_generation_rules_are_checked_before_sending(fake, upstream):
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as moderation:
        tracking.image_generation(prompt=PROMPT, model="gpt-image-2", moderation="high", **upstream)
    assert moderation.value.param == "moderation"
    with pytest.raises(tracking.ValidationError) as fidelity:
        parse_call(
            operation="image_generation", prompt=PROMPT, model="gpt-image-2", input_fidelity="high"
        )
    assert fidelity.value.param == "input_fidelity"
    with pytest.raises(tracking.ValidationError) as image:
        parse_call(operation="image_generation", prompt=PROMPT, image=make_png())
    assert image.value.param == "image"
    with pytest.raises(tracking.ValidationError):
        tracking.image_generation(prompt="", model="gpt-image-2", **upstream)
    # dall-e-2's family has no generation rule, but it still does not stream: it was sent
    with pytest.raises(tracking.UnsupportedParamsError) as stream:
        tracking.image_generation(prompt=PROMPT, model="dall-e-2", stream=True, **upstream)
    assert stream.value.param == "stream"
    assert fake.hits == hits  # nothing was sent


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("operation", "param", "value"),
    [
        ("generation", "input_fidelity", "high"),
        ("generation", "mask", b"m"),
    ],
)
def test_the_other_operations_parameter_is_a_validation_error_not_a_type_error(
    fake, upstream, recorder, use_async, operation, param, value
):
    """``image_generation(input_fidelity=...)`` raised a plain ``TypeError`` out of the
    signature, unrecorded, while ``parse_call`` and the proxy refuse it as a ``ValidationError``
    (a 400 naming the parameter)."""
    hits = fake.hits
    if operation == "edit":
        kwargs: dict[str, Any] = {"image": make_png(), "prompt": PROMPT}
        call = tracking.aimage_edit if use_async else tracking.image_edit
    else:
        kwargs = {"prompt": PROMPT}
        call = tracking.aimage_generation if use_async else tracking.image_generation
    with pytest.raises(tracking.ValidationError) as caught:
        _run(call, use_async, model="gpt-image-2", **{param: value}, **kwargs, **upstream)
    assert (caught.value.param, caught.value.rule) == (param, "unsupported")
    assert fake.hits == hits  # nothing was sent
    (event,) = recorder.events
    assert event.status == "failure" and event.error_type == "validation_error"
    # a name neither operation has is still a TypeError, as for any function
    with pytest.raises(TypeError, match="colour"):
        _run(call, use_async, model="gpt-image-2", colour="red", **kwargs, **upstream)


def _run(call: Any, use_async: bool, **kwargs: Any) -> Any:
    """``call(**kwargs)``, run to its end when it is a coroutine function."""
    outcome = call(**kwargs)
    return asyncio.run(outcome) if use_async else outcome


def test_a_router_refuses_the_other_operations_parameter_as_a_validation_error(fake, upstream):
    router = tracking.Router(
        [{"model_name": "images", "litellm_params": {"model": "gpt-image-2", **upstream}}]
    )
    with pytest.raises(tracking.ValidationError) as caught:
        router.image_generation(prompt=PROMPT, model="images", input_fidelity="high")
    assert caught.value.param == "input_fidelity"


def test_a_provider_that_cannot_generate_gives_the_typed_error(monkeypatch):
    events = events_of(monkeypatch)
    with pytest.raises(tracking.UnsupportedOperationError) as refused:
        tracking.image_generation(prompt=PROMPT, model="stability/inpaint", api_key="sk-unused")
    error = refused.value
    assert isinstance(error, tracking.ValidationError)  # a 400 where the proxy answers it
    assert error.operation == "image_generation" and error.provider == "stability"
    assert error.error_type == "unsupported_operation" and error.param == "model"
    assert tracking.flush(10)
    (event,) = events
    assert event.status == "failure" and event.error_type == "unsupported_operation"
    assert event.cost_usd == 0  # never sent, never billed


def test_azure_generates_on_its_deployment_route(fake, monkeypatch):
    response = tracking.image_generation(
        prompt=PROMPT,
        model="azure/gpt-image-2",
        quality="low",
        size="1024x1024",
        api_base=fake.base_url,
        api_key=API_KEY,
        api_version="2025-04-01-preview",
    )
    received = fake.requests[-1]
    assert received.path == "/openai/deployments/gpt-image-2/images/generations"
    assert received.query == {"api-version": "2025-04-01-preview"}
    assert response.cost_usd == Decimal("0.006025")


# -- the router ---------------------------------------------------------------------------------


@pytest.fixture
def failing_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], faults=["status=503;always"]) as server:
        yield server


def test_a_routed_generation_falls_back_to_the_next_group(fake, failing_fake, monkeypatch):
    events = events_of(monkeypatch)
    upstream = {"model": "gpt-image-2", "api_key": API_KEY}
    router = tracking.Router(
        [
            {"model_name": "primary", "litellm_params": {**upstream, "api_base": failing_fake.url}},
            {"model_name": "backup", "litellm_params": {**upstream, "api_base": fake.url}},
            {
                "model_name": "edits-only",
                "litellm_params": {"model": "stability/inpaint", "api_key": "sk-unused"},
            },
        ],
        fallbacks=[{"primary": ["backup"]}, {"edits-only": ["backup"]}],
        num_retries=0,
    )
    with router:
        response = router.image_generation(
            prompt=PROMPT, model="primary", size="1024x1024", quality="low"
        )
        assert failing_fake.hits == 1 and fake.requests[-1].path == "/v1/images/generations"
        assert response.cost_usd == Decimal("0.006025")
        # A group whose provider cannot generate hands the call to its fallback.
        served = asyncio.run(
            router.aimage_generation(prompt=PROMPT, model="edits-only", quality="low")
        )
        assert served.images_returned == 1
    assert tracking.flush(10)
    first, second = events
    assert first.call_type == "image_generation" and first.fallback_from == ("primary",)
    assert first.model_group == "backup" and first.attempts == 2
    assert second.call_type == "aimage_generation" and second.fallback_from == ("edits-only",)


def _mixed_group(fake: FakeOpenAI, **edit_only: Any) -> list[dict[str, Any]]:
    """Group ``mixed``: an edit-only deployment (``sd``, Stability, with ``edit_only``'s
    settings) beside one that can generate (``oa``, the fake)."""
    return [
        {
            "model_name": "mixed",
            "litellm_params": {"model": "stability/inpaint", "api_key": "sk-unused", **edit_only},
            "model_info": {"id": "sd"},
        },
        {
            "model_name": "mixed",
            "litellm_params": {"model": "gpt-image-2", "api_key": API_KEY, "api_base": fake.url},
            "model_info": {"id": "oa"},
        },
    ]


def test_a_routed_generation_goes_to_the_deployment_of_its_group_that_can_make_it(
    fake, failing_fake, monkeypatch
):
    """A group that mixes an edit-only deployment (Stability) with one that can generate:
    a generation routed to the edit-only one skipped the whole group (its other deployment
    never tried), so the call failed, or went to a fallback, whenever that one was picked
    (here always, by ``order``); in a fallback group likewise."""
    events = events_of(monkeypatch)
    router = tracking.Router(
        [
            *_mixed_group(fake, order=1),  # the edit-only one drawn first, had it the choice
            {
                "model_name": "primary",
                "litellm_params": {
                    "model": "gpt-image-2",
                    "api_key": API_KEY,
                    "api_base": failing_fake.url,
                },
                "model_info": {"id": "down"},
            },
        ],
        fallbacks=[{"primary": ["mixed"]}],
        num_retries=0,
    )
    before = failing_fake.hits
    with router:
        direct = router.image_generation(
            prompt=PROMPT, model="mixed", size="1024x1024", quality="low"
        )
        fallen = asyncio.run(
            router.aimage_generation(
                prompt=PROMPT, model="primary", size="1024x1024", quality="low"
            )
        )
        assert router.cooling() == {}  # nothing was sent to the edit-only deployment
    assert direct.cost_usd == fallen.cost_usd == Decimal("0.006025")
    assert failing_fake.hits == before + 1
    assert tracking.flush(10)
    first, second = events
    assert (first.model_group, first.deployment_id, first.attempts, first.retries) == (
        "mixed",
        "oa",
        1,
        0,
    )
    assert (second.model_group, second.deployment_id, second.fallback_from) == (
        "mixed",
        "oa",
        ("primary",),
    )
    assert second.attempts == 2 and second.status == first.status == "success"


def test_a_generation_takes_nothing_of_an_edit_only_deployments_rpm(fake):
    """A generation drawn to the edit-only deployment of a mixed group was counted in its rpm
    (the minute's requests) before being turned away: generations used up the limit its edits
    have, and they were refused ("at their rpm limit") without a request sent."""
    router = tracking.Router(
        _mixed_group(fake, rpm=5),
        routing_strategy=tracking.router.LowestCost(
            lambda deployment, call: Decimal(0 if deployment.id == "sd" else 1)
        ),
    )

    def three_generations() -> dict[str, int]:  # and the minute's counts
        for _ in range(3):
            router.image_generation(prompt=PROMPT, model="mixed", size="1024x1024", quality="low")
        return dict(router.state.snapshot(["sd", "oa"]).rpm)

    with router:
        assert in_one_minute(three_generations) == {"sd": 0, "oa": 3}


def test_a_generation_whose_capable_deployment_is_cooling_is_told_to_come_back(fake):
    """The group's deployment that can generate is cooling down, the other is edit-only: the
    call is a 429 with ``retry_after`` (it will be served once the cooldown ends), not a 400
    saying the group cannot make generations."""
    router = tracking.Router(
        _mixed_group(fake),
        cooldown_time=30,
    )
    with router:
        router.cool_down(router.groups["mixed"][1], "test")
        with pytest.raises(tracking.NoDeploymentAvailableError) as refused:
            router.image_generation(prompt=PROMPT, model="mixed")
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 30


def test_a_routed_generation_with_no_capable_group_raises_the_typed_error():
    router = tracking.Router(
        [
            {
                "model_name": "edits-only",
                "litellm_params": {"model": "stability/erase", "api_key": "sk-test-0123456789"},
            }
        ]
    )
    with router, pytest.raises(tracking.UnsupportedOperationError):
        router.image_generation(prompt=PROMPT, model="edits-only")


# -- the ledger: edits and generations apart, by user -------------------------------------------


def test_spend_splits_edits_and_generations_by_user(ledger, upstream, monkeypatch):
    monkeypatch.setattr(tracking, "success_callback", [ledger])
    monkeypatch.setattr(tracking, "failure_callback", [ledger])
    low = {"model": "gpt-image-2", "size": "1024x1024", "quality": "low", **upstream}
    tracking.image_edit(image=make_png(), prompt=PROMPT, user="alice", **low)
    tracking.image_generation(prompt=PROMPT, user="alice", **low)
    asyncio.run(tracking.aimage_generation(prompt=PROMPT, user="alice", **low))
    tracking.image_generation(prompt=PROMPT, user="bob", **low)
    assert ledger.flush(10)
    with ledger.engine.connect() as conn:
        call_types = sorted(conn.execute(sa.select(spend_logs.c.call_type)).scalars())
    assert call_types == ["aimage_generation", "image_edit", "image_generation", "image_generation"]

    # Each generation: $0.006025; the edit adds 323 input image tokens at $8: $0.008609.
    alice = {r.key: r for r in query_spend(ledger.engine, user="alice", by="operation")}
    assert set(alice) == {"image_edit", "image_generation"}
    assert alice["image_edit"].cost_usd == Decimal("0.008609")
    assert alice["image_generation"].requests == 2
    assert alice["image_generation"].cost_usd == 2 * Decimal("0.006025")  # $0.012050
    generations = query_spend(ledger.engine, by="user", operation="image_generation")
    assert [(r.key, r.cost_usd) for r in generations] == [
        ("alice", Decimal("0.012050")),
        ("bob", Decimal("0.006025")),
    ]
    (everything,) = query_spend(ledger.engine)
    assert everything.cost_usd == Decimal("0.008609") + 3 * Decimal("0.006025")  # $0.026684
    with pytest.raises(tracking.ValidationError):
        query_spend(ledger.engine, operation="image_variation")

    if ledger.engine.dialect.name == "sqlite":  # the CLI reads the same file
        out = io.StringIO()
        spend_command(
            str(ledger.engine.url), user="alice", since=None, until=None, by="operation",
            fmt="json", out=out,
        )  # fmt: skip
        rows = {row["operation"]: row["cost_usd"] for row in json.loads(out.getvalue())}
        assert rows == {"image_generation": "0.0120500000", "image_edit": "0.0086090000"}


# -- the proxy, with the official openai client ----------------------------------------------


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("generations-proxy")
    config = {
        "model_list": [
            {
                "model_name": "gpt-image-2",
                "litellm_params": {
                    "model": "gpt-image-2",
                    "api_key": API_KEY,
                    "api_base": fake.url,
                },
            },
            {
                "model_name": "inpaint",
                "litellm_params": {"model": "stability/inpaint", "api_key": "sk-unused"},
            },
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{folder / 'ledger.db'}",
        },
    }
    with ProxyProcess(write_config(folder / "config.yaml", config)) as process:
        yield process


def test_openai_client_generates_through_the_proxy(proxy):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.images.with_raw_response.generate(
            model="gpt-image-2", prompt=PROMPT, size="1024x1024", quality="low", user="carol"
        )
    result = raw.parse()
    assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
    assert result.usage.input_tokens_details.image_tokens == 0
    request_id = raw.headers["x-tracking-request-id"]
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.006025")
    row = ledger_row(proxy, request_id)
    assert row["call_type"] == "aimage_generation" and row["end_user"] == "carol"
    assert row["status"] == "success" and Decimal(str(row["cost_usd"])) == Decimal("0.006025")


def test_async_openai_client_generates_through_the_proxy(proxy):
    async def main() -> Any:
        async with openai.AsyncOpenAI(
            base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0
        ) as client:
            return await client.images.generate(
                model="gpt-image-2", prompt=PROMPT, n=2, size="1024x1536", quality="medium"
            )

    result = asyncio.run(main())
    assert len(result.data) == 2 and result.size == "1024x1536"
    # (5 * 5 + 2 * 1,367 * 30) / 1M = $0.082045, as through the SDK
    assert result.usage.output_tokens == 2 * 1367


def test_openai_client_streams_a_generation_through_the_proxy(proxy):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        stream = client.images.generate(
            model="gpt-image-2",
            prompt=PROMPT,
            size="1024x1024",
            quality="low",
            stream=True,
            partial_images=1,
        )
        events = list(stream)
        request_id = stream.response.headers["x-tracking-request-id"]
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert isinstance(events[-1], openai.types.ImageGenCompletedEvent)
    row = ledger_row(proxy, request_id)
    # 200 + 100 output tokens: (5 * 5 + 300 * 30) / 1M = $0.009025
    assert Decimal(str(row["cost_usd"])) == Decimal("0.009025")
    assert row["call_type"] == "aimage_generation"


def test_a_generation_answered_with_urls_serves_the_upstream_image(proxy, fake):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        result = client.images.generate(
            model="gpt-image-2", prompt=PROMPT, quality="low", response_format="url"
        )
    assert "response_format" not in fake.requests[-1].fields  # GPT image models refuse it
    url = result.data[0].url
    assert url is not None and result.data[0].b64_json is None
    upstream_png = base64.b64decode(fake.state.responses[-1]["data"][0]["b64_json"])
    assert httpx.get(url, timeout=10).content == upstream_png


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"prompt": "x", "prompt": "y", "model": "gpt-image-2"}', "prompt"),
        (b'{"prompt": "x", "model": "gpt-image-2", "n": NaN}', None),
        (b'{"prompt": "x", "model": "gpt-image-2", "n": "2"}', "n"),
        (b'{"prompt": "x", "model": "gpt-image-2", "n": true}', "n"),
        (b'{"prompt": "x", "model": "gpt-image-2", "stream": "yes"}', "stream"),
        (b'{"prompt": 7, "model": "gpt-image-2"}', "prompt"),
        (b'{"prompt": "x", "model": "gpt-image-2", "image": "abc"}', "image"),
        (b'{"prompt": "x", "model": "gpt-image-2", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
        (b'{"prompt": "x", "model": "gpt-image-2", "n": 1' + b"0" * 5000 + b"}", None),
        (b'{"prompt": "", "model": "gpt-image-2"}', "prompt"),
        (b'{"prompt": "x", "model": "gpt-image-2", "moderation": "off"}', "moderation"),
    ],
)
def test_hostile_json_gets_openai_shaped_400s(proxy, body, param):
    answer = httpx.post(
        f"{proxy.url}/v1/images/generations",
        content=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def generate_raw(proxy: ProxyProcess, path: str = "/v1/images/generations", **body: Any):
    """A generation posted by hand with the master key (``data=`` sends a form instead)."""
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    return httpx.post(f"{proxy.url}{path}", headers=headers, timeout=10, **body)


def test_a_multipart_body_and_an_edit_only_provider_are_refused_by_name(proxy):
    form = generate_raw(proxy, "/images/generations", data={"prompt": "x", "model": "gpt-image-2"})
    assert form.status_code == 400 and form.json()["error"]["code"] == "invalid_content_type"
    unsupported = generate_raw(proxy, json={"prompt": "x", "model": "inpaint"})
    assert unsupported.status_code == 400
    assert unsupported.json()["error"]["code"] == "unsupported_operation"
    assert unsupported.headers["x-tracking-request-id"]
    unknown = generate_raw(proxy, json={"prompt": "x", "model": "no-such-model"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    anonymous = httpx.post(
        f"{proxy.url}/v1/images/generations", json={"prompt": "x", "model": "gpt-image-2"}
    )
    assert anonymous.status_code == 401


def test_the_openapi_document_describes_the_generation_routes(proxy):
    document = httpx.get(f"{proxy.url}/openapi.json", timeout=10).json()
    for path in ("/v1/images/generations", "/images/generations"):
        operation = document["paths"][path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert "moderation" in schema["properties"] and schema["required"] == ["prompt"]


def test_the_fake_refuses_what_openai_refuses_for_generations(fake):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{fake.url}/images/generations"
    fidelity = httpx.post(
        url, json={"prompt": "x", "model": "gpt-image-2", "input_fidelity": "high"}, headers=headers
    )
    assert fidelity.status_code == 400 and fidelity.json()["error"]["param"] == "input_fidelity"
    size = httpx.post(url, json={"prompt": "x", "model": "gpt-image-1", "size": "2048x2048"},
                      headers=headers)  # fmt: skip
    assert size.status_code == 400 and size.json()["error"]["param"] == "size"
    assert httpx.post(url, json={"prompt": "x"}).status_code == 401


def test_gemini_generates_from_the_prompt_alone():
    from tracking.testing.fake_gemini import FakeGemini

    with FakeGemini() as gemini:
        response = tracking.image_generation(
            prompt=PROMPT, model="gemini/gemini-3.1-flash-image", api_base=gemini.url,
            api_key="gemini-key",
        )  # fmt: skip
        body = gemini.requests[-1].body
    parts = body["contents"][0]["parts"]
    assert parts == [{"text": PROMPT}]
    assert response.images_returned == 1 and response.cost_usd is not None


def test_the_price_file_records_which_operations_a_price_was_read_for():
    from tracking.pricing import find_entry
    from tracking.pricing.table import parse_price_data

    entry = find_entry(["gpt-image-2"], date(2026, 12, 3))
    assert entry is not None and entry.operations == {"image_edit", "image_generation"}
    figure = {"usd": "30", "source": "https://example.test/p", "retrieved": "2026-12-03",
              "confidence": "official"}  # fmt: skip
    raw = {"model": "m", "effective_from": None, "effective_to": None, "shutdown": None,
           "tokens_per_million": {"output_image": figure}}  # fmt: skip
    provenance = {k: v for k, v in figure.items() if k != "usd"}
    document = {"schema": 1, "currency": "USD"}
    generation_only = {**raw, "operations": {"image_generation": provenance}}
    parsed = parse_price_data({**document, "entries": [generation_only]}, origin="test")
    assert parsed["m"][0].operations == {"image_generation"}
    for bad in ({"image_variation": provenance}, {"image_generation": {"source": "nowhere"}}, {}):
        with pytest.raises(tracking.ConfigurationError):
            parse_price_data({**document, "entries": [{**raw, "operations": bad}]}, origin="test")
