"""``litellm_settings.callbacks`` given as one name, as LiteLLM's proxy docs write it.

LiteLLM's "custom callback" page configures ``callbacks: custom_callbacks.proxy_handler_instance``
(a name, not a list; its proxy reads it as one callback). The proxy refused to start with
"litellm_settings.callbacks: expected a list of names"; it now reads one name as a one-entry
list. ``success_callback`` / ``failure_callback`` stay lists (LiteLLM iterates them: a string
there would be read as its letters), and an empty name is still refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, make_png
from tests.proxy_support import ProxyProcess, one_deployment_config, write_config
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.testing import FakeOpenAI

CUSTOM_CALLBACKS = '''\
"""LiteLLM's example module: custom_callbacks.proxy_handler_instance."""
import json
import pathlib

import tracking

OUT = pathlib.Path(__file__).with_name("seen.jsonl")


class MyCustomHandler(tracking.CustomLogger):
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        line = json.dumps({"user": kwargs["user"], "cost": kwargs["response_cost"]})
        with OUT.open("a") as seen:
            seen.write(line + "\\n")


proxy_handler_instance = MyCustomHandler()
'''


def _document(litellm_settings: dict[str, object]) -> dict[str, object]:
    return one_deployment_config(
        "http://127.0.0.1:9", api_key="sk-x", litellm_settings=litellm_settings
    )


def test_one_name_is_one_callback_and_the_outcome_lists_stay_lists() -> None:
    config = parse_config(
        _document({"callbacks": "custom_callbacks.proxy_handler_instance"}), environ={}
    )
    assert config.litellm_settings.callbacks == ("custom_callbacks.proxy_handler_instance",)
    listed = parse_config(_document({"callbacks": ["a.b", "prometheus"]}), environ={})
    assert listed.litellm_settings.callbacks == ("a.b", "prometheus")
    for settings, fault in (
        ({"callbacks": ""}, "litellm_settings.callbacks: expected a list of names"),
        ({"callbacks": 5}, "litellm_settings.callbacks: expected a list of names"),
        ({"success_callback": "prometheus"}, "litellm_settings.success_callback: expected a list"),
        ({"failure_callback": "my.fn"}, "litellm_settings.failure_callback: expected a list"),
    ):
        with pytest.raises(ConfigurationError) as caught:
            parse_config(_document(settings), environ={})
        assert fault in caught.value.message


def test_litellm_docs_custom_callback_config_runs_the_handler(tmp_path: Path) -> None:
    (tmp_path / "custom_callbacks.py").write_text(CUSTOM_CALLBACKS)
    with FakeOpenAI(api_keys=[API_KEY]) as upstream:
        config = write_config(
            tmp_path / "config.yaml",
            one_deployment_config(
                upstream.url,
                model_name="gpt-image-2",
                litellm_settings={"callbacks": "custom_callbacks.proxy_handler_instance"},
                general_settings={"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            ),
        )
        with ProxyProcess(config) as proxy:
            answer = httpx.post(
                f"{proxy.url}/v1/images/edits",
                data={"model": "gpt-image-2", "prompt": "a red hat", "user": "cb-user"},
                files={"image": ("photo.png", make_png(), "image/png")},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            cost = float(answer.headers["x-litellm-response-cost"])
        # the proxy has stopped: its callbacks ran to the end
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert seen == [{"user": "cb-user", "cost": cost}]
