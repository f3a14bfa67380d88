"""A ``model`` that names a provider and nothing after it (``gemini/``, ``azure/``) was taken
for an OpenAI model of that literal name and sent, with the key meant for the other provider, to
OpenAI's API base. It is refused before anything is sent, and at start-up in a config."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.proxy_support import serve_once
from tracking.errors import ConfigurationError, ValidationError
from tracking.router import Router
from tracking.testing import FakeOpenAI


@pytest.mark.parametrize("model", ["gemini/", "azure/", "black_forest_labs/", "openai/ "])
def test_a_provider_prefix_without_a_model_is_refused_before_sending(model):
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        with pytest.raises(ValidationError, match="names the provider") as caught:
            tracking.image_edit(
                image=make_png(), prompt="a hat", model=model, api_base=fake.url, api_key=API_KEY
            )
        assert caught.value.param == "model"
        assert fake.hits == 0


def test_a_router_deployment_without_a_model_after_its_prefix_is_a_configuration_error():
    entry = {"model_name": "g", "litellm_params": {"model": "gemini/", "api_key": "AIza-x"}}
    with pytest.raises(ConfigurationError, match=r"model_list\[0\].*'gemini/'"):
        Router([entry])


def test_tracking_serve_refuses_such_a_config_at_start(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n  - model_name: g\n    litellm_params: {model: 'gemini/', api_key: AIza-x}\n"
    )
    done = serve_once(config, tmp_path)
    assert done.returncode != 0, done
    assert "model_list[0]" in done.stderr and "'gemini/'" in done.stderr
    assert "Traceback" not in done.stderr
