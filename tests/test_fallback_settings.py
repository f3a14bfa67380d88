"""``fallbacks`` may be set under ``router_settings`` and under ``litellm_settings`` (LiteLLM reads
both; the router's win). A group that is not a ``model_name`` is a ``ConfigurationError`` naming
the key it is under, in either section, even when the other section's fallbacks are the ones
used: a typo is never silently ignored, in a router built from a config or in ``tracking serve``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_support import serve_once, write_config
from tests.router_support import deployment
from tracking.errors import ConfigurationError
from tracking.router import Router

MODEL_LIST = [deployment("a", "http://h/v1", id="a"), deployment("b", "http://h/v1", id="b")]


def _config(litellm: Any = None, router: Any = None) -> dict[str, Any]:
    config: dict[str, Any] = {"model_list": MODEL_LIST}
    if litellm is not None:
        config["litellm_settings"] = {"fallbacks": litellm}
    if router is not None:
        config["router_settings"] = {"fallbacks": router}
    return config


@pytest.mark.parametrize(
    ("litellm", "router", "key"),
    [
        ([{"a": ["nowhere"]}], [{"a": ["b"]}], "litellm_settings"),  # once silently ignored
        ([{"a": ["nowhere"]}], None, "litellm_settings"),
        (None, [{"nowhere": ["a"]}], "router_settings"),
        ([{"a": ["b"]}], [{"a": ["nowhere"]}], "router_settings"),
    ],
)
def test_an_unknown_fallback_group_is_refused_naming_its_key(litellm, router, key):
    with pytest.raises(ConfigurationError) as caught:
        Router.from_config(_config(litellm, router))
    message = str(caught.value)
    assert f"{key}.fallbacks[0]" in message and "'nowhere' is not a model_name" in message


def test_with_both_sections_set_the_routers_fallbacks_are_used_and_a_warning_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="tracking.router"):
        router = Router.from_config(_config([{"b": ["a"]}], [{"a": ["b"]}]))
    try:
        assert router.fallbacks == {"a": ("b",)}
    finally:
        router.close()
    assert "router_settings' are used" in caplog.text


def test_tracking_serve_refuses_an_unknown_group_in_litellm_settings_fallbacks(tmp_path: Path):
    config = write_config(tmp_path / "config.yaml", _config([{"a": ["nowhere"]}], [{"a": ["b"]}]))
    done = serve_once(config, tmp_path)
    assert done.returncode != 0, done
    assert "litellm_settings.fallbacks[0]" in done.stderr and "'nowhere'" in done.stderr
    assert "Traceback" not in done.stderr
