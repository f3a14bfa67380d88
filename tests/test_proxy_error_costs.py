"""Every error answer of an image call says what the call cost, as its ledger row records it.

A ``tracking serve`` subprocess (SQLite ledger) in front of a fake OpenAI upstream of its own
whose queued faults each test injects, and a fake Gemini upstream that blocks every answer (a
refusal Google bills). A failure the upstream may have billed carries its estimate or reported
charge with its source; one that billed nothing, and a refusal before anything was sent, carry
``0`` with ``x-tracking-cost-source: not-billed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, ledger_row, write_config
from tracking.testing import FakeOpenAI
from tracking.testing.fake_gemini import FakeGemini

GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
PNG = make_png(32, 32)
COST_HEADERS = ("x-tracking-response-cost", "x-tracking-cost-source", "x-litellm-response-cost")


def _deployment(name: str, model: str, api_base: str, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": model, "api_key": API_KEY, "api_base": api_base, **params},
    }


@pytest.fixture(scope="module")
def own_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(own_fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("error-costs")
    with FakeGemini(api_keys=[GEMINI_KEY], faults=["code=blocked;always"]) as gemini:
        blocked = _deployment("blocked", "gemini/gemini-3.1-flash-image", gemini.url)
        blocked["litellm_params"]["api_key"] = GEMINI_KEY
        document = {
            "model_list": [
                _deployment("solo", "gpt-image-2", own_fake.url),
                _deployment("hasty", "gpt-image-2", own_fake.url, timeout=0.5),
                blocked,
            ],
            "router_settings": {"num_retries": 0},
            "general_settings": {
                "master_key": MASTER_KEY,
                "database_url": f"sqlite:///{folder / 'ledger.db'}",
            },
        }
        with ProxyProcess(write_config(folder / "config.yaml", document)) as process:
            yield process


def _edit(proxy: ProxyProcess, model: str = "solo", key: str | None = MASTER_KEY) -> httpx.Response:
    fields = {"model": model, "prompt": "a hat"}
    if model != "blocked":  # (Gemini takes neither)
        fields.update(quality="low", size="1024x1024")
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        data=fields,
        files={"image": ("photo.png", PNG, "image/png")},
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=30,
    )


def _costs_match_the_row(answer: httpx.Response, proxy: ProxyProcess) -> dict[str, Any]:
    """The answer's cost headers say what its ledger row records; returns the row."""
    row = ledger_row(proxy, answer.headers["x-tracking-request-id"])
    assert row["status"] == "failure"
    assert Decimal(answer.headers["x-tracking-response-cost"]) == row["cost_usd"]
    assert answer.headers["x-litellm-response-cost"] == answer.headers["x-tracking-response-cost"]
    return row


@pytest.mark.parametrize(
    ("fault", "model", "status"),
    [
        ("drop", "solo", 502),  # sent whole, the answer lost: maybe billed
        ("malformed", "solo", 502),  # a 2xx that could not be read: billed
        ("latency=3", "hasty", 504),  # timed out after the upstream had the whole request
    ],
)
def test_a_failure_the_upstream_may_have_billed_answers_its_estimate(
    proxy, own_fake, fault, model, status
):
    own_fake.inject(fault)
    answer = _edit(proxy, model)
    assert answer.status_code == status, answer.text
    row = _costs_match_the_row(answer, proxy)
    assert row["cost_usd"] > 0 and row["cost_source"] == "estimate"
    assert answer.headers["x-tracking-cost-source"] == "estimate"


def test_a_refusal_that_reports_what_it_billed_answers_that_charge(proxy):
    answer = _edit(proxy, "blocked")
    assert answer.status_code == 400, answer.text
    row = _costs_match_the_row(answer, proxy)
    assert row["cost_usd"] > 0 and row["cost_source"] == "usage"
    assert answer.headers["x-tracking-cost-source"] == "usage"


@pytest.mark.parametrize(("fault", "status"), [("status=500", 502), ("status=400", 400)])
def test_an_error_answer_that_billed_nothing_says_not_billed(proxy, own_fake, fault, status):
    own_fake.inject(fault)
    answer = _edit(proxy)
    assert answer.status_code == status, answer.text
    row = _costs_match_the_row(answer, proxy)
    assert row["cost_usd"] == 0 and row["price_ref"] == "failed-call:not-billed"
    assert answer.headers["x-tracking-response-cost"] == "0"
    assert answer.headers["x-tracking-cost-source"] == "not-billed"


@pytest.mark.parametrize(
    ("model", "key", "status"),
    [("no-such-model", MASTER_KEY, 404), ("solo", None, 401), ("solo", "sk-wrong", 401)],
)
def test_a_refusal_before_the_call_says_not_billed(proxy, own_fake, model, key, status):
    before = own_fake.hits
    answer = _edit(proxy, model, key)
    assert answer.status_code == status, answer.text
    assert own_fake.hits == before
    assert "x-tracking-request-id" not in answer.headers  # no call, no ledger row
    assert answer.headers["x-tracking-response-cost"] == "0"
    assert answer.headers["x-tracking-cost-source"] == "not-billed"
    assert answer.headers["x-litellm-response-cost"] == "0"


def test_other_routes_answer_no_cost_headers(proxy):
    answer = httpx.get(f"{proxy.url}/v1/models", timeout=10)
    assert answer.status_code == 401
    assert not any(name in answer.headers for name in COST_HEADERS)


def _row_when_written(proxy: ProxyProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return ledger_row(proxy, request_id)
        except ValueError:  # not there yet: a stream's row follows its relay's end
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_stream_broken_after_partial_images_says_its_cost_in_the_error_event(proxy, own_fake):
    own_fake.inject("break_after=2")
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/images/edits",
        data={"model": "solo", "prompt": "a hat", "stream": "true", "partial_images": "2"},
        files={"image": ("photo.png", PNG, "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    ) as answer:
        assert answer.status_code == 200
        lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    error = json.loads(lines[-1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["code"] == "stream_interrupted"
    tracking = error["tracking"]
    assert tracking["request_id"] == answer.headers["x-tracking-request-id"]
    row = _row_when_written(proxy, tracking["request_id"])
    assert row["status"] == "failure" and row["cost_source"] == "estimate"
    assert Decimal(tracking["response_cost"]) == row["cost_usd"] > 0
    assert tracking["cost_source"] == "estimate"
