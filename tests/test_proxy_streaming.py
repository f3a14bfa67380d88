"""Streamed edits through the proxy: official clients unchanged, ``curl -N``, and the ledger.

The proxy runs as a real subprocess (``tracking serve``) in front of fake upstreams on loopback:
one that streams normally, one that pauses between events, one that breaks off after the first
event. Each streamed call must get exactly one ledger row: priced from the completed event's
usage, or marked and priced by estimate when the client or the upstream went away.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.services import unavailable
from tracking.integrations.sql import create_ledger_engine, spend_logs
from tracking.pricing.estimate import estimate_incomplete_stream
from tracking.request import parse_call
from tracking.testing import FakeOpenAI

CONFIG = """\
model_list:
  - model_name: gpt-image-2
    litellm_params: {{model: gpt-image-2, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake}"}}
  - model_name: paused
    litellm_params: {{model: gpt-image-2, api_key: os.environ/OPENAI_API_KEY, api_base: "{slow}"}}
  - model_name: breaks
    litellm_params:
      {{model: gpt-image-2, api_key: os.environ/OPENAI_API_KEY, api_base: "{broken}",
       max_retries: 0}}
  - model_name: drops
    litellm_params:
      {{model: gpt-image-2, api_key: os.environ/OPENAI_API_KEY, api_base: "{dropping}",
       max_retries: 0}}
  - model_name: dall-e-2
    litellm_params: {{model: dall-e-2, api_key: os.environ/OPENAI_API_KEY, api_base: "{fake}"}}

# Test prices (USD per million tokens, per image) so the expected costs are worked out by hand.
prices:
  gpt-image-2:
    tokens_per_million: {{input_text: "5", input_image: "8", output_image: "30"}}
    per_image: {{low: {{1024x1024: "0.006"}}, medium: {{1024x1024: "0.053"}},
                high: {{1024x1024: "0.211"}}}}

router_settings:
  num_retries: 0

general_settings:
  master_key: os.environ/PROXY_MASTER_KEY
"""
MILLION = Decimal(1_000_000)


@pytest.fixture(scope="module")
def slow_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], faults=["event_delay=0.3;always"]) as server:
        yield server


@pytest.fixture(scope="module")
def broken_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], faults=["break_after=1;always"]) as server:
        yield server


@pytest.fixture(scope="module")
def dropping_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], faults=["drop;always"]) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    fake: FakeOpenAI,
    slow_fake: FakeOpenAI,
    broken_fake: FakeOpenAI,
    dropping_fake: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("proxy-stream")
    config = folder / "config.yaml"
    config.write_text(
        CONFIG.format(
            fake=fake.url, slow=slow_fake.url, broken=broken_fake.url, dropping=dropping_fake.url
        )
    )
    env = {"OPENAI_API_KEY": API_KEY, "PROXY_MASTER_KEY": MASTER_KEY}
    with ProxyProcess(config, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream-images") / "photo.png"
    path.write_bytes(make_png(96, 96))
    return path


def ledger_rows(proxy: ProxyProcess, request_id: str) -> list[dict[str, Any]]:
    engine = create_ledger_engine(f"sqlite:///{proxy.config.parent / 'tracking.db'}")
    try:
        with engine.connect() as connection:
            query = spend_logs.select().where(spend_logs.c.request_id == request_id)
            return [dict(row) for row in connection.execute(query).mappings()]
    finally:
        engine.dispose()


def ledger_row(proxy: ProxyProcess, request_id: str, deadline: float = 10.0) -> dict[str, Any]:
    """The call's one ledger row, waiting for it (a disconnected call's row follows its cleanup)."""
    end = time.monotonic() + deadline
    while not (rows := ledger_rows(proxy, request_id)) and time.monotonic() < end:
        time.sleep(0.05)
    assert len(rows) == 1, f"{len(rows)} ledger rows for {request_id}"
    return rows[0]


def stream_edit(proxy: ProxyProcess, image_file: Path, **fields: str) -> Any:
    """A raw streamed edit through the proxy with httpx (a context manager)."""
    return httpx.stream(
        "POST",
        f"{proxy.url}/v1/images/edits",
        data={"stream": "true", **fields},
        files={"image": ("photo.png", image_file.read_bytes(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )


def hand_priced(usage: Any) -> Decimal:
    details = usage.input_tokens_details
    return (
        details.text_tokens * Decimal(5)
        + details.image_tokens * Decimal(8)
        + usage.output_tokens * Decimal(30)
    ) / MILLION


@pytest.mark.parametrize("partial_images", [0, 1, 3])
def test_openai_client_streams_through_the_proxy(proxy, image_file, partial_images):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        stream = client.images.edit(
            model="gpt-image-2",
            image=image_file,
            prompt="add a red hat",
            size="1024x1024",
            stream=True,
            partial_images=partial_images,
        )
        events, rows_at_completed = [], None
        request_id = stream.response.headers["x-tracking-request-id"]
        for event in stream:
            events.append(event)
            if event.type == "image_edit.completed":  # the row is written before it is sent
                rows_at_completed = len(ledger_rows(proxy, request_id))
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        upstream_id = stream.response.headers["x-upstream-request-id"]  # as a plain answer has
    assert [e.type for e in events] == ["image_edit.partial_image"] * partial_images + [
        "image_edit.completed"
    ]
    assert [e.partial_image_index for e in events[:-1]] == list(range(partial_images))
    completed = events[-1]
    assert isinstance(completed, openai.types.ImageEditCompletedEvent)
    row = ledger_row(proxy, request_id)
    assert row["status"] == "success" and row["model"] == "gpt-image-2"
    assert row["upstream_request_id"] == upstream_id and upstream_id.startswith("req_")
    assert Decimal(row["cost_usd"]) == hand_priced(completed.usage)
    assert row["output_tokens"] == completed.usage.output_tokens
    # what the call cost, as a plain answer's headers say it (they went out with the first event)
    assert set(completed.model_extra or {}) == {"tracking"}
    cost = completed.model_extra["tracking"]
    assert (cost["request_id"], cost["cost_source"]) == (request_id, row["cost_source"])
    assert Decimal(cost["response_cost"]) == Decimal(row["cost_usd"])
    assert rows_at_completed == 1


def test_async_openai_client_streams_through_the_proxy(proxy, image_file):
    async def main() -> tuple[list[Any], str]:
        async with openai.AsyncOpenAI(
            base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0
        ) as client:
            stream = await client.images.edit(
                model="gpt-image-2",
                image=image_file,
                prompt="add a red hat",
                size="1024x1024",
                stream=True,
                partial_images=2,
            )
            events = [event async for event in stream]
            return events, stream.response.headers["x-tracking-request-id"]

    events, request_id = asyncio.run(main())
    assert [e.type for e in events].count("image_edit.partial_image") == 2
    row = ledger_row(proxy, request_id)
    assert Decimal(row["cost_usd"]) == hand_priced(events[-1].usage)


def test_curl_no_buffer_sees_each_event(proxy, image_file):
    curl = shutil.which("curl")
    if curl is None:
        unavailable("curl is not installed")
    result = subprocess.run(
        [
            curl,
            "-sS",
            "-N",
            "-D",
            "-",
            f"{proxy.url}/v1/images/edits",
            "-H",
            f"Authorization: Bearer {MASTER_KEY}",
            "-F",
            "model=gpt-image-2",
            "-F",
            f"image=@{image_file};type=image/png",
            "-F",
            "prompt=add a red hat",
            "-F",
            "stream=true",
            "-F",
            "partial_images=2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert any(line.lower().startswith("content-type: text/event-stream") for line in lines)
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]


def test_the_first_event_is_relayed_before_the_upstream_has_finished(proxy, image_file):
    """Structural, not timed: the first event is in hand while the call's row is not yet written
    (it is written only after the completed event)."""
    with stream_edit(
        proxy, image_file, model="paused", prompt="slowly", partial_images="2"
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-tracking-request-id"]
        lines = response.iter_lines()
        assert next(lines) == "event: image_edit.partial_image"
        assert ledger_rows(proxy, request_id) == []
        rest = list(lines)
    assert "event: image_edit.completed" in rest
    assert ledger_row(proxy, request_id)["status"] == "success"


def test_a_client_that_disconnects_mid_stream_gets_a_marked_row(proxy, slow_fake, image_file):
    cut_before = slow_fake.state.streams_cut
    with stream_edit(
        proxy, image_file, model="paused", prompt="then leave", partial_images="3"
    ) as response:
        request_id = response.headers["x-tracking-request-id"]
        assert next(response.iter_lines()) == "event: image_edit.partial_image"
    # the client hung up after one event: the proxy ends the call and closes the upstream
    row = ledger_row(proxy, request_id)
    assert row["status"] == "failure"
    assert row["error_type"] in ("cancelled", "stream_closed")
    assert row["cost_source"] == "estimate" and Decimal(row["cost_usd"]) > 0
    end = time.monotonic() + 60
    while slow_fake.state.streams_cut == cut_before and time.monotonic() < end:
        time.sleep(0.05)
    assert slow_fake.state.streams_cut == cut_before + 1  # the upstream saw its client leave


def test_an_upstream_that_breaks_mid_stream_ends_with_an_error_event(proxy, image_file):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        stream = client.images.edit(
            model="breaks", image=image_file, prompt="p", stream=True, partial_images=3
        )
        request_id = stream.response.headers["x-tracking-request-id"]
        seen: list[str] = []
        with pytest.raises(openai.APIError, match="upstream"):
            seen.extend(event.type for event in stream)
    assert seen == ["image_edit.partial_image"]
    row = ledger_row(proxy, request_id)
    assert row["status"] == "failure" and row["error_type"] == "stream_interrupted"
    assert row["cost_source"] == "estimate" and Decimal(row["cost_usd"]) > 0
    # the one partial image received, not the 3 asked for: as a call asking for 1 (the config's
    # prices)
    tracking.register_prices(
        "gpt-image-2",
        tokens_per_million={"input_text": "5", "input_image": "8", "output_image": "30"},
        per_image={
            "low": {"1024x1024": "0.006"},
            "medium": {"1024x1024": "0.053"},
            "high": {"1024x1024": "0.211"},
        },
    )
    request, _ = parse_call(
        model="gpt-image-2",
        image=image_file.read_bytes(),
        prompt="p",
        stream=True,
        partial_images=1,
        quality="medium",  # asked for auto: the quality its partial image said (the fake's)
        api_key=API_KEY,
    )
    assert Decimal(row["cost_usd"]) == estimate_incomplete_stream(request)


def test_a_stream_sent_but_never_answered_gets_an_estimated_row(proxy, image_file):
    """The upstream read the request and hung up: it may bill the call, so its row is estimated."""
    with httpx.Client(timeout=30) as client:
        response = client.post(
            f"{proxy.url}/v1/images/edits",
            data={"model": "drops", "prompt": "p", "stream": "true"},
            files={"image": ("photo.png", image_file.read_bytes(), "image/png")},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
    assert response.status_code == 502 and "error" in response.json()
    row = ledger_row(proxy, response.headers["x-tracking-request-id"])
    assert row["status"] == "failure" and row["attempts"] == 1
    assert row["cost_source"] == "estimate" and Decimal(row["cost_usd"]) > 0
    assert row["price_ref"].startswith("estimate:outcome-unknown")


def test_a_model_that_does_not_stream_is_refused_as_json(proxy, image_file):
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "dall-e-2", "prompt": "p", "stream": "true"},
        files={"image": ("photo.png", image_file.read_bytes(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_parameter"


def test_time_to_first_image_is_exported(proxy, image_file):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        list(
            client.images.edit(
                model="gpt-image-2", image=image_file, prompt="p", stream=True, partial_images=1
            )
        )
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    counts = [
        line
        for line in text.splitlines()
        if line.startswith("image_edit_time_to_first_image_seconds_count{")
        and 'model="gpt-image-2"' in line
    ]
    assert counts and float(counts[0].rsplit(" ", 1)[1]) >= 1
