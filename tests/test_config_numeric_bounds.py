"""Numbers in ``config.yaml`` a careless operator may write: infinite, NaN, huge or zero
weights, timeouts, cooldowns and retry counts. Each is refused at start-up with the path of the
key (never accepted only to fail every call later), and huge finite weights still route."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import API_KEY, make_png
from tests.proxy_support import serve_once
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.router import Router
from tracking.testing import FakeOpenAI


def _two(**params: object) -> list[dict[str, object]]:
    return [
        {
            "model_name": "g",
            "litellm_params": {"model": "gpt-image-1", "api_key": f"sk-{i}", **params},
        }
        for i in range(2)
    ]


@pytest.mark.parametrize(
    ("params", "settings", "expected"),
    [
        ({"weight": float("inf")}, {}, "model_list[0].litellm_params.weight: expected a number"),
        ({"weight": float("nan")}, {}, "model_list[0].litellm_params.weight: expected a number"),
        ({"weight": -1}, {}, "model_list[0].litellm_params.weight: must be at least 0"),
        ({"timeout": 100_000}, {}, "model_list[0].litellm_params.timeout: must be greater"),
        ({"timeout": float("inf")}, {}, "model_list[0].litellm_params.timeout: expected"),
        ({"rpm": 0}, {}, "model_list[0].litellm_params.rpm: must be at least 1"),
        ({"tpm": 0}, {}, "model_list[0].litellm_params.tpm: must be at least 1"),
        ({}, {"router_settings": {"cooldown_time": float("nan")}}, "cooldown_time: expected"),
        ({}, {"router_settings": {"cooldown_time": float("inf")}}, "cooldown_time: expected"),
        ({}, {"router_settings": {"cooldown_time": -5}}, "cooldown_time: must be between"),
        ({}, {"router_settings": {"cooldown_time": 1e300}}, "cooldown_time: must be between"),
        ({}, {"router_settings": {"num_retries": 10**9}}, "num_retries: must be at most 100"),
        ({}, {"litellm_settings": {"num_retries": 10**9}}, "num_retries: must be at most 100"),
        ({}, {"litellm_settings": {"request_timeout": 1e300}}, "request_timeout: must be"),
        ({}, {"router_settings": {"timeout": float("nan")}}, "router_settings.timeout: expected"),
        ({}, {"router_settings": {"retry_after": -1}}, "retry_after: must be at least 0"),
    ],
)
def test_numbers_no_call_could_use_are_refused_at_start_naming_the_key(params, settings, expected):
    with pytest.raises(ConfigurationError) as caught:
        parse_config({"model_list": _two(**params), **settings}, environ={})
    assert expected in caught.value.message


@pytest.mark.parametrize(
    ("params", "settings"),
    [
        ({"weight": float("inf")}, {}),
        ({"weight": float("nan")}, {}),
        ({"timeout": 100_000}, {}),
        ({}, {"cooldown_time": float("nan")}),
        ({}, {"cooldown_time": float("inf")}),
        ({}, {"num_retries": 10**9}),
    ],
)
def test_the_router_refuses_the_same_numbers(params, settings):
    with pytest.raises(ConfigurationError):
        Router(_two(**params), **settings)


def test_huge_finite_weights_still_route_to_a_deployment():
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        router = Router(
            [
                {
                    "model_name": "g",
                    "litellm_params": {
                        "model": "gpt-image-1",
                        "api_base": fake.url,
                        "api_key": API_KEY,
                        "weight": weight,
                    },
                    "model_info": {"id": name},
                }
                for name, weight in (("a", 1e308), ("b", 1e308), ("c", 0))
            ]
        )
        for _ in range(3):
            response = router.image_edit(image=make_png(), prompt="a hat", model="g")
            assert response._hidden_params["deployment_id"] in {"a", "b"}


def test_tracking_serve_exits_with_the_key_for_an_infinite_weight(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: g\n"
        "    litellm_params: {model: gpt-image-1, api_key: sk-a, weight: .inf}\n"
        "  - model_name: g\n"
        "    litellm_params: {model: gpt-image-1, api_key: sk-b}\n"
        "router_settings: {cooldown_time: .nan}\n"
    )
    done = serve_once(config, tmp_path)
    assert done.returncode == 2, done
    assert "model_list[0].litellm_params.weight" in done.stderr
    assert "router_settings.cooldown_time" in done.stderr
    assert "Traceback" not in done.stderr
