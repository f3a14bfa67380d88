"""Budgets hold for unpriced models: a key or end user with a budget calling a model that has no
price is refused before any upstream call, unless the config allows it.

Two ``tracking serve`` subprocesses (SQLite ledgers, counters in the process) in front of the
session's fake upstream, which serves ``some-new-model`` (a model no price table knows).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.accounts_support import accounts_config, bearer, edit, generate, ledger_env
from tests.proxy_support import MASTER_KEY, ProxyProcess

UNPRICED = "some-new-model"


def _config(
    folder: Path, fake_url: str, *, allow: bool, prices_file: str | None = None
) -> tuple[Path, str]:
    url = f"sqlite:///{folder / 'ledger.db'}"
    general: dict[str, object] = {"allow_unpriced_with_budgets": allow}
    if prices_file is not None:
        general["prices_file"] = prices_file
    models = (UNPRICED, "gpt-image-2", "acme-image-edit-1")
    return accounts_config(folder, fake_url, url, models=models, general=general), url


@pytest.fixture(scope="module")
def strict(fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    config, url = _config(tmp_path_factory.mktemp("strict"), fake.url, allow=False)
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def test_a_budgeted_key_calling_an_unpriced_model_is_refused_before_the_upstream(
    strict, client, fake
):
    key = generate(client, strict.url, max_budget="0.10", key_alias="capped")["key"]
    before = fake.hits
    refused = edit(client, strict.url, key, model=UNPRICED)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "model_unpriced" and error["param"] == "model"
    assert UNPRICED in error["message"] and "this key" in error["message"]
    assert "tracking prices import" in error["message"]
    assert "allow_unpriced_with_budgets" in error["message"]
    assert fake.hits == before
    # A priced model still goes through on the same key, and a key without a budget is not held.
    assert edit(client, strict.url, key, model="gpt-image-2").status_code == 200
    free = generate(client, strict.url, key_alias="no-budget")["key"]
    assert edit(client, strict.url, free, model=UNPRICED).status_code == 200


def test_a_budgeted_end_user_calling_an_unpriced_model_is_refused_before_the_upstream(
    strict, client, fake
):
    made = client.post(
        f"{strict.url}/customer/new",
        headers=bearer(MASTER_KEY),
        json={"user_id": "capped-user", "max_budget": "0.10", "budget_period": "daily"},
    )
    assert made.status_code == 200
    before = fake.hits
    refused = edit(client, strict.url, MASTER_KEY, model=UNPRICED, user="capped-user")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "model_unpriced" and "end user" in error["message"]
    assert fake.hits == before


def _figure(usd: str) -> dict[str, str]:
    return {
        "usd": usd,
        "source": "https://example.test/our-contract",
        "retrieved": "2026-12-01",
        "confidence": "secondary",
    }


def test_the_config_can_let_unpriced_calls_through_and_names_a_prices_file(fake, client, tmp_path):
    prices = {
        "schema": 1,
        "currency": "USD",
        "entries": [
            {
                "model": "acme-image-edit-1",
                "effective_from": None,
                "effective_to": None,
                "shutdown": None,
                "tokens_per_million": {
                    "input_text": _figure("1"),
                    "input_image": _figure("2"),
                    "output_image": _figure("10"),
                },
            }
        ],
    }
    (tmp_path / "prices.json").write_text(json.dumps(prices))
    # A relative prices_file is read beside the config.
    config, url = _config(tmp_path, fake.url, allow=True, prices_file="prices.json")
    with ProxyProcess(config, env=ledger_env(url)) as proxy:
        key = generate(client, proxy.url, max_budget="0.10")["key"]
        before = fake.hits
        assert edit(client, proxy.url, key, model=UNPRICED).status_code == 200
        assert fake.hits == before + 1
        priced = edit(client, proxy.url, key, model="acme-image-edit-1")
        assert priced.status_code == 200
        # "make it blue": 3 text tokens x $1, 323 image tokens x $2, 272 output tokens x $10
        # = 3 + 646 + 2720 = 3369 per 1M -> $0.003369
        assert Decimal(priced.headers["x-tracking-response-cost"]) == Decimal("0.003369")
