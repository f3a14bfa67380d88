"""``general_settings.enforce_fallback_model_access``: a virtual key is served by a fallback only
when its ``models`` name that fallback's group, as LiteLLM's flag of that name has it.

A ``tracking serve`` subprocess (SQLite ledger) whose ``primary`` deployment cannot be reached
(every call to it is a deployment fault, so the router falls back) and whose fallbacks
``second`` and ``third`` are the session's fake upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts_support import accounts_config, edit, generate, ledger_env, spend_rows
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess, free_port, write_config
from tracking.testing import FakeOpenAI


def _model_list(fake_url: str) -> list[dict[str, Any]]:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # refused: a deployment fault
    return [
        {
            "model_name": name,
            "litellm_params": {"model": "gpt-image-2", "api_key": API_KEY, "api_base": base},
        }
        for name, base in (("primary", nowhere), ("second", fake_url), ("third", fake_url))
    ]


def _proxy(folder: Path, fake_url: str, general: dict[str, Any]) -> ProxyProcess:
    url = f"sqlite:///{folder / 'ledger.db'}"
    config = accounts_config(
        folder, fake_url, url, general=general, model_list=_model_list(fake_url)
    )
    document = json.loads(config.read_text())
    document["router_settings"] = {
        "num_retries": 0,
        "fallbacks": [{"primary": ["second", "third"]}],
    }
    return ProxyProcess(write_config(config, document), env=ledger_env(url))


@pytest.fixture(scope="module")
def enforced(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("fallback-access")
    with _proxy(folder, fake.url, {"enforce_fallback_model_access": True}) as process:
        yield process


def _served(client: httpx.Client, proxy: ProxyProcess, response: httpx.Response) -> Any:
    request_id = response.headers["x-tracking-request-id"]
    rows = spend_rows(client, proxy.url, request_id=request_id)["data"]
    assert len(rows) == 1
    return rows[0]


def test_a_key_is_served_only_by_the_fallbacks_its_models_name(enforced: ProxyProcess) -> None:
    with httpx.Client(timeout=60) as client:
        key = generate(client, enforced.url, models=["primary", "third"])["key"]
        response = edit(client, enforced.url, key, model="primary")
        assert response.status_code == 200, response.text
        row = _served(client, enforced, response)
    assert row["model_group"] == "third"  # "second" skipped: the key may not call it
    assert row["status"] == "success"
    assert "may not call" in enforced.log()


def test_a_key_no_fallback_of_which_it_may_call_gets_the_primary_failure(
    enforced: ProxyProcess, fake: FakeOpenAI
) -> None:
    with httpx.Client(timeout=60) as client:
        key = generate(client, enforced.url, models=["primary"])["key"]
        hits = fake.hits
        response = edit(client, enforced.url, key, model="primary")
        assert response.status_code == 502, response.text
        assert response.json()["error"]["type"] == "server_error"
        row = _served(client, enforced, response)
    assert row["status"] == "failure"
    assert row["model_group"] == "primary"
    assert fake.hits == hits  # no fallback was sent


def test_the_master_key_and_an_unrestricted_key_are_served_by_any_fallback(
    enforced: ProxyProcess,
) -> None:
    with httpx.Client(timeout=60) as client:
        key = generate(client, enforced.url)["key"]  # every model
        for caller in (MASTER_KEY, key):
            response = edit(client, enforced.url, caller, model="primary")
            assert response.status_code == 200, response.text
            assert _served(client, enforced, response)["model_group"] == "second"


def test_without_the_setting_a_fallback_serves_any_key_as_in_litellm(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    with _proxy(tmp_path, fake.url, {"enforce_fallback_model_access": False}) as proxy:
        with httpx.Client(timeout=60) as client:
            key = generate(client, proxy.url, models=["primary"])["key"]
            response = edit(client, proxy.url, key, model="primary")
            assert response.status_code == 200, response.text
            assert _served(client, proxy, response)["model_group"] == "second"
        assert "unknown key" not in proxy.log()


def test_a_streamed_call_skips_the_fallbacks_its_key_may_not_call(enforced: ProxyProcess) -> None:
    with httpx.Client(timeout=60) as client:
        key = generate(client, enforced.url, models=["primary", "third"])["key"]
        response = edit(client, enforced.url, key, model="primary", stream="true")
        assert response.status_code == 200, response.text
        assert "image_edit.completed" in response.text
        row = _served(client, enforced, response)
    assert row["model_group"] == "third"
