"""A deployment's LiteLLM ``litellm_params.max_retries``: how often one call may go back to it.

It was accepted and named in a warning at start, then ignored: a deployment written with
``max_retries: 0`` (an upstream billing each attempt, or one known to fail for a while) was
sent the same call ``1 + num_retries`` times. In LiteLLM it is the retries of that deployment's
own client; here the router makes every retry, so it bounds how often a call is sent to that
deployment again after it failed there (0: never). The group's other deployments and its
fallbacks still serve the call within ``num_retries``.

A real proxy (``tracking serve``) over loopback, in front of upstreams failing on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.accounts_support import edit
from tests.proxy_support import ProxyProcess, TroubleUpstream, write_config
from tracking.errors import ConfigurationError


@pytest.fixture
def upstreams() -> Iterator[tuple[TroubleUpstream, TroubleUpstream]]:
    with TroubleUpstream() as first, TroubleUpstream() as second:
        yield first, second


def _deployment(name: str, api_base: str, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": "gpt-image-1", "api_key": "sk-x", "api_base": api_base}
        | params,
    }


def _serve(folder: Path, model_list: list[dict[str, Any]], **router: Any) -> ProxyProcess:
    document = {
        "model_list": model_list,
        "router_settings": {"num_retries": 3, **router},
        "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
    }
    return ProxyProcess(write_config(folder / "config.yaml", document))


def _edit(proxy: ProxyProcess, model: str) -> httpx.Response:
    with httpx.Client(timeout=120) as client:
        return edit(client, proxy.url, None, model=model)


@pytest.mark.parametrize(("max_retries", "sent"), [(0, 1), (1, 2)])
def test_a_deployment_is_sent_one_call_at_most_1_plus_max_retries_times(
    tmp_path, upstreams, max_retries, sent
):
    down, _ = upstreams
    deployments = [_deployment("flaky", down.url("status/500"), max_retries=max_retries)]
    with _serve(tmp_path, deployments) as proxy:
        answer = _edit(proxy, "flaky")
        assert answer.status_code == 502, answer.text  # the upstream's failure, as a 502
        assert down.hits == sent  # not 1 + num_retries = 4
        assert "max_retries" not in proxy.log()  # no "accepted, not used" warning any more


def test_the_group_retries_elsewhere_once_a_deployment_has_none_left(tmp_path, upstreams):
    once, other = upstreams
    deployments = [
        _deployment("pair", once.url("status/503"), max_retries=0, order=1),
        _deployment("pair", other.url("status/503"), order=2),
    ]
    with _serve(tmp_path, deployments) as proxy:
        answer = _edit(proxy, "pair")
    assert answer.status_code == 502, answer.text
    # 1 + num_retries = 4 attempts in all: one on the deployment with no retry, three elsewhere
    assert (once.hits, other.hits) == (1, 3)


def test_a_deployment_out_of_retries_leaves_the_call_to_the_fallback(tmp_path, upstreams):
    down, _ = upstreams
    deployments = [
        _deployment("primary", down.url("status/503"), max_retries=0),
        _deployment("backup", down.url("pretty")),
    ]
    with _serve(tmp_path, deployments, fallbacks=[{"primary": ["backup"]}]) as proxy:
        answer = _edit(proxy, "primary")
    assert answer.status_code == 200, answer.text
    assert down.hits == 2  # the primary once, then the backup


@pytest.mark.parametrize("value", [-1, 101, 1.5, True, "2"])
def test_a_bad_max_retries_fails_the_sdk_router_naming_it(value):
    # the proxy's config refused these already; a Router built from a model_list read none
    with pytest.raises(ConfigurationError, match=r"litellm_params\.max_retries must be"):
        tracking.Router(
            model_list=[_deployment("images", "http://127.0.0.1:9/v1", max_retries=value)]
        )
