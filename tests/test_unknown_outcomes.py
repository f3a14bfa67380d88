"""Billed-but-unknown outcomes get rows with an estimate (issue 18, finding 4).

An attempt sent whole whose answer never came back whole (a read timeout, a connection dropped
after sending, an unreadable 2xx) may have been billed: its failed call is recorded with the
most it could have cost per such attempt and ``cost_source="estimate"``, in the event and in the
ledger, never as $0; a call that succeeds after such an attempt costs its own price plus the
estimate. Attempts that cannot have been billed (an HTTP error answer, a connection refused)
stay at $0 as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal

import pytest

import tracking
from tests.conftest import API_KEY, edit_with_fault, make_png
from tests.recorder import record_events
from tracking import flow
from tracking.integrations.sql import SqlLedger
from tracking.pricing.estimate import estimate_call_cost
from tracking.testing import FakeOpenAI

PNG = make_png(16, 16)
PARAMS = {"model": "gpt-image-1", "prompt": "a red hat", "quality": "low", "size": "1024x1024"}


@pytest.fixture(scope="module")
def faulty() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(flow, "_INITIAL_BACKOFF", 0.001)


def _call(fake: FakeOpenAI, fault: str, *, use_async: bool, **kwargs):
    return edit_with_fault(fake, fault, use_async=use_async, **{"image": PNG, **PARAMS, **kwargs})


def _one_attempt() -> Decimal:
    each = estimate_call_cost(
        "gpt-image-1", PARAMS["size"], PARAMS["quality"], prompt_chars=9, input_images=1
    )
    assert each.usd is not None and each.usd > 0
    return each.usd


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("fault", "error", "kwargs"),
    [
        ("latency=3", tracking.APITimeoutError, {"timeout": 0.3}),  # read timeout after sending
        ("drop", tracking.APIConnectionError, {}),  # dropped after the request was read
        ("malformed", tracking.APIResponseError, {}),  # a 2xx we cannot read
    ],
)
def test_an_attempt_sent_but_unanswered_is_recorded_with_an_estimate(
    faulty, monkeypatch, tmp_path, use_async, fault, error, kwargs
):
    recorder = record_events(monkeypatch)
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}", mode="durable")
    monkeypatch.setattr(tracking, "callbacks", [ledger])
    retries = 0 if error is tracking.APIResponseError else 1  # an unreadable 2xx is not retried
    try:
        with pytest.raises(error):
            _call(faulty, fault, use_async=use_async, max_retries=retries, **kwargs)
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    event = recorder.last
    attempts = retries + 1
    assert event.status == "failure" and event.attempts == attempts
    assert event.cost_source == "estimate" and event.cost_usd and event.cost_usd > 0
    # an unreadable 2xx is estimated as a dropped answer is: the input allowance included
    assert event.cost_usd == _one_attempt() * attempts
    assert event.price_ref and event.price_ref.startswith("estimate:outcome-unknown:packaged:")
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        (row,) = db.execute("SELECT status, cost_usd, cost_source FROM spend_logs").fetchall()
    assert row[0] == "failure" and row[2] == "estimate"
    assert Decimal(str(row[1])) == event.cost_usd


def test_an_error_answer_is_still_not_billed(faulty, monkeypatch):
    recorder = record_events(monkeypatch)
    with pytest.raises(tracking.BadRequestError):
        _call(faulty, "status=400", use_async=False, max_retries=0)
    assert recorder.last.cost_usd == 0 and recorder.last.cost_source == "table"


def test_an_unpriced_model_with_an_unknown_outcome_stays_unpriced_never_zero(monkeypatch):
    recorder = record_events(monkeypatch)
    unpriced = "image-model-without-a-price"
    with (
        FakeOpenAI(api_keys=[API_KEY], extra_models=[unpriced]) as fake,
        pytest.raises(tracking.APIConnectionError),
    ):
        _call(fake, "drop", use_async=False, max_retries=0, model=unpriced)
    assert recorder.last.cost_usd is None and recorder.last.cost_source == "unpriced"


def test_a_success_after_an_unanswered_attempt_adds_the_estimate(monkeypatch):
    recorder = record_events(monkeypatch)
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=3"]) as fake:  # the first request only
        # the second attempt is answered within the timeout (0.5 s was near what a loaded
        # machine took); the first after 3 s, past it whatever the machine
        response = tracking.image_edit(
            image=PNG, api_base=fake.url, api_key=API_KEY, timeout=2, max_retries=1, **PARAMS
        )
    event = recorder.last
    assert event.status == "success" and event.attempts == 2
    own = event.cost_usd - _one_attempt()
    assert own > 0  # the answered attempt's own price (usage), plus one estimate
    assert event.cost_source == "estimate" and response.cost_usd == event.cost_usd
    assert event.price_ref and "estimate:outcome-unknown" in event.price_ref


def test_a_lost_attempt_on_an_unpriced_model_flags_the_priced_fallback_as_an_estimate(monkeypatch):
    """The first attempt (a model without a price) is lost, maybe billed; a priced fallback
    serves. The call's cost is the fallback's own price, a lower bound: flagged as an estimate
    that names the unpriced part, not passed off as exact usage."""
    recorder = record_events(monkeypatch)
    unpriced = "image-model-without-a-price"
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[unpriced], faults=["drop"]) as fake:
        router = tracking.Router(
            model_list=[
                {
                    "model_name": "local",
                    "litellm_params": {"model": unpriced, "api_key": API_KEY, "api_base": fake.url},
                },
                {
                    "model_name": "priced",
                    "litellm_params": {
                        "model": "gpt-image-2",
                        "api_key": API_KEY,
                        "api_base": fake.url,
                    },
                },
            ],
            fallbacks=[{"local": ["priced"]}],
            num_retries=0,
        )
        response = router.image_edit(
            model="local", image=PNG, prompt="a red hat", quality="low", size="1024x1024"
        )
    event = recorder.last
    assert event.status == "success" and event.attempts == 2
    assert event.cost_usd is not None and event.cost_usd > 0
    assert response.cost_usd == event.cost_usd
    assert event.cost_source == "estimate"
    assert event.price_ref is not None
    assert f"estimate:outcome-unknown:unpriced:{unpriced}" in event.price_ref
    assert "gpt-image-2" in event.price_ref  # the fallback's own price is in the sum
