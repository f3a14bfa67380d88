"""``config.yaml`` as the proxy reads it: the seed's shape verbatim, ``os.environ/`` references,
defaults from the environment, warnings for unknown keys and errors naming the bad key's path."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tracking.config import DEFAULT_MAX_REQUEST_SIZE_MB, load_config, parse_config
from tracking.errors import ConfigurationError

SEED_CONFIG = """\
model_list:
  - model_name: gpt-image-1
    litellm_params:
      model: gpt-image-1
      api_key: os.environ/OPENAI_API_KEY
"""


def test_the_seed_config_loads_verbatim(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(SEED_CONFIG)
    config = load_config(path, environ={"OPENAI_API_KEY": "sk-from-env-0123456789"})
    (deployment,) = config.model_list
    assert deployment.model_name == "gpt-image-1"
    assert deployment.litellm_params == {
        "model": "gpt-image-1",
        "api_key": "sk-from-env-0123456789",
    }
    assert config.model_names() == ["gpt-image-1"]
    assert config.general_settings.master_key is None
    assert config.general_settings.max_request_size_mb == DEFAULT_MAX_REQUEST_SIZE_MB
    assert config.general_settings.ledger_mode == "durable"
    assert config.source == path.resolve()
    assert config.warnings == ()


def test_secrets_never_show_in_repr():
    config = parse_config(
        {
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {"model": "gpt-image-1", "api_key": "sk-a1b2c3d4e5f6"},
                }
            ],
            "general_settings": {"master_key": "sk-master-secret-1"},
        }
    )
    shown = repr(config)
    assert "sk-a1b2c3d4e5f6" not in shown and "sk-master-secret-1" not in shown
    assert "gpt-image-1" in shown


def test_every_fault_is_listed_with_its_path():
    with pytest.raises(ConfigurationError) as caught:
        parse_config(
            {
                "model_list": [
                    {"model_name": "a", "litellm_params": {"model": "gpt-image-1"}},
                    {"model_name": "b", "litellm_params": {"model": "gpt-image-1", "rpm": "ten"}},
                    {"model_name": "c", "litellm_params": {"api_key": "sk-x"}},
                    {"litellm_params": {"model": "gpt-image-1", "api_base": "ftp://nope"}},
                    "just a string",
                ],
                "general_settings": {"max_request_size_mb": 0, "ledger_mode": "sometimes"},
                "litellm_settings": {"success_callback": "prometheus"},
            },
            environ={},
        )
    message = caught.value.message
    for expected in (
        "model_list[1].litellm_params.rpm: expected an integer",
        "model_list[2].litellm_params.model: required",
        "model_list[3].model_name: required",
        "model_list[3].litellm_params.api_base: expected an http(s) URL",
        "model_list[4]: expected a mapping",
        "general_settings.max_request_size_mb: must be greater than 0",
        "general_settings.ledger_mode: must be one of durable, background",
        "litellm_settings.success_callback: expected a list of names",
    ):
        assert expected in message
    assert "model_list[0]" not in message


def test_missing_environment_variable_names_the_key_and_the_variable():
    with pytest.raises(ConfigurationError) as caught:
        parse_config(
            {
                "model_list": [
                    {
                        "model_name": "m",
                        "litellm_params": {"model": "x", "api_key": "os.environ/NOPE_KEY"},
                    }
                ]
            },
            environ={},
        )
    assert "model_list[0].litellm_params.api_key: environment variable NOPE_KEY is not set" in (
        caught.value.message
    )


def test_unknown_keys_warn_and_are_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="tracking.config"):
        config = parse_config(
            {
                "model_list": [
                    {"model_name": "m", "litellm_params": {"model": "x", "mystery": 1}, "extra": 2}
                ],
                "litellm_settings": {"cache": True},
                "whatever": {},
            }
        )
    assert set(config.warnings) == {
        "whatever: unknown key, ignored",
        "model_list[0].extra: unknown key, ignored",
        "model_list[0].litellm_params.mystery: unknown key, ignored",
        "litellm_settings.cache: this proxy caches no responses; the Redis of cache_params (if "
        "it names one) holds the proxy's shared counters (rate limits, budgets)",
    }
    assert "whatever: unknown key, ignored" in caplog.text


def test_a_misspelt_key_is_warned_about_with_the_key_it_is_close_to():
    """``master_kye`` was "unknown key, ignored", and the proxy started open: the warning now
    names the key the operator meant; a key close to none is warned about as before."""
    config = parse_config(
        {
            "model_lst": [],
            "model_list": [{"model_name": "m", "litellm_params": {"model": "x", "api_bse": "y"}}],
            "general_settings": {"master_kye": "sk-m", "database_ur": "sqlite://"},
            "litellm_settings": {"sucess_callback": ["x"], "cache": True},
        }
    )
    assert set(config.warnings) == {
        "model_lst: unknown key, ignored (did you mean model_list?)",
        "model_list[0].litellm_params.api_bse: unknown key, ignored (did you mean api_base?)",
        "general_settings.master_kye: unknown key, ignored (did you mean master_key?)",
        "general_settings.database_ur: unknown key, ignored (did you mean database_url?)",
        "litellm_settings.sucess_callback: unknown key, ignored (did you mean success_callback?)",
        "litellm_settings.cache: this proxy caches no responses; the Redis of cache_params (if "
        "it names one) holds the proxy's shared counters (rate limits, budgets)",
    }
    assert config.general_settings.master_key is None


def test_environment_variables_the_process_environment_cannot_take_are_config_faults():
    """A name with ``=`` (or empty, or not text), a value with a NUL, a list or a mapping were
    accepted, then ``os.environ`` refused them at start with a traceback (a list became the
    text ``[1]``); they are now listed with the other faults. Numbers and booleans are
    exported as text, as LiteLLM does, and an empty value is left out."""
    with pytest.raises(ConfigurationError) as caught:
        parse_config(
            {
                "model_list": [{"model_name": "m", "litellm_params": {"model": "x"}}],
                "environment_variables": {
                    "A=B": "x",
                    "": "y",
                    "LIST": [1],
                    "MAP": {"a": 1},
                    "NUL": "x\0y",
                    "FINE": "ok",
                },
            },
            environ={},
        )
    assert caught.value.message.splitlines()[1:] == [
        "  environment_variables: 'A=B' is not an environment variable name (non-empty, no '=', "
        "no NUL)",
        "  environment_variables: '' is not an environment variable name (non-empty, no '=', "
        "no NUL)",
        "  environment_variables.LIST: expected text, a number or true/false, got a list",
        "  environment_variables.MAP: expected text, a number or true/false, got a mapping",
        "  environment_variables.NUL: holds a NUL character, which no variable can",
    ]
    config = parse_config(
        {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "x"}}],
            "environment_variables": {"N": 5, "T": True, "EMPTY": None, "S": "s"},
        },
        environ={},
    )
    assert config.environment_variables == {"N": "5", "T": "True", "S": "s"}


def test_router_settings_that_have_no_effect_here_are_named_in_a_warning():
    config = parse_config(
        {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "x"}}],
            "litellm_settings": {"set_verbose": True, "json_logs": True, "drop_params": True},
            "router_settings": {"timeout": 30, "enable_pre_call_checks": True, "retry_after": 1},
        }
    )
    assert set(config.warnings) == {
        "litellm_settings.json_logs: accepted for LiteLLM compatibility, not used by this proxy",
        "litellm_settings.set_verbose: accepted for LiteLLM compatibility, not used by this proxy",
        "router_settings.enable_pre_call_checks: accepted for LiteLLM compatibility, "
        "not used by this proxy",
        "router_settings.retry_after: accepted for LiteLLM compatibility, not used by this proxy",
    }  # (timeout is used: the deployments' default timeout)


def test_environment_fills_settings_and_environment_variables_section():
    config = parse_config(
        {
            "environment_variables": {"UPSTREAM_KEY": "sk-from-section-1"},
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {"model": "x", "api_key": "os.environ/UPSTREAM_KEY"},
                }
            ],
            "litellm_settings": {"success_callback": ["prometheus"], "drop_params": True},
            "router_settings": {"num_retries": 3, "routing_strategy": "simple-shuffle"},
            "general_settings": {"max_request_size_mb": 1.5},
        },
        environ={"TRACKING_MASTER_KEY": "sk-env-master", "TRACKING_DATABASE_URL": "sqlite:///x.db"},
    )
    assert config.model_list[0].litellm_params["api_key"] == "sk-from-section-1"
    assert config.general_settings.master_key == "sk-env-master"
    assert config.general_settings.database_url == "sqlite:///x.db"
    assert config.general_settings.max_request_bytes == int(1.5 * 1024 * 1024)
    assert config.litellm_settings.success_callback == ("prometheus",)
    assert config.litellm_settings.drop_params is True
    assert config.router_settings == {"num_retries": 3, "routing_strategy": "simple-shuffle"}


@pytest.mark.parametrize(
    "name",
    ["simple-shuffle", "weighted-random", "latency-based-routing", "lowest-latency", "lowest-cost"],
)
def test_every_strategy_name_the_router_takes_is_a_valid_config(name):
    """The proxy takes the short aliases Router and Router.from_config take, not only LiteLLM's
    names; a name neither knows stays an error."""
    document = {"model_list": [{"model_name": "m", "litellm_params": {"model": "x"}}]}
    config = parse_config({**document, "router_settings": {"routing_strategy": name}})
    assert config.router_settings["routing_strategy"] == name
    with pytest.raises(ConfigurationError, match="routing_strategy: must be one of"):
        parse_config({**document, "router_settings": {"routing_strategy": "fastest"}})


@pytest.mark.parametrize("key", ["redis_port", "redis_password"])
def test_a_redis_port_or_password_without_a_host_is_an_error(key):
    """Written alone they named no Redis, so the instances would not share budgets and rate
    limits while their operator believed they did."""
    document = {"model_list": [{"model_name": "m", "litellm_params": {"model": "x"}}]}
    value = 6380 if key == "redis_port" else "secret"
    with pytest.raises(ConfigurationError, match=f"router_settings.{key}: has no effect"):
        parse_config({**document, "router_settings": {key: value}})
    for named in ({"redis_host": "127.0.0.1"}, {"redis_url": "redis://127.0.0.1:6380/0"}):
        parse_config({**document, "router_settings": {key: value, **named}})


def test_file_problems_are_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list:\n  - model_name: [unclosed\n")
    with pytest.raises(ConfigurationError, match=r"line \d+"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigurationError, match="top level must be a mapping"):
        load_config(scalar)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).model_list == ()


PRICED_CONFIG = """\
model_list:
  - model_name: images-eu
    litellm_params: {model: azure/images-prod, api_base: https://example.openai.azure.com,
                     api_key: sk-azure-key-0123456789, api_version: 2025-04-01-preview}
    model_info:
      base_model: gpt-image-1
  - model_name: house-model
    litellm_params: {model: openai/house-model, api_base: http://gpu-box:8000/v1}
    model_info:
      input_cost_per_token: 0.000005
      output_cost_per_token: 0.00004
      cache_read_input_token_cost: 0.0000012
prices:
  azure/images-us: {base_model: gpt-image-1, discount: "0.15"}
  acme-image-edit-1:
    tokens_per_million: {input_text: "5", input_image: "10", output_image: "40"}
    per_image: {high: {1024x1024: "0.17"}}
"""


def test_config_prices_as_the_readme_writes_them():
    from decimal import Decimal

    import yaml

    from tracking.pricing import reset_prices
    from tracking.proxy.prices import config_prices, register_config_prices

    config = parse_config(yaml.safe_load(PRICED_CONFIG))
    found = {model: spec for model, (_, spec) in config_prices(config).items()}
    assert found["azure/images-prod"] == {"base_model": "gpt-image-1"}
    assert found["openai/house-model"]["tokens_per_million"] == {
        "input_text": Decimal("5"),  # 0.000005 per token, read exactly
        "input_image": Decimal("5"),
        "output_image": Decimal("40"),
        "cached_input_text": Decimal("1.2"),
        "cached_input_image": Decimal("1.2"),
    }
    assert found["azure/images-us"] == {"base_model": "gpt-image-1", "discount": "0.15"}
    try:
        assert register_config_prices(config) == 4
    finally:
        reset_prices()


def _priced_deployment(params: dict[str, Any], info: dict[str, Any] | None = None) -> Any:
    entry: dict[str, Any] = {"model_name": "m", "litellm_params": {"model": "openai/m", **params}}
    if info is not None:
        entry["model_info"] = info
    return parse_config({"model_list": [entry]})


def test_litellm_params_prices_are_read_as_litellm_reads_them():
    """LiteLLM documents per-token prices in a deployment's litellm_params as well as in its
    model_info: they price the deployment (they were an "unknown key, ignored" warning, the
    calls priced from the packaged table or left unpriced)."""
    from decimal import Decimal

    from tracking.proxy.prices import config_prices

    config = _priced_deployment(
        {"input_cost_per_token": 0.000005, "output_cost_per_image_token": "0.00004"},
        {"input_cost_per_image_token": 0.00001},
    )
    assert not [w for w in config.warnings if "cost" in w]
    (spec,) = (spec for _, spec in config_prices(config).values())
    assert spec["tokens_per_million"] == {
        "input_text": Decimal("5"),
        "input_image": Decimal("10"),  # its own key wins over input_cost_per_token
        "output_image": Decimal("40"),
    }
    same = _priced_deployment({"input_cost_per_token": 0.000005}, {"input_cost_per_token": 5e-06})
    assert config_prices(same)
    differ = _priced_deployment({"input_cost_per_token": 0.000005}, {"input_cost_per_token": 1})
    with pytest.raises(ConfigurationError, match=r"litellm_params\.input_cost_per_token and "):
        config_prices(differ)
    negative = _priced_deployment({"output_cost_per_token": -1})
    with pytest.raises(ConfigurationError, match=r"litellm_params\.output_cost_per_token: .*>= 0"):
        config_prices(negative)
    with pytest.raises(ConfigurationError, match=r"litellm_params\.input_cost_per_token: expected"):
        _priced_deployment({"input_cost_per_token": [1]})


def test_a_bad_price_names_its_path_in_the_config():
    from tracking.proxy.prices import register_config_prices

    bad = parse_config(
        {
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {"model": "openai/m"},
                    "model_info": {"input_cost_per_token": "cheap"},
                }
            ]
        }
    )
    with pytest.raises(ConfigurationError, match=r"model_list\[0\]\.model_info\.input_cost"):
        register_config_prices(bad)
    wrong_field = parse_config(
        {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
            "prices": {"openai/m": {"per_token": "1"}},
        }
    )
    with pytest.raises(ConfigurationError, match=r"prices\.openai/m: .*unknown field"):
        register_config_prices(wrong_field)
