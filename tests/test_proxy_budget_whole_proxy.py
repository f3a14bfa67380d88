"""The whole proxy's budget, LiteLLM's ``litellm_settings.max_budget`` and ``budget_duration``:
every call through the proxy counts, whichever key or end user makes it (the master key too),
and one that does not fit is refused (429) before any upstream call. It was an "unknown key,
ignored" warning: a config migrated from LiteLLM lost its spending cap without a word.

``tracking serve`` subprocesses (SQLite ledgers) in front of the session's fake upstream.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.accounts_support import accounts_config, edit, generate, ledger_env
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tests.services import REDIS_TIMEOUT_ENV
from tracking.config import parse_config
from tracking.errors import ConfigurationError

MODEL = "gpt-image-2"


def _ledger_spend(url: str) -> Decimal:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            total = conn.execute(sa.text("SELECT SUM(cost_usd) FROM spend_logs")).scalar()
    finally:
        engine.dispose()
    return Decimal(str(total or 0))


def _refused_by_the_proxy_budget(response) -> str:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert "the proxy" in error["message"] and "litellm_settings.max_budget" in error["message"]
    message: str = error["message"]
    return message


def test_the_settings_are_read_as_litellm_writes_them():
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-2"}}]}
    daily = parse_config(
        {**base, "litellm_settings": {"max_budget": 100.5, "budget_duration": "1d"}}
    )
    assert daily.litellm_settings.max_budget == Decimal("100.5")
    assert daily.litellm_settings.budget_period == "daily"
    monthly = parse_config(
        {**base, "litellm_settings": {"max_budget": 7, "budget_duration": "1mo"}}
    )
    assert monthly.litellm_settings.budget_period == "monthly"
    assert not [w for w in monthly.warnings if "max_budget" in w or "budget_duration" in w]
    total = parse_config({**base, "litellm_settings": {"max_budget": 0}})
    assert total.litellm_settings.max_budget == 0
    assert total.litellm_settings.budget_period == "total"
    assert parse_config(base).litellm_settings.max_budget is None
    with pytest.raises(ConfigurationError, match=r"budget_duration: one of 1d .* got '30d'"):
        parse_config({**base, "litellm_settings": {"max_budget": 1, "budget_duration": "30d"}})
    with pytest.raises(
        ConfigurationError, match=r"litellm_settings\.max_budget: must be at least 0"
    ):
        parse_config({**base, "litellm_settings": {"max_budget": -1}})
    alone = parse_config({**base, "litellm_settings": {"budget_duration": "1d"}})
    assert any("budget_duration: no effect without max_budget" in w for w in alone.warnings)


def test_every_key_counts_toward_the_proxy_budget_until_it_is_spent(fake, client, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = accounts_config(tmp_path, fake.url, url, models=(MODEL,))
    document = json.loads(config.read_text())
    budget = Decimal("0.05")
    document["litellm_settings"].update({"max_budget": float(budget), "budget_duration": "1d"})
    write_config(config, document)
    with ProxyProcess(config, env=ledger_env(url)) as proxy:
        key = generate(client, proxy.url, key_alias="no-budget-of-its-own")["key"]
        served = 0
        for turn in range(200):
            answer = edit(client, proxy.url, (key, MASTER_KEY)[turn % 2], model=MODEL)
            if answer.status_code != 200:
                break
            served += 1
        else:
            raise AssertionError("the proxy's budget never refused a call")
        message = _refused_by_the_proxy_budget(answer)
        assert "daily budget" in message
        assert served >= 2  # both keys' calls were served, and counted together
        hits = fake.hits
        # A refused call never reaches the upstream, whichever key makes it.
        _refused_by_the_proxy_budget(edit(client, proxy.url, key, model=MODEL))
        _refused_by_the_proxy_budget(edit(client, proxy.url, MASTER_KEY, model=MODEL))
        assert fake.hits == hits
    spent = _ledger_spend(url)
    assert Decimal(0) < spent <= budget


def test_an_open_proxy_holds_its_budget_too(fake, client, tmp_path: Path):
    """Without a master key there are no keys or end users to hold, but the proxy's budget
    still applies (it was the only cap the config asked for)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    document = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": MODEL, "api_key": "sk-x", "api_base": fake.url},
            }
        ],
        "litellm_settings": {"max_budget": 0, "success_callback": ["sql"]},
        "general_settings": {"database_url": url, "auto_migrate": True},
    }
    config = write_config(tmp_path / "config.yaml", document)
    with ProxyProcess(config, env=ledger_env(url)) as proxy:
        hits = fake.hits
        message = _refused_by_the_proxy_budget(edit(client, proxy.url, None, model=MODEL))
        assert "total budget" in message
        assert fake.hits == hits


@pytest.mark.parametrize("shared", ["machine", "redis"])
def test_an_open_proxys_budget_is_one_budget_for_all_workers(
    fake, tmp_path: Path, request: pytest.FixtureRequest, shared: str
):
    """``--workers 2`` without a master key: the workers share the proxy's budget counter,
    through the machine's counters file or through Redis. Each kept its own, read from the
    ledger once, so the proxy spent up to twice its budget."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    budget = Decimal("0.05")
    document: dict[str, Any] = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": MODEL, "api_key": API_KEY, "api_base": fake.url},
            }
        ],
        "litellm_settings": {"max_budget": float(budget), "success_callback": ["sql"]},
        "general_settings": {"database_url": url, "auto_migrate": True},
    }
    env = ledger_env(url)
    if shared == "redis":
        document["router_settings"] = {"redis_url": request.getfixturevalue("redis_url")}
        env["TRACKING_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
        env.update(REDIS_TIMEOUT_ENV)
    config = write_config(tmp_path / "config.yaml", document)
    statuses = []
    with ProxyProcess(config, env=env, workers=2) as proxy:
        for _ in range(30):
            with httpx.Client(timeout=30) as client:  # a new connection: both workers serve
                statuses.append(edit(client, proxy.url, None, model=MODEL).status_code)
    assert statuses[-3:] == [429, 429, 429], statuses
    assert Decimal(0) < _ledger_spend(url) <= budget


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("litellm_settings", "max_end_user_budget"),
        ("litellm_settings", "max_internal_user_budget"),
        ("router_settings", "provider_budget_config"),
        ("litellm_params", "max_budget"),
        ("litellm_params", "budget_duration"),
        ("general_settings", "allowed_ips"),
        ("general_settings", "allowed_routes"),
    ],
)
def test_litellm_caps_and_controls_this_proxy_does_not_enforce_fail_the_start(section, key):
    """A spending cap or access control the proxy would drop with an "unknown key" warning
    fails the config instead: the operator who wrote it believes spend, or access, is limited."""
    params: dict[str, object] = {"model": "gpt-image-2"}
    document: dict[str, object] = {"model_list": [{"model_name": "m", "litellm_params": params}]}
    if section == "litellm_params":
        params[key] = 1
    else:
        document[section] = {key: 1}
    with pytest.raises(ConfigurationError) as refused:
        parse_config(document)
    path = "model_list[0].litellm_params" if section == "litellm_params" else section
    assert f"{path}.{key}: " in str(refused.value)
    assert "not enforced by this proxy" in str(refused.value) or "does not enforce" in str(
        refused.value
    )
    # An unknown key that caps nothing is still a warning only.
    params.pop(key, None)
    document.pop(section, None)
    params["temperature"] = 0.2
    assert any("temperature: unknown key" in w for w in parse_config(document).warnings)
