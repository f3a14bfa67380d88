"""A Vertex AI deployment needs its Google Cloud project in the environment: checked when a
router or the proxy loads it (before, every call failed, and the proxy answered each with a 500),
and LiteLLM's ``litellm_params.vertex_project`` / ``vertex_location`` are named as not read."""

from __future__ import annotations

import pytest

from tracking import Router
from tracking.config import parse_config
from tracking.errors import ConfigurationError

DEPLOYMENT = {
    "model_name": "nano",
    "litellm_params": {
        "model": "vertex_ai/gemini-3.1-flash-image",
        "api_key": "token-1",
        "vertex_project": "my-project",
        "vertex_location": "us-central1",
    },
}


@pytest.fixture
def no_project(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VERTEXAI_PROJECT", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def test_a_vertex_deployment_without_a_project_is_refused_at_load(no_project):
    with pytest.raises(ConfigurationError) as caught:
        Router([DEPLOYMENT]).close()
    assert "VERTEXAI_PROJECT" in caught.value.message
    assert "model_list[0]" in caught.value.message


def test_a_vertex_deployment_loads_with_the_project_in_the_environment(monkeypatch):
    monkeypatch.setenv("VERTEXAI_PROJECT", "my-project")
    with Router([DEPLOYMENT]) as router:
        assert [d.model for d in router.deployments] == ["vertex_ai/gemini-3.1-flash-image"]


def test_litellms_vertex_keys_are_named_as_not_read():
    config = parse_config({"model_list": [DEPLOYMENT]}, environ={})
    found = [w for w in config.warnings if "vertex_" in w]
    assert len(found) == 2
    assert all("not used" in w and "VERTEXAI_" in w for w in found)
