"""Budgets hold across a call's attempts: a retry after an answer that was lost (the upstream may
have billed it unseen) and a fallback to a dearer model each need the budget to cover them, or
the call ends with the failure before them.

A ``tracking serve`` subprocess (SQLite ledger, counters in the process) in front of a fake
upstream of its own, whose queued faults the tests inject: ``drop`` (the request read, the
connection closed with no answer: an attempt that may have been billed) and ``status=500``
(an answer that bills nothing). ``house-dear`` is priced in the config at $0.50 an image;
``house-mystery`` (``plain``'s fallback) has no price.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts_support import edit, generate, ledger_env, spend_rows, wait_for
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tracking.pricing.estimate import max_expected_cost
from tracking.testing import FakeOpenAI

#: The form ``edit`` sends: the most one attempt of it may cost on gpt-image-2.
ONE_ATTEMPT = max_expected_cost(
    ["gpt-image-2"],
    {"prompt": "make it blue", "quality": "low", "size": "1024x1024", "image": b"png", "n": 1},
)
DEAR = Decimal("0.50")


def _deployment(name: str, model: str, api_base: str, **model_info: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model_name": name,
        "litellm_params": {"model": model, "api_key": API_KEY, "api_base": api_base},
    }
    if model_info:
        entry["model_info"] = model_info
    return entry


@pytest.fixture(scope="module")
def own_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=("house-dear", "house-mystery")) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(own_fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("attempts")
    url = f"sqlite:///{folder / 'ledger.db'}"
    document = {
        "model_list": [
            _deployment("solo", "gpt-image-2", own_fake.url),
            _deployment("cheap", "gpt-image-2", own_fake.url),
            _deployment(
                "dear", "house-dear", own_fake.url, per_image={"low": {"1024x1024": str(DEAR)}}
            ),
            _deployment("plain", "gpt-image-2", own_fake.url),
            _deployment("mystery", "house-mystery", own_fake.url),  # no price known
        ],
        "litellm_settings": {"success_callback": ["sql"], "failure_callback": ["sql"]},
        "router_settings": {
            "num_retries": 1,
            "fallbacks": [{"cheap": ["dear"]}, {"plain": ["mystery"]}],
        },
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": url,
            "auto_migrate": True,
        },
    }
    config = write_config(folder / "config.yaml", document)
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def _rows(client: httpx.Client, base: str, key_hash: str, calls: int) -> list[dict[str, Any]]:
    """The key's ledger rows, once its ``calls`` rows are there."""
    wait_for(lambda: spend_rows(client, base, api_key_hash=key_hash)["total"] == calls)
    rows: list[dict[str, Any]] = spend_rows(client, base, api_key_hash=key_hash, page_size=100)[
        "data"
    ]
    assert all(row["cost_usd"] is not None for row in rows)
    return rows


def _withheld(client: httpx.Client, base: str) -> float:
    """``image_edit_proxy_withheld_attempts_total`` on ``/metrics``."""
    for line in client.get(f"{base}/metrics").text.splitlines():
        if line.startswith("image_edit_proxy_withheld_attempts_total "):
            return float(line.split()[1])
    raise AssertionError("image_edit_proxy_withheld_attempts_total is not on /metrics")


def _spent(client: httpx.Client, base: str, key_hash: str, calls: int) -> Decimal:
    """The key's spend in the ledger, once its ``calls`` rows are there."""
    rows = _rows(client, base, key_hash, calls)
    return sum((Decimal(row["cost_usd"]) for row in rows), Decimal(0))


@pytest.mark.parametrize(
    ("fault", "stream"),
    [("drop", False), ("drop", True), ("break_after=0", True)],
    ids=["answer", "stream", "stream-broke-at-once"],
)
def test_no_retry_after_a_lost_answer_when_the_budget_cannot_cover_it(
    proxy, own_fake, client, fault, stream
):
    """``break_after=0``: a stream answered 2xx that broke off before its first event is
    retried and billed as an incomplete stream; the hold before the retry left it out (only
    answers that never came counted), so the retry went past the budget."""
    assert ONE_ATTEMPT is not None
    budget = (ONE_ATTEMPT * Decimal("1.5")).quantize(Decimal("0.00001"))
    made = generate(client, proxy.url, max_budget=str(budget), key_alias="one-and-a-half")
    key = made["key"]
    own_fake.inject(fault)
    before, withheld = own_fake.hits, _withheld(client, proxy.url)
    fields = {"stream": "true"} if stream else {}
    answer = edit(client, proxy.url, key, model="solo", **fields)
    # The first attempt's answer was lost: it may have been billed, so a second attempt could
    # take the key past its budget. The call ends with the first attempt's failure.
    assert answer.status_code >= 500, answer.text
    assert own_fake.hits == before + 1
    assert _withheld(client, proxy.url) == withheld + 1
    (row,) = _rows(client, proxy.url, made["key_hash"], 1)
    assert 0 < Decimal(row["cost_usd"]) <= budget  # the lost attempt, estimated
    assert row["cost_source"] == "estimate" and row["status"] == "failure"
    assert row["attempts"] == 1 and row["retries"] == 0  # the withheld retry is not counted


