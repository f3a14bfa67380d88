"""LiteLLM's ``litellm_settings.default_key_generate_params``: defaults for ``/key/generate``.

It was an unknown key, named in a warning and ignored: keys made without a budget had none,
though the config said every new key gets one. LiteLLM copies these defaults onto a key when it
is made, a field the request gives winning (docs.litellm.ai/docs/proxy/default_budgets, read
2026-12-07). This proxy's keys take ``max_budget`` (exact, as every config amount: the Decimal
written, never a float), ``models``, ``duration``, ``rpm_limit`` and ``team_id``; LiteLLM's
other fields (``budget_duration``, ``tpm_limit``, ...) fail the start naming the key.

A real proxy (``tracking serve``) over loopback, its keys in an SQLite file and in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.ledger_support import ledger_url  # noqa: F401
from tests.proxy_support import MASTER_KEY, NO_UPSTREAM, ProxyProcess, master_client, serve_once
from tracking.config import parse_config
from tracking.errors import ConfigurationError

CONFIG = """\
model_list:
  - model_name: gpt-image-2
    litellm_params: {{model: gpt-image-2, api_key: sk-x, api_base: "{upstream}"}}
  - model_name: gpt-image-1
    litellm_params: {{model: gpt-image-1, api_key: sk-x, api_base: "{upstream}"}}
litellm_settings:
  default_key_generate_params:
    max_budget: 999999999.9999999999
    models: [gpt-image-2]
    duration: 30d
    rpm_limit: 7
    team_id: defaults
general_settings:
  master_key: {master}
  database_url: "{database}"
  auto_migrate: true
"""


@pytest.fixture
def client(ledger_url: str, tmp_path: Path) -> Iterator[httpx.Client]:  # noqa: F811
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(upstream=NO_UPSTREAM, master=MASTER_KEY, database=ledger_url))
    with master_client(ProxyProcess(config)) as client:
        yield client


def _generate(client: httpx.Client, **fields: object) -> dict[str, object]:
    made = client.post("/key/generate", json=fields)
    assert made.status_code == 200, made.text
    body: dict[str, object] = made.json()
    return body


def test_a_key_asked_without_them_gets_the_defaults_exactly(client):
    before = datetime.now().astimezone()
    made = _generate(client)
    # the budget as written (a float would be 1000000000)
    assert made["max_budget"] == "999999999.9999999999"
    assert (made["models"], made["rpm_limit"], made["team"]) == (["gpt-image-2"], 7, "defaults")
    expires = datetime.fromisoformat(str(made["expires"]))
    assert before + timedelta(days=29) < expires <= datetime.now().astimezone() + timedelta(days=30)
    stored = client.get("/key/info", params={"key_hash": made["key_hash"]})
    assert stored.status_code == 200, stored.text
    assert stored.json()["info"]["models"] == ["gpt-image-2"]


def test_what_the_request_gives_wins_and_the_rest_is_defaulted(client):
    made = _generate(
        client,
        max_budget="0.5",
        team="own-team",
        expires=(datetime.now().astimezone() + timedelta(days=2)).isoformat(),
    )
    assert (made["max_budget"], made["team"]) == ("0.5", "own-team")
    expires = datetime.fromisoformat(str(made["expires"]))
    assert expires < datetime.now().astimezone() + timedelta(days=3)  # not the default 30d
    assert (made["models"], made["rpm_limit"]) == (["gpt-image-2"], 7)  # the defaults
    given = _generate(client, models=["gpt-image-1"], rpm_limit=3)
    assert (given["models"], given["rpm_limit"]) == (["gpt-image-1"], 3)
    assert given["max_budget"] == "999999999.9999999999"


def test_an_empty_models_list_gets_the_default_models_as_in_litellm(client):
    # LiteLLM's clients send models: [] when they name none, and LiteLLM gives that key the
    # default's models; here it had every model, the configured restriction dropped
    made = _generate(client, models=[])
    assert made["models"] == ["gpt-image-2"]
    stored = client.get("/key/info", params={"key_hash": made["key_hash"]})
    assert stored.status_code == 200, stored.text
    assert stored.json()["info"]["models"] == ["gpt-image-2"]
    refused = httpx.post(
        f"{client.base_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {made['key']}"},
        json={"model": "gpt-image-1", "prompt": "a cat"},
        timeout=60,
    )
    assert refused.status_code in (401, 403), refused.text
    assert refused.json()["error"]["type"]


def _document(**defaults: object) -> dict[str, object]:
    return {
        "model_list": [
            {
                "model_name": "gpt-image-2",
                "litellm_params": {"model": "gpt-image-2", "api_key": "sk-x"},
            }
        ],
        "litellm_settings": {"default_key_generate_params": defaults},
    }


@pytest.mark.parametrize(
    ("defaults", "named"),
    [
        ({"budget_duration": "30d"}, "default_key_generate_params.budget_duration: this proxy"),
        ({"tpm_limit": 100}, "default_key_generate_params.tpm_limit: this proxy's keys"),
        ({"metadata": {"a": 1}}, "default_key_generate_params.metadata: not a field"),
        ({"max_budget": -1}, "default_key_generate_params.max_budget: must be at least 0"),
        ({"max_budget": "1e400"}, "default_key_generate_params.max_budget"),
        ({"models": ["dall-e-9"]}, "models: this proxy serves no model 'dall-e-9'"),
        ({"duration": "forever"}, "default_key_generate_params.duration: expected a positive"),
        ({"rpm_limit": 0}, "default_key_generate_params.rpm_limit: must be at least 1"),
        ({"team_id": 5}, "default_key_generate_params.team_id: expected a non-empty string"),
    ],
)
def test_what_the_keys_here_cannot_hold_fails_the_start_naming_it(defaults, named):
    with pytest.raises(ConfigurationError, match="default_key_generate_params") as refused:
        parse_config(_document(**defaults))
    assert named in str(refused.value)


def test_tracking_serve_refuses_it_before_listening(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-image-2\n"
        "    litellm_params: {model: gpt-image-2, api_key: sk-x}\n"
        "litellm_settings:\n"
        "  default_key_generate_params: {max_budget: 5, budget_duration: 30d}\n"
    )
    ended = serve_once(config, tmp_path)
    assert ended.returncode != 0
    assert "default_key_generate_params.budget_duration" in ended.stderr + ended.stdout
