"""A Redis Cluster named the other two ways LiteLLM names one, on a real cluster of three masters.

``router_settings.redis_startup_nodes`` and ``redis+cluster://`` URLs were read; LiteLLM's
response cache's ``litellm_settings.cache_params.redis_startup_nodes`` (with ``cache: true``) and
the ``REDIS_CLUSTER_NODES`` environment variable (a JSON list of ``{"host", "port"}``, read by
LiteLLM's every Redis client: ``litellm/_redis.py``, read 2026-12-07) were not: a config migrated
from LiteLLM kept its counters in each instance, so instances did not share budgets or rate
limits. They now name the Redis of the proxy's counters when ``router_settings`` names none.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts_support import edit, ledger_env, wait_for
from tests.conftest import API_KEY
from tests.proxy_support import ProxyProcess, write_config
from tests.redis_cluster_support import cluster_client, cluster_prefix, redis_cluster
from tests.services import REDIS_TIMEOUT_ENV
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.proxy.accounts import redis_url_of
from tracking.proxy.shared_counters import to_units

pytestmark = pytest.mark.redis

__all__ = ["cluster_prefix", "redis_cluster"]  # the fixtures this module uses

BASE: dict[str, Any] = {
    "model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-2"}}]
}
NODES = [{"host": "10.0.0.1", "port": "7001"}, {"host": "10.0.0.2", "port": 7002}]
NODES_URL = "redis+cluster://10.0.0.1:7001,10.0.0.2:7002"


def _cache(nodes: object, **params: Any) -> dict[str, Any]:
    return {
        "cache": True,
        "cache_params": {"type": "redis", "redis_startup_nodes": nodes, **params},
    }


def test_cache_params_startup_nodes_name_the_cluster() -> None:
    config = parse_config({**BASE, "litellm_settings": _cache(NODES, ttl=600)}, environ={})
    assert redis_url_of(config) == NODES_URL
    assert "litellm_settings.cache_params: ttl not used: this proxy caches no responses" in (
        config.warnings
    )
    secret = parse_config(
        {**BASE, "litellm_settings": _cache(NODES[:1], password="p@ss")}, environ={}
    )
    assert redis_url_of(secret) == "redis+cluster://:p%40ss@10.0.0.1:7001"
    # without cache: true LiteLLM makes no cache, and reads none of it
    off = parse_config(
        {**BASE, "litellm_settings": {"cache_params": {"redis_startup_nodes": NODES}}}, environ={}
    )
    assert redis_url_of(off) is None
    assert "litellm_settings.cache_params: not used without cache: true (as in LiteLLM)" in (
        off.warnings
    )
    with pytest.raises(ConfigurationError, match=r"litellm_settings\.cache_params: "):
        parse_config({**BASE, "litellm_settings": _cache([{"port": 7000}])}, environ={})


def test_the_environment_variable_names_the_cluster() -> None:
    environ = {"REDIS_CLUSTER_NODES": json.dumps(NODES), "REDIS_PASSWORD": "p@ss"}
    config = parse_config(BASE, environ=environ)
    assert redis_url_of(config) == "redis+cluster://:p%40ss@10.0.0.1:7001,10.0.0.2:7002"
    # a config's own Redis wins, and the start says the variable is not used
    named = parse_config({**BASE, "router_settings": {"redis_host": "10.0.0.9"}}, environ=environ)
    assert redis_url_of(named) == "redis://10.0.0.9:6379/0"
    assert any(w.startswith("REDIS_CLUSTER_NODES: not used") for w in named.warnings)
    cached = parse_config({**BASE, "litellm_settings": _cache(NODES[1:])}, environ=environ)
    assert redis_url_of(cached) == "redis+cluster://:p%40ss@10.0.0.2:7002"
    assert any(w.startswith("REDIS_CLUSTER_NODES: not used") for w in cached.warnings)


@pytest.mark.parametrize(
    "written",
    [
        "10.0.0.1:7000",
        "{}",
        "[]",
        '[{"port": 7000}]',
        '[{"host": "a", "port": 99999}]',
        '[{"host": "a", "port": true}]',
        '[{"host": "a", "port": "\u00b2"}]',
        '[{"host": "a", "port": "' + "9" * 5000 + '"}]',
        '["a"]',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_bad_environment_variable_is_a_configuration_error_naming_it(written: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_config(BASE, environ={"REDIS_CLUSTER_NODES": written})
    assert "REDIS_CLUSTER_NODES: " in refused.value.message


def _startup_nodes(url: str) -> list[dict[str, str]]:
    """LiteLLM's ``redis_startup_nodes`` for the cluster's URL (ports as text, as its docs)."""
    return [
        {"host": host, "port": port}
        for host, port in (node.rsplit(":", 1) for node in url.split("://", 1)[1].split(","))
    ]


def _budget_counters(url: str, prefix: str) -> dict[str, int]:
    """The whole proxy's budget counters under ``prefix`` on the cluster, by key."""
    client = cluster_client(url)
    try:
        return {
            key.decode(): int(client.get(key))
            for node in client.get_primaries()
            for key in client.scan_iter(match=f"*{prefix}*budget:proxy:*", target_nodes=node)
        }
    finally:
        client.close()


@pytest.mark.parametrize("named_by", ["cache_params", "REDIS_CLUSTER_NODES"])
def test_the_proxys_counters_are_on_the_cluster_litellm_names(
    fake: Any,
    client: httpx.Client,
    tmp_path: Path,
    redis_cluster: str,
    cluster_prefix: str,
    named_by: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    litellm: dict[str, Any] = {"max_budget": 10, "success_callback": ["sql"]}
    env = {**ledger_env(url), "TRACKING_REDIS_PREFIX": cluster_prefix, **REDIS_TIMEOUT_ENV}
    if named_by == "cache_params":
        litellm.update(_cache(_startup_nodes(redis_cluster)))
    else:
        env["REDIS_CLUSTER_NODES"] = json.dumps(_startup_nodes(redis_cluster))
    document = {
        "model_list": [
            {
                "model_name": "gpt-image-1",
                "litellm_params": {
                    "model": "gpt-image-1",
                    "api_key": API_KEY,
                    "api_base": fake.url,
                },
            }
        ],
        "litellm_settings": litellm,
        "general_settings": {"database_url": url, "auto_migrate": True},
    }
    config = write_config(tmp_path / "config.yaml", document)
    with ProxyProcess(config, env=env) as proxy:
        answer = edit(client, proxy.url, None)
        assert answer.status_code == 200, answer.text
        cost = to_units(Decimal(answer.headers["x-tracking-response-cost"]))
        wait_for(lambda: list(_budget_counters(redis_cluster, cluster_prefix).values()) == [cost])
    assert "Redis unavailable" not in proxy.log(), proxy.log()
