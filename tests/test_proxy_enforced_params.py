"""LiteLLM's ``general_settings.enforce_user_param`` and ``enforced_params``: every call must
name its end user (``user`` or ``safety_identifier``) and carry the listed ``metadata`` keys,
or it is refused with a 400 naming what is missing, before any upstream call. They were
"unknown key, ignored" warnings: calls without an end user went through unattributed.

A ``tracking serve`` subprocess (SQLite ledger) in front of the session's fake upstream.
"""

from __future__ import annotations

import json

import pytest

from tests.accounts_support import edit
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tracking.config import parse_config
from tracking.errors import ConfigurationError

MODEL = "gpt-image-2"


def test_the_settings_are_checked_and_merged():
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": MODEL}}]}
    config = parse_config(
        {
            **base,
            "general_settings": {
                "enforce_user_param": True,
                "enforced_params": ["metadata.generation_name", "user"],
            },
        }
    )
    assert config.general_settings.enforced_params == ("user", "metadata.generation_name")
    assert not [w for w in config.warnings if "enforce" in w]
    with pytest.raises(ConfigurationError, match=r"enforced_params: takes user and metadata"):
        parse_config({**base, "general_settings": {"enforced_params": ["model"]}})


def test_a_call_without_what_the_proxy_requires_is_refused_before_the_upstream(
    fake, client, tmp_path
):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    document = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": MODEL, "api_key": API_KEY, "api_base": fake.url},
            }
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": url,
            "auto_migrate": True,
            "enforce_user_param": True,
            "enforced_params": ["metadata.generation_name"],
        },
    }
    config = write_config(tmp_path / "config.yaml", document)
    with ProxyProcess(config, env={"TRACKING_DATABASE_URL": url}) as proxy:
        hits = fake.hits
        refused = edit(client, proxy.url, MASTER_KEY, model=MODEL)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "user" and error["code"] == "missing_required_parameter"
        refused = edit(client, proxy.url, MASTER_KEY, model=MODEL, user="alice")
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "metadata.generation_name"
        assert fake.hits == hits
        metadata = json.dumps({"generation_name": "thumbnails"})
        served = edit(
            client, proxy.url, MASTER_KEY, model=MODEL, safety_identifier="alice", metadata=metadata
        )
        assert served.status_code == 200, served.text
        assert fake.hits == hits + 1
