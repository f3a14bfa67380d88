"""A FLUX job BFL's moderation refuses (``Request Moderated``: the input, flagged before
processing; ``Content Moderated``: the output, flagged after it) is not charged: "You are not
charged for requests that return a moderated status. Only successful generations (status:
Ready) consume credits" (BFL's help center, https://help.bfl.ai/articles/4212278032, updated
2026-06-12, read 2026-12-06). The caller gets a ``ContentPolicyError``; the event, the error, the
ledger row and the proxy's answer say the call was not billed, and why, never a bare $0.
Everything runs against the fake BFL API on loopback and a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import make_png
from tests.proxy_support import edit_through_proxy
from tests.recorder import record_events
from tracking.errors import ContentPolicyError
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"
MODEL = "black_forest_labs/flux-kontext-pro"
#: the price_ref of a job the provider's moderation refused, which the provider does not charge
MODERATED_REF = "failed-call:not-billed:moderated"
FAULTS = ["code=moderated", "code=request_moderated"]


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=1) as server:
        yield server


def _edit(bfl: FakeBFL, fault: str) -> None:
    tracking.image_edit(
        image=make_png(64, 64),
        prompt="a hat",
        model=MODEL,
        api_base=bfl.url,
        api_key=BFL_KEY,
        extra_headers={"x-fake-fault": fault},
    )


@pytest.mark.parametrize("fault", FAULTS)
def test_a_moderated_job_is_a_content_policy_error_recorded_as_not_billed(monkeypatch, bfl, fault):
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError, match="Moderated") as caught:
        _edit(bfl, fault)
    event = events.last
    assert (event.status, event.error_type) == ("failure", "content_policy")
    assert event.cost_usd == Decimal(0) and event.cost_source == "table"
    assert event.price_ref == MODERATED_REF
    assert (caught.value.cost_usd, caught.value.price_ref) == (Decimal(0), MODERATED_REF)


@pytest.mark.parametrize("fault", FAULTS)
def test_the_ledger_row_of_a_moderated_job_says_it_was_not_billed(bfl, tmp_path: Path, fault):
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}", mode="durable", auto_migrate=True)
    tracking.callbacks.append(ledger)
    try:
        with pytest.raises(ContentPolicyError) as caught:
            _edit(bfl, fault)
    finally:
        tracking.callbacks.remove(ledger)
    with ledger.engine.connect() as conn:
        row = conn.execute(
            sa.select(spend_logs).where(spend_logs.c.request_id == caught.value.request_id)
        ).one()
    ledger.shutdown(10)
    assert (row.status, row.error_type, row.provider) == (
        "failure",
        "content_policy",
        "black_forest_labs",
    )
    assert row.cost_usd == Decimal(0)
    assert (row.cost_source, row.price_ref) == ("table", MODERATED_REF)


def test_the_proxy_answers_a_moderated_job_as_not_billed(tmp_path: Path):
    with FakeBFL(api_keys=[BFL_KEY], polls=1, faults=["code=request_moderated"]) as fake:
        params = {"model": MODEL, "api_base": fake.url, "api_key": BFL_KEY}
        with pytest.raises(openai.BadRequestError) as caught:
            edit_through_proxy(
                tmp_path, "flux", params, image=("in.png", make_png(64, 64)), prompt="a hat"
            )
    headers = caught.value.response.headers
    assert headers["x-tracking-response-cost"] == "0"
    assert headers["x-tracking-cost-source"] == "not-billed"
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    with engine.connect() as conn:
        (row,) = conn.execute(sa.select(spend_logs)).all()
    engine.dispose()
    assert (row.cost_usd, row.price_ref) == (Decimal(0), MODERATED_REF)