def test_a_retry_after_a_lost_answer_goes_when_covered_and_the_hold_is_settled(
    proxy, own_fake, client
):
    assert ONE_ATTEMPT is not None
    budget = (ONE_ATTEMPT * 4).quantize(Decimal("0.00001"))
    made = generate(client, proxy.url, max_budget=str(budget), key_alias="four")
    key = made["key"]
    own_fake.inject("drop")
    before, withheld = own_fake.hits, _withheld(client, proxy.url)
    assert edit(client, proxy.url, key, model="solo").status_code == 200
    assert own_fake.hits == before + 2
    assert _withheld(client, proxy.url) == withheld  # covered: nothing withheld
    calls = 1
    while (status := edit(client, proxy.url, key, model="solo").status_code) == 200:
        calls += 1
        assert calls < 10
    assert status == 429
    spent = _spent(client, proxy.url, made["key_hash"], calls)
    # Never past the budget, and refused only once one more attempt could not fit: the grown
    # hold of the first call was given back when it settled.
    assert spent <= budget < spent + ONE_ATTEMPT


def test_no_fallback_to_a_dearer_model_the_budget_cannot_cover(proxy, own_fake, client):
    made = generate(client, proxy.url, max_budget="0.10", key_alias="cheap-only")
    key = made["key"]
    # Both attempts on "cheap" (one retry) fail, billing nothing; the router falls back to "dear".
    own_fake.inject("status=500;times=2")
    before = own_fake.hits
    answer = edit(client, proxy.url, key, model="cheap")
    assert answer.status_code == 502, answer.text  # the upstream's 500, passed on
    assert own_fake.hits == before + 2  # house-dear ($0.50) was never called
    (row,) = _rows(client, proxy.url, made["key_hash"], 1)
    # The row names the attempt that failed, not the fallback that was withheld.
    assert Decimal(row["cost_usd"]) == 0 and row["status"] == "failure"
    assert row["model_group"] == "cheap" and not row["fallback_from"]
    assert row["http_status"] == 500 and row["retries"] == 1
    # With room for it, the same fallback is made.
    roomy_made = generate(client, proxy.url, max_budget="1.00", key_alias="roomy")
    roomy = roomy_made["key"]
    own_fake.inject("status=500;times=2")
    before = own_fake.hits
    assert edit(client, proxy.url, roomy, model="cheap").status_code == 200
    assert own_fake.hits == before + 3
    (row,) = _rows(client, proxy.url, roomy_made["key_hash"], 1)
    assert Decimal(row["cost_usd"]) == DEAR and row["model_group"] == "dear"
    assert row["fallback_from"] == ["cheap"]


def test_no_fallback_to_an_unpriced_model_for_a_key_with_a_budget(proxy, own_fake, client):
    """A key with a budget is refused an unpriced model (its spend could not be counted); a
    fallback to one was let through, served and counted as $0 on the budget."""
    made = generate(client, proxy.url, max_budget="1.00", key_alias="priced-only")
    refused = edit(client, proxy.url, made["key"], model="mystery")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_unpriced"
    own_fake.inject("status=500;times=2")  # both of plain's attempts fail, billing nothing
    before, withheld = own_fake.hits, _withheld(client, proxy.url)
    answer = edit(client, proxy.url, made["key"], model="plain")
    assert answer.status_code == 502, answer.text  # the upstream's 500: no unpriced fallback
    assert own_fake.hits == before + 2  # house-mystery was never called
    assert _withheld(client, proxy.url) == withheld + 1
    assert answer.headers["x-tracking-cost-source"] == "not-billed"
    (row,) = _rows(client, proxy.url, made["key_hash"], 1)
    assert Decimal(row["cost_usd"]) == 0 and row["model_group"] == "plain"
